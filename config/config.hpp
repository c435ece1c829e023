#pragma once
// Typed configuration of switchyard (SPEC §2).
//
// load_file()/load_string() parse YAML with yaml-cpp into these structs, fill
// every default of the spec, and validate. They never throw for bad input:
// every problem found is returned as "FILE:LINE:COL: message" (1-based, the
// offending key or value; something missing points at the enclosing key), all
// of them, not only the first. Thread-safe (no shared state).
//
// Value syntax, deliberately strict so that typos fail loudly:
// - durations: a non-negative integer with a unit ms|s|m|h ("250ms", "2s",
//   "5m", "1h"); no decimals, no bare numbers, no spaces;
// - sizes: plain bytes ("1024") or an integer with KiB|MiB|GiB; the decimal
//   KB|MB|GB are refused rather than guessed;
// - booleans: true|false (YAML 1.2; "yes"/"on" are refused);
// - unknown and duplicate keys are errors at every level.
// Files named by the config (TLS cert/key, upstream ca_file when upstream TLS
// is enabled, admin token files) must be readable at load time; paths are
// used as written (relative to the working directory).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::config {

using duration = std::chrono::milliseconds;

// 1-based position of a key or value in the source file; {0,0} = not from a file.
struct mark {
    int line = 0;
    int column = 0;
};

// An inclusive range of HTTP status codes, written "200-399" or "200".
struct status_range {
    unsigned low = 200;
    unsigned high = 399;
    bool contains(unsigned status) const { return status >= low && status <= high; }
};

struct listener_tls {
    std::string cert;
    std::string key;
    std::string min_version = "1.2";  // "1.2" or "1.3"
};

struct listener {
    std::string name = "default";  // when absent in a listed entry: "listener-N", N 1-based
    std::string address = "0.0.0.0:8080";  // as written
    std::string host = "0.0.0.0";          // brackets removed for IPv6
    std::uint16_t port = 8080;  // 0 = any free port (tests)
    std::optional<listener_tls> tls;
    mark at;  // the listener's entry in `listeners`
};

struct admin {
    std::string address = "127.0.0.1:9901";
    std::string host = "127.0.0.1";
    std::uint16_t port = 9901;
    std::string token_file;       // empty: env SWITCHYARD_ADMIN_TOKEN, else none
    std::string read_token_file;  // optional read-only token
    mark at;  // the address value, else the `admin` key; {0,0} when absent
};

struct limits {
    std::uint64_t max_request_line_bytes = 8 * 1024;
    std::uint64_t max_request_header_bytes = 64 * 1024;
    std::uint32_t max_headers = 100;
    std::uint64_t max_request_body_bytes = 0;  // 0 = unlimited
    duration header_timeout = std::chrono::seconds(10);
    duration idle_timeout = std::chrono::seconds(60);
    duration body_timeout = std::chrono::seconds(60);
    duration send_timeout = std::chrono::seconds(60);
    std::uint32_t max_connections = 0;  // 0 = unlimited
    bool reject_underscore_headers = false;  // default: drop them, like nginx
};

struct upstream_tls {
    bool enabled = false;
    std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
    std::string server_name;  // empty: the endpoint host
    bool verify = true;
    bool operator==(const upstream_tls&) const = default;
};

struct upstream_defaults {
    duration connect_timeout = std::chrono::seconds(2);
    duration response_timeout = std::chrono::seconds(30);
    duration read_timeout = std::chrono::seconds(60);
    std::uint32_t max_idle_per_endpoint = 64;
    std::uint32_t retries = 1;
    upstream_tls tls;
};

struct endpoint {
    std::string address;  // "host:port" as written
    std::string host;     // brackets removed for IPv6
    std::uint16_t port = 0;
    mark at;
};

struct pool {
    std::string name;
    std::vector<endpoint> endpoints;
    std::uint32_t weight = 0;  // 0..1000000; absent = 0
    mark at;         // the pool's key
    mark weight_at;  // the weight value (or the pool key when absent)
};

enum class balance { round_robin, least_request };

struct affinity {
    enum class key_kind { cookie, header, client_ip, none };
    key_kind kind = key_kind::none;  // none: only the fallback cookie
    std::string key_name;            // cookie or header name
    std::string cookie = "sy_uid";   // fallback key, issued when absent
};

struct health_check {
    std::string path = "/healthz";
    duration interval = std::chrono::seconds(2);
    duration timeout = std::chrono::seconds(1);
    std::uint32_t healthy_threshold = 2;
    std::uint32_t unhealthy_threshold = 3;
    status_range expected_status{200, 399};
};

struct outlier_detection {
    std::uint32_t consecutive_failures = 5;
    duration base_ejection = std::chrono::seconds(30);
    std::uint32_t max_ejection_percent = 50;
};

struct guard {
    bool enabled = true;
    duration window = std::chrono::seconds(30);
    duration evaluate_every = std::chrono::seconds(1);
    std::uint32_t min_requests = 50;
    double max_error_rate = 0.05;
    double max_error_rate_increase = 0.05;
    duration max_p95 = std::chrono::seconds(1);
    duration max_p95_increase = std::chrono::milliseconds(100);
    double confidence = 0.99;
    duration post_switch_watch = std::chrono::minutes(5);
};

struct rollout {
    std::vector<std::uint32_t> steps{5, 10, 25, 50, 100};
    duration step_interval = std::chrono::minutes(1);
    bool auto_promote = true;
};

struct smoke {
    std::vector<std::string> paths{"/healthz"};  // empty: no smoke requests
    status_range expect_status{200, 399};
};

struct service {
    std::string name;
    std::vector<std::string> hosts;  // lower-cased; empty = any host
    std::string path_prefix = "/";
    std::string stable;
    std::vector<pool> pools;  // in file order
    balance balance_policy = balance::round_robin;
    std::optional<affinity> affinity_policy;
    std::string override_header;  // empty = off
    bool retry_on_stable = true;
    std::optional<health_check> active_health;
    outlier_detection outlier;
    guard guard_policy;
    rollout rollout_policy;
    smoke smoke_test;
    mark at;

    const pool* find_pool(std::string_view name) const;
};

struct config {
    std::string file;  // path it was loaded from ("<memory>" for strings)
    std::vector<listener> listeners;  // never empty after a successful load
    admin admin_listener;
    std::string state_file;
    std::string events_file;
    std::uint32_t workers = 0;  // 0 = one per CPU
    duration drain_timeout = std::chrono::seconds(15);
    std::string access_log = "off";  // "off", "stderr" or a path
    limits limit;
    upstream_defaults upstream;
    std::vector<service> services;

    const service* find_service(std::string_view name) const;
};

struct load_result {
    std::optional<config> value;      // set only when errors is empty
    std::vector<std::string> errors;  // "FILE:LINE:COL: message"
    bool ok() const { return errors.empty() && value.has_value(); }
};

load_result load_file(const std::string& path);
load_result load_string(std::string_view yaml, const std::string& file_name = "<memory>");

// Helpers shared with the admin API and the CLI. Return nullopt on bad input.
std::optional<duration> parse_duration(std::string_view text);  // "250ms", "2s", "5m", "1h"
std::optional<std::uint64_t> parse_size(std::string_view text);  // "1024", "64KiB", "10MiB", "1GiB"
std::optional<status_range> parse_status_range(std::string_view text);

// Splits "host:port" or "[v6]:port"; nullopt when it is not of that form.
struct host_port {
    std::string host;
    std::uint16_t port = 0;
};
// The port must be 1..65535; the host a DNS name, a dotted-quad IPv4 address
// or a bracketed IPv6 address (brackets removed in `host`).
std::optional<host_port> parse_host_port(std::string_view text);
// As parse_host_port, but port 0 (bind to any free port) is accepted: for
// listener and admin addresses.
std::optional<host_port> parse_bind_address(std::string_view text);

}  // namespace switchyard::config
