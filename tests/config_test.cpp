// Tests of the config module (SPEC §2): defaults, every key, and each class of
// error with its exact FILE:LINE:COL position.
//
// YAML texts start right after R"( so that line 1 is the first line of the
// text; columns count from 1 at the start of the line.

#include "config/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace switchyard::config {
namespace {

using namespace std::chrono_literals;

std::string joined(const std::vector<std::string>& errors) {
    std::string out;
    for (const std::string& e : errors) {
        out += "\n  " + e;
    }
    return out.empty() ? "\n  (no errors)" : out;
}

load_result load(std::string_view yaml) { return load_string(yaml, "t.yaml"); }

// Passes when one of the errors is at exactly LINE:COL of t.yaml and its
// message contains `text`.
testing::AssertionResult has_error(const load_result& r, int line, int column,
                                   std::string_view text) {
    std::string prefix = "t.yaml:" + std::to_string(line) + ":" + std::to_string(column) + ": ";
    for (const std::string& e : r.errors) {
        if (e.starts_with(prefix) && e.find(text) != std::string::npos) {
            return testing::AssertionSuccess();
        }
    }
    return testing::AssertionFailure() << "no error \"" << prefix << "..." << text << "...\" in"
                                       << joined(r.errors);
}

// Exactly one error, at LINE:COL, containing `text`.
testing::AssertionResult only_error(const load_result& r, int line, int column,
                                    std::string_view text) {
    if (r.errors.size() != 1) {
        return testing::AssertionFailure()
               << "expected exactly one error, got " << r.errors.size() << joined(r.errors);
    }
    if (r.value.has_value() || r.ok()) {
        return testing::AssertionFailure() << "a value was returned despite the error";
    }
    return has_error(r, line, column, text);
}

testing::AssertionResult loads(const load_result& r) {
    if (r.ok()) {
        return testing::AssertionSuccess();
    }
    return testing::AssertionFailure() << "unexpected errors:" << joined(r.errors);
}

// A directory of its own under the system temp dir, removed at the end.
class temp_dir {
public:
    temp_dir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "config_test-XXXXXX");
        std::vector<char> buffer(pattern.begin(), pattern.end());
        buffer.push_back('\0');
        char* made = ::mkdtemp(buffer.data());
        if (made == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = made;
    }
    ~temp_dir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    std::string file(const std::string& name, const std::string& content) const {
        std::string p = path_ + "/" + name;
        std::ofstream(p) << content;
        return p;
    }
    std::string missing(const std::string& name) const { return path_ + "/" + name; }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

// The smallest valid configuration.
constexpr std::string_view minimal = R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)";

// --- Defaults and a full configuration --------------------------------------

TEST(Config, MinimalConfigHasTheDefaultsOfTheSpec) {
    load_result r = load(minimal);
    ASSERT_TRUE(loads(r));
    const config& c = *r.value;
    EXPECT_EQ(c.file, "t.yaml");

    ASSERT_EQ(c.listeners.size(), 1u);
    EXPECT_EQ(c.listeners[0].name, "default");
    EXPECT_EQ(c.listeners[0].address, "0.0.0.0:8080");
    EXPECT_EQ(c.listeners[0].host, "0.0.0.0");
    EXPECT_EQ(c.listeners[0].port, 8080);
    EXPECT_FALSE(c.listeners[0].tls.has_value());

    EXPECT_EQ(c.admin_listener.address, "127.0.0.1:9901");
    EXPECT_EQ(c.admin_listener.host, "127.0.0.1");
    EXPECT_EQ(c.admin_listener.port, 9901);
    EXPECT_EQ(c.admin_listener.token_file, "");
    EXPECT_EQ(c.admin_listener.read_token_file, "");
    EXPECT_EQ(c.state_file, "");
    EXPECT_EQ(c.events_file, "");
    EXPECT_EQ(c.workers, 0u);
    EXPECT_EQ(c.drain_timeout, 15s);
    EXPECT_EQ(c.access_log, "off");

    EXPECT_EQ(c.limit.max_request_line_bytes, 8u * 1024);
    EXPECT_EQ(c.limit.max_request_header_bytes, 64u * 1024);
    EXPECT_EQ(c.limit.max_headers, 100u);
    EXPECT_EQ(c.limit.max_request_body_bytes, 0u);
    EXPECT_EQ(c.limit.header_timeout, 10s);
    EXPECT_EQ(c.limit.idle_timeout, 60s);
    EXPECT_EQ(c.limit.body_timeout, 60s);
    EXPECT_EQ(c.limit.send_timeout, 60s);
    EXPECT_EQ(c.limit.max_connections, 0u);
    EXPECT_FALSE(c.limit.reject_underscore_headers);

    EXPECT_EQ(c.upstream.connect_timeout, 2s);
    EXPECT_EQ(c.upstream.response_timeout, 30s);
    EXPECT_EQ(c.upstream.read_timeout, 60s);
    EXPECT_EQ(c.upstream.max_idle_per_endpoint, 64u);
    EXPECT_EQ(c.upstream.retries, 1u);
    EXPECT_FALSE(c.upstream.tls.enabled);
    EXPECT_EQ(c.upstream.tls.ca_file, "/etc/ssl/certs/ca-certificates.crt");
    EXPECT_EQ(c.upstream.tls.server_name, "");
    EXPECT_TRUE(c.upstream.tls.verify);

    ASSERT_EQ(c.services.size(), 1u);
    const service& s = c.services[0];
    EXPECT_EQ(s.name, "api");
    EXPECT_TRUE(s.hosts.empty());
    EXPECT_EQ(s.path_prefix, "/");
    EXPECT_EQ(s.stable, "blue");
    ASSERT_EQ(s.pools.size(), 1u);
    EXPECT_EQ(s.pools[0].name, "blue");
    EXPECT_EQ(s.pools[0].weight, 100u);
    ASSERT_EQ(s.pools[0].endpoints.size(), 1u);
    EXPECT_EQ(s.pools[0].endpoints[0].address, "127.0.0.1:5001");
    EXPECT_EQ(s.pools[0].endpoints[0].host, "127.0.0.1");
    EXPECT_EQ(s.pools[0].endpoints[0].port, 5001);
    EXPECT_EQ(s.balance_policy, balance::round_robin);
    EXPECT_FALSE(s.affinity_policy.has_value());
    EXPECT_EQ(s.override_header, "");
    EXPECT_TRUE(s.retry_on_stable);
    // No health_check block: no active checks. Outlier detection and the
    // guard are on with the spec's values.
    EXPECT_FALSE(s.active_health.has_value());
    EXPECT_EQ(s.outlier.consecutive_failures, 5u);
    EXPECT_EQ(s.outlier.base_ejection, 30s);
    EXPECT_EQ(s.outlier.max_ejection_percent, 50u);
    EXPECT_TRUE(s.guard_policy.enabled);
    EXPECT_EQ(s.guard_policy.window, 30s);
    EXPECT_EQ(s.guard_policy.evaluate_every, 1s);
    EXPECT_EQ(s.guard_policy.min_requests, 50u);
    EXPECT_DOUBLE_EQ(s.guard_policy.max_error_rate, 0.05);
    EXPECT_DOUBLE_EQ(s.guard_policy.max_error_rate_increase, 0.05);
    EXPECT_EQ(s.guard_policy.max_p95, 1s);
    EXPECT_EQ(s.guard_policy.max_p95_increase, 100ms);
    EXPECT_DOUBLE_EQ(s.guard_policy.confidence, 0.99);
    EXPECT_EQ(s.guard_policy.post_switch_watch, 5min);
    EXPECT_EQ(s.rollout_policy.steps, (std::vector<std::uint32_t>{5, 10, 25, 50, 100}));
    EXPECT_EQ(s.rollout_policy.step_interval, 1min);
    EXPECT_TRUE(s.rollout_policy.auto_promote);
    EXPECT_EQ(s.smoke_test.paths, std::vector<std::string>{"/healthz"});
    EXPECT_EQ(s.smoke_test.expect_status.low, 200u);
    EXPECT_EQ(s.smoke_test.expect_status.high, 399u);
}

TEST(Config, EmptyHealthCheckBlockTurnsChecksOnWithDefaults) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    health_check:
    affinity:
)");
    ASSERT_TRUE(loads(r));
    const service& s = r.value->services[0];
    ASSERT_TRUE(s.active_health.has_value());
    EXPECT_EQ(s.active_health->path, "/healthz");
    EXPECT_EQ(s.active_health->interval, 2s);
    EXPECT_EQ(s.active_health->timeout, 1s);
    EXPECT_EQ(s.active_health->healthy_threshold, 2u);
    EXPECT_EQ(s.active_health->unhealthy_threshold, 3u);
    EXPECT_EQ(s.active_health->expected_status.low, 200u);
    EXPECT_EQ(s.active_health->expected_status.high, 399u);
    ASSERT_TRUE(s.affinity_policy.has_value());
    EXPECT_EQ(s.affinity_policy->kind, affinity::key_kind::none);
    EXPECT_EQ(s.affinity_policy->cookie, "sy_uid");
}

TEST(Config, FullConfigUsingEveryKey) {
    temp_dir dir;
    // A real pair: the loader checks the chain and that the key matches it.
    std::string cert = dir.file("tls.crt", "");
    std::string key = dir.file("tls.key", "");
    ASSERT_EQ(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                           "-nodes -subj /CN=localhost -days 2 -keyout " + key + " -out " + cert +
                           " >/dev/null 2>&1").c_str()),
              0);
    std::string token = dir.file("admin.token", "s3cret\n");
    std::string read_token = dir.file("read.token", "r3ad\n");
    std::string ca = dir.file("ca.pem", "CA");
    std::string yaml = R"(listeners:
  - name: public
    address: 0.0.0.0:8443
    tls:
      cert: )" + cert + R"(
      key: )" + key + R"(
      min_version: "1.3"
  - address: "[::1]:8080"
admin:
  address: 127.0.0.1:9902
  token_file: )" + token + R"(
  read_token_file: )" + read_token + R"(
state_file: /var/lib/switchyard/state.json
events_file: /var/lib/switchyard/events.jsonl
workers: 4
drain_timeout: 20s
access_log: /var/log/switchyard/access.log
limits:
  max_request_line_bytes: 4KiB
  max_request_header_bytes: 1MiB
  max_headers: 50
  max_request_body_bytes: 1GiB
  header_timeout: 5s
  idle_timeout: 2m
  body_timeout: 30s
  send_timeout: 45s
  max_connections: 1000
  reject_underscore_headers: true
upstream_defaults:
  connect_timeout: 250ms
  response_timeout: 1m
  read_timeout: 1h
  max_idle_per_endpoint: 16
  retries: 3
  tls:
    enabled: true
    ca_file: )" + ca + R"(
    server_name: backend.internal
    verify: false
services:
  - name: asset-anchor-api
    hosts: ["App.AssetAnchor.io", "*.assetanchor.io"]
    path_prefix: /api
    stable: blue
    pools:
      blue:   { endpoints: ["10.0.0.11:5000", "backend-1.internal:5000"], weight: 90 }
      green:  { endpoints: ["[fd00::1]:5000"], weight: 0 }
      canary: { endpoints: ["10.0.2.11:5000"], weight: 10 }
    balance: least_request
    affinity:
      key: cookie:session_id
      cookie: my_uid
    override_header: X-Canary
    retry_on_stable: false
    health_check:
      path: /status
      interval: 3s
      timeout: 500ms
      healthy_threshold: 4
      unhealthy_threshold: 6
      expected_status: "200"
    outlier_detection:
      consecutive_failures: 7
      base_ejection: 10s
      max_ejection_percent: 100
    guard:
      enabled: false
      window: 1m
      evaluate_every: 2s
      min_requests: 200
      max_error_rate: 0.1
      max_error_rate_increase: 0.02
      max_p95: 2s
      max_p95_increase: 50ms
      confidence: 0.95
      post_switch_watch: 10m
    rollout:
      steps: [1, 20, 100]
      step_interval: 5m
      auto_promote: false
    smoke:
      paths: ["/healthz", "/api/v1/ping"]
      expect_status: "200-204"
  - name: by-header
    path_prefix: /
    stable: a
    pools:
      a: {endpoints: ["127.0.0.1:1"], weight: 1}
    affinity: {key: "header:X-User-Id"}
  - name: by-ip
    hosts: ["other.example"]
    stable: a
    pools:
      a: {endpoints: ["127.0.0.1:65535"], weight: 1}
    affinity: {key: client_ip}
)";
    load_result r = load(yaml);
    ASSERT_TRUE(loads(r));
    const config& c = *r.value;

    ASSERT_EQ(c.listeners.size(), 2u);
    EXPECT_EQ(c.listeners[0].name, "public");
    EXPECT_EQ(c.listeners[0].port, 8443);
    ASSERT_TRUE(c.listeners[0].tls.has_value());
    EXPECT_EQ(c.listeners[0].tls->cert, cert);
    EXPECT_EQ(c.listeners[0].tls->key, key);
    EXPECT_EQ(c.listeners[0].tls->min_version, "1.3");
    EXPECT_EQ(c.listeners[0].at.line, 2);
    EXPECT_EQ(c.listeners[0].at.column, 5);
    EXPECT_EQ(c.listeners[1].name, "listener-2");
    EXPECT_EQ(c.listeners[1].address, "[::1]:8080");
    EXPECT_EQ(c.listeners[1].host, "::1");
    EXPECT_EQ(c.listeners[1].port, 8080);
    EXPECT_FALSE(c.listeners[1].tls.has_value());

    EXPECT_EQ(c.admin_listener.address, "127.0.0.1:9902");
    EXPECT_EQ(c.admin_listener.port, 9902);
    EXPECT_EQ(c.admin_listener.token_file, token);
    EXPECT_EQ(c.admin_listener.read_token_file, read_token);
    EXPECT_EQ(c.admin_listener.at.line, 10);
    EXPECT_EQ(c.state_file, "/var/lib/switchyard/state.json");
    EXPECT_EQ(c.events_file, "/var/lib/switchyard/events.jsonl");
    EXPECT_EQ(c.workers, 4u);
    EXPECT_EQ(c.drain_timeout, 20s);
    EXPECT_EQ(c.access_log, "/var/log/switchyard/access.log");

    EXPECT_EQ(c.limit.max_request_line_bytes, 4096u);
    EXPECT_EQ(c.limit.max_request_header_bytes, 1048576u);
    EXPECT_EQ(c.limit.max_headers, 50u);
    EXPECT_EQ(c.limit.max_request_body_bytes, 1073741824u);
    EXPECT_EQ(c.limit.header_timeout, 5s);
    EXPECT_EQ(c.limit.idle_timeout, 2min);
    EXPECT_EQ(c.limit.body_timeout, 30s);
    EXPECT_EQ(c.limit.send_timeout, 45s);
    EXPECT_EQ(c.limit.max_connections, 1000u);
    EXPECT_TRUE(c.limit.reject_underscore_headers);

    EXPECT_EQ(c.upstream.connect_timeout, 250ms);
    EXPECT_EQ(c.upstream.response_timeout, 1min);
    EXPECT_EQ(c.upstream.read_timeout, 1h);
    EXPECT_EQ(c.upstream.max_idle_per_endpoint, 16u);
    EXPECT_EQ(c.upstream.retries, 3u);
    EXPECT_TRUE(c.upstream.tls.enabled);
    EXPECT_EQ(c.upstream.tls.ca_file, ca);
    EXPECT_EQ(c.upstream.tls.server_name, "backend.internal");
    EXPECT_FALSE(c.upstream.tls.verify);

    ASSERT_EQ(c.services.size(), 3u);
    const service& s = c.services[0];
    EXPECT_EQ(s.name, "asset-anchor-api");
    EXPECT_EQ(s.hosts, (std::vector<std::string>{"app.assetanchor.io", "*.assetanchor.io"}));
    EXPECT_EQ(s.path_prefix, "/api");
    EXPECT_EQ(s.stable, "blue");
    EXPECT_EQ(s.at.line, 41);
    EXPECT_EQ(s.at.column, 5);

    // Pools keep file order (not sorted by name).
    ASSERT_EQ(s.pools.size(), 3u);
    EXPECT_EQ(s.pools[0].name, "blue");
    EXPECT_EQ(s.pools[1].name, "green");
    EXPECT_EQ(s.pools[2].name, "canary");
    EXPECT_EQ(s.pools[0].weight, 90u);
    EXPECT_EQ(s.pools[1].weight, 0u);
    EXPECT_EQ(s.pools[2].weight, 10u);
    EXPECT_EQ(s.pools[0].at.line, 46);
    EXPECT_EQ(s.pools[0].at.column, 7);
    EXPECT_EQ(s.pools[0].weight_at.line, 46);
    EXPECT_EQ(s.pools[0].weight_at.column, 83);
    ASSERT_EQ(s.pools[0].endpoints.size(), 2u);
    EXPECT_EQ(s.pools[0].endpoints[1].host, "backend-1.internal");
    EXPECT_EQ(s.pools[0].endpoints[1].port, 5000);
    EXPECT_EQ(s.pools[0].endpoints[1].at.line, 46);
    EXPECT_EQ(s.pools[0].endpoints[1].at.column, 47);
    EXPECT_EQ(s.pools[1].endpoints[0].host, "fd00::1");
    EXPECT_EQ(s.pools[1].endpoints[0].address, "[fd00::1]:5000");

    EXPECT_EQ(s.balance_policy, balance::least_request);
    ASSERT_TRUE(s.affinity_policy.has_value());
    EXPECT_EQ(s.affinity_policy->kind, affinity::key_kind::cookie);
    EXPECT_EQ(s.affinity_policy->key_name, "session_id");
    EXPECT_EQ(s.affinity_policy->cookie, "my_uid");
    EXPECT_EQ(s.override_header, "X-Canary");
    EXPECT_FALSE(s.retry_on_stable);

    ASSERT_TRUE(s.active_health.has_value());
    EXPECT_EQ(s.active_health->path, "/status");
    EXPECT_EQ(s.active_health->interval, 3s);
    EXPECT_EQ(s.active_health->timeout, 500ms);
    EXPECT_EQ(s.active_health->healthy_threshold, 4u);
    EXPECT_EQ(s.active_health->unhealthy_threshold, 6u);
    EXPECT_EQ(s.active_health->expected_status.low, 200u);
    EXPECT_EQ(s.active_health->expected_status.high, 200u);

    EXPECT_EQ(s.outlier.consecutive_failures, 7u);
    EXPECT_EQ(s.outlier.base_ejection, 10s);
    EXPECT_EQ(s.outlier.max_ejection_percent, 100u);

    EXPECT_FALSE(s.guard_policy.enabled);
    EXPECT_EQ(s.guard_policy.window, 1min);
    EXPECT_EQ(s.guard_policy.evaluate_every, 2s);
    EXPECT_EQ(s.guard_policy.min_requests, 200u);
    EXPECT_DOUBLE_EQ(s.guard_policy.max_error_rate, 0.1);
    EXPECT_DOUBLE_EQ(s.guard_policy.max_error_rate_increase, 0.02);
    EXPECT_EQ(s.guard_policy.max_p95, 2s);
    EXPECT_EQ(s.guard_policy.max_p95_increase, 50ms);
    EXPECT_DOUBLE_EQ(s.guard_policy.confidence, 0.95);
    EXPECT_EQ(s.guard_policy.post_switch_watch, 10min);

    EXPECT_EQ(s.rollout_policy.steps, (std::vector<std::uint32_t>{1, 20, 100}));
    EXPECT_EQ(s.rollout_policy.step_interval, 5min);
    EXPECT_FALSE(s.rollout_policy.auto_promote);
    EXPECT_EQ(s.smoke_test.paths, (std::vector<std::string>{"/healthz", "/api/v1/ping"}));
    EXPECT_EQ(s.smoke_test.expect_status.low, 200u);
    EXPECT_EQ(s.smoke_test.expect_status.high, 204u);

    ASSERT_TRUE(c.services[1].affinity_policy.has_value());
    EXPECT_EQ(c.services[1].affinity_policy->kind, affinity::key_kind::header);
    EXPECT_EQ(c.services[1].affinity_policy->key_name, "X-User-Id");
    EXPECT_EQ(c.services[1].affinity_policy->cookie, "sy_uid");
    ASSERT_TRUE(c.services[2].affinity_policy.has_value());
    EXPECT_EQ(c.services[2].affinity_policy->kind, affinity::key_kind::client_ip);
    EXPECT_EQ(c.services[2].pools[0].endpoints[0].port, 65535);

    // Lookups.
    ASSERT_NE(c.find_service("by-ip"), nullptr);
    EXPECT_EQ(c.find_service("by-ip")->name, "by-ip");
    EXPECT_EQ(c.find_service("nope"), nullptr);
    ASSERT_NE(s.find_pool("canary"), nullptr);
    EXPECT_EQ(s.find_pool("canary")->weight, 10u);
    EXPECT_EQ(s.find_pool("purple"), nullptr);
}

TEST(Config, PoolWithoutWeightHasWeightZeroMarkedAtItsKey) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 1}
      green:
        endpoints: ["127.0.0.1:5002"]
)");
    ASSERT_TRUE(loads(r));
    const pool& green = r.value->services[0].pools[1];
    EXPECT_EQ(green.weight, 0u);
    EXPECT_EQ(green.weight_at.line, 6);
    EXPECT_EQ(green.weight_at.column, 7);
}

TEST(Config, ListenerPortZeroIsAllowedAndNeverADuplicate) {
    load_result r = load(R"(listeners:
  - address: 127.0.0.1:0
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    ASSERT_TRUE(loads(r));
    EXPECT_EQ(r.value->listeners[0].name, "listener-1");
    EXPECT_EQ(r.value->listeners[0].port, 0);
    EXPECT_EQ(r.value->admin_listener.port, 0);
}

// --- Missing things point at the enclosing key ------------------------------

TEST(ConfigErrors, MissingServices) {
    EXPECT_TRUE(only_error(load("workers: 2\n"), 1, 1, "missing required key 'services'"));
    EXPECT_TRUE(only_error(load("# only a comment\n\nworkers: 2\n"), 1, 1,
                           "missing required key 'services'"));
    EXPECT_TRUE(only_error(load(""), 1, 1, "missing required key 'services'"));
}

TEST(ConfigErrors, EmptyServicesList) {
    EXPECT_TRUE(only_error(load("workers: 2\nservices: []\n"), 2, 11,
                           "'services' must list at least one service"));
    EXPECT_TRUE(only_error(load("workers: 2\nservices:\n"), 2, 1, "'services' needs a value"));
}

TEST(ConfigErrors, ServiceMissingStableOrPoolsOrName) {
    load_result r = load(R"(services:
  - name: api
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    path_prefix: /two
  - name: third
    stable: blue
    path_prefix: /three
)");
    EXPECT_EQ(r.errors.size(), 3u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 2, 5, "service 'api' is missing required key 'stable'"));
    EXPECT_TRUE(has_error(r, 5, 5, "a service is missing required key 'name'"));
    EXPECT_TRUE(has_error(r, 9, 5, "service 'third' is missing required key 'pools'"));
}

TEST(ConfigErrors, PoolWithNoEndpoints) {
    // Absent: at the pool's key. An empty list: at the list.
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
      green: {weight: 0}
      canary:
        endpoints: []
)");
    EXPECT_EQ(r.errors.size(), 2u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 6, 7, "pool 'green' has no endpoints"));
    EXPECT_TRUE(has_error(r, 8, 20, "pool 'canary' has no endpoints"));
}

TEST(ConfigErrors, EndpointNotHostPort) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue:
        weight: 100
        endpoints:
          - 127.0.0.1:5001
          - 127.0.0.1
          - "10.0.0.1:0"
          - 10.0.0.1:65536
          - ":80"
          - "::1:80"
          - "[::1]:80"
          - "[::g]:80"
          - 300.1.1.1:80
          - "bad host:80"
          - backend.internal:http
)");
    EXPECT_EQ(r.errors.size(), 9u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 9, 13, "endpoint '127.0.0.1' is not host:port"));
    EXPECT_TRUE(has_error(r, 10, 13, "endpoint '10.0.0.1:0' is not host:port"));
    EXPECT_TRUE(has_error(r, 11, 13, "endpoint '10.0.0.1:65536' is not host:port"));
    EXPECT_TRUE(has_error(r, 12, 13, "endpoint ':80' is not host:port"));
    EXPECT_TRUE(has_error(r, 13, 13, "endpoint '::1:80' is not host:port"));
    EXPECT_TRUE(has_error(r, 15, 13, "endpoint '[::g]:80' is not host:port"));
    EXPECT_TRUE(has_error(r, 16, 13, "endpoint '300.1.1.1:80' is not host:port"));
    EXPECT_TRUE(has_error(r, 17, 13, "endpoint 'bad host:80' is not host:port"));
    EXPECT_TRUE(has_error(r, 18, 13, "endpoint 'backend.internal:http' is not host:port"));
}

TEST(ConfigErrors, DuplicateEndpointInAPool) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001", "127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 5, 44, "duplicate endpoint '127.0.0.1:5001' in pool 'blue'"));
}

TEST(ConfigErrors, NegativeWeight) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
      green: {endpoints: ["127.0.0.1:5002"], weight: -5}
)");
    EXPECT_TRUE(only_error(r, 6, 54, "'weight' must not be negative (got -5)"));
}

TEST(ConfigErrors, NonIntegerWeight) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
      green:
        endpoints: ["127.0.0.1:5002"]
        weight: 1.5
      canary:
        endpoints: ["127.0.0.1:5003"]
        weight: ten
)");
    EXPECT_EQ(r.errors.size(), 2u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 8, 17, "'weight' must be a non-negative integer (got '1.5')"));
    EXPECT_TRUE(has_error(r, 11, 17, "'weight' must be a non-negative integer (got 'ten')"));
}

TEST(ConfigErrors, WeightTooLarge) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 99999999999999999999999}
)");
    EXPECT_TRUE(only_error(r, 5, 53, "'weight' must be a non-negative integer"));
}

TEST(ConfigErrors, AllWeightsZero) {
    // At the service's `pools` key: no single pool is at fault.
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 0}
      green: {endpoints: ["127.0.0.1:5002"]}
)");
    EXPECT_TRUE(only_error(r, 4, 5, "all pool weights are zero"));
}

TEST(ConfigErrors, StableNamesNoPool) {
    load_result r = load(R"(services:
  - name: api
    stable: purple
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
      green: {endpoints: ["127.0.0.1:5002"], weight: 0}
)");
    EXPECT_TRUE(only_error(
        r, 3, 13, "stable pool 'purple' is not one of the pools of service 'api' (blue, green)"));
}

TEST(ConfigErrors, PoolNamesAreRestrictedAndAlwaysNeverReserved) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
      always: {endpoints: ["127.0.0.1:5002"]}
      "a b": {endpoints: ["127.0.0.1:5003"]}
)");
    EXPECT_EQ(r.errors.size(), 2u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 6, 7, "pool name 'always' is reserved"));
    EXPECT_TRUE(has_error(r, 7, 7, "pool name 'a b' may only contain"));
}

// --- Unknown and duplicate keys ---------------------------------------------

TEST(ConfigErrors, UnknownKeyWithSuggestion) {
    load_result r = load(R"(listener:
  - address: 0.0.0.0:8080
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
      green:
        endpoints: ["127.0.0.1:5002"]
        weigth: 5
    healthcheck: {path: /healthz}
    guard: {max_p59: 1s}
)");
    EXPECT_EQ(r.errors.size(), 4u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 1, 1, "unknown key 'listener' (did you mean 'listeners'?)"));
    EXPECT_TRUE(has_error(r, 10, 9, "unknown key 'weigth' (did you mean 'weight'?)"));
    EXPECT_TRUE(has_error(r, 11, 5, "unknown key 'healthcheck' (did you mean 'health_check'?)"));
    EXPECT_TRUE(has_error(r, 12, 13, "unknown key 'max_p59' (did you mean 'max_p95'?)"));
}

TEST(ConfigErrors, UnknownKeyWithoutCloseMatch) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    colour: red
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    ASSERT_TRUE(only_error(r, 4, 5, "unknown key 'colour'"));
    EXPECT_EQ(r.errors[0].find("did you mean"), std::string::npos) << r.errors[0];
}

TEST(ConfigErrors, DuplicateKeys) {
    // yaml-cpp keeps both; the second occurrence is the error, at any level.
    load_result r = load(R"(workers: 2
workers: 3
services:
  - name: api
    stable: blue
    stable: green
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100, weight: 5}
      green: {endpoints: ["127.0.0.1:5002"]}
      blue: {endpoints: ["127.0.0.1:5003"]}
)");
    EXPECT_EQ(r.errors.size(), 4u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 2, 1, "duplicate key 'workers' (first at 1:1)"));
    EXPECT_TRUE(has_error(r, 6, 5, "duplicate key 'stable' (first at 5:5)"));
    EXPECT_TRUE(has_error(r, 8, 58, "duplicate key 'weight' (first at 8:45)"));
    EXPECT_TRUE(has_error(r, 10, 7, "duplicate key 'blue' (first at 8:7)"));
}

// --- Values ---------------------------------------------------------------

TEST(ConfigErrors, BadDuration) {
    load_result r = load(R"(drain_timeout: 5 minutes
limits:
  header_timeout: 10
  idle_timeout: -1s
  body_timeout: 1.5s
  send_timeout: 0s
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    guard: {window: 30 s}
)");
    EXPECT_EQ(r.errors.size(), 6u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 1, 16, "bad duration '5 minutes' for 'drain_timeout'"));
    EXPECT_TRUE(has_error(r, 3, 19, "bad duration '10' for 'header_timeout'"));
    EXPECT_TRUE(has_error(r, 4, 17, "bad duration '-1s' for 'idle_timeout'"));
    EXPECT_TRUE(has_error(r, 5, 17, "bad duration '1.5s' for 'body_timeout'"));
    EXPECT_TRUE(has_error(r, 6, 17, "'send_timeout' must be greater than zero"));
    EXPECT_TRUE(has_error(r, 12, 21, "bad duration '30 s' for 'window'"));
}

TEST(ConfigErrors, BadSize) {
    load_result r = load(R"(limits:
  max_request_line_bytes: 8KB
  max_request_header_bytes: 64 KiB
  max_request_body_bytes: -1
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_EQ(r.errors.size(), 3u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 2, 27, "bad size '8KB' for 'max_request_line_bytes'"));
    EXPECT_TRUE(has_error(r, 2, 27, "KB, MB and GB are not accepted"));
    EXPECT_TRUE(has_error(r, 3, 29, "bad size '64 KiB' for 'max_request_header_bytes'"));
    EXPECT_TRUE(has_error(r, 4, 27, "bad size '-1' for 'max_request_body_bytes'"));
}

TEST(ConfigErrors, WrongType) {
    load_result r = load(R"(access_log: {path: /tmp/x}
limits:
  reject_underscore_headers: yes-ish
  max_headers: [1]
upstream_defaults: 5
services:
  - name: api
    stable: blue
    path_prefix: {a: b}
    hosts: app.example
    retry_on_stable: yes
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_EQ(r.errors.size(), 7u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 1, 13, "'access_log' must be a string, not a map"));
    EXPECT_TRUE(has_error(r, 3, 30, "'reject_underscore_headers' must be true or false "
                                    "(got 'yes-ish')"));
    EXPECT_TRUE(has_error(r, 4, 16, "'max_headers' must be a non-negative integer, not a list"));
    EXPECT_TRUE(has_error(r, 5, 20, "'upstream_defaults' must be a map, not '5'"));
    EXPECT_TRUE(has_error(r, 9, 18, "'path_prefix' must be a string, not a map"));
    EXPECT_TRUE(has_error(r, 10, 12, "'hosts' must be a list, not 'app.example'"));
    EXPECT_TRUE(has_error(r, 11, 22, "'retry_on_stable' must be true or false (got 'yes')"));
}

TEST(ConfigErrors, NullValueIsReportedAtItsKey) {
    load_result r = load(R"(services:
  - name: api
    stable:
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 3, 5, "'stable' needs a value"));
}

TEST(ConfigErrors, BadStatusRange) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    health_check:
      expected_status: "399-200"
    smoke:
      expect_status: 600
  - name: two
    path_prefix: /two
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    health_check: {expected_status: 2xx}
    smoke: {expect_status: "99-200"}
)");
    EXPECT_EQ(r.errors.size(), 4u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 7, 24, "bad status range '399-200' for 'expected_status'"));
    EXPECT_TRUE(has_error(r, 9, 22, "bad status range '600' for 'expect_status'"));
    EXPECT_TRUE(has_error(r, 15, 37, "bad status range '2xx' for 'expected_status'"));
    EXPECT_TRUE(has_error(r, 16, 28, "bad status range '99-200' for 'expect_status'"));
}

TEST(ConfigErrors, RolloutStepsStrictlyAscendingWithin1To100) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    rollout: {steps: [10, 10, 0, 50, 101, 20]}
)");
    EXPECT_EQ(r.errors.size(), 4u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 6, 27, "rollout steps must be strictly ascending (10 after 10)"));
    EXPECT_TRUE(has_error(r, 6, 31, "an entry of 'steps' must be at least 1 (got 0)"));
    EXPECT_TRUE(has_error(r, 6, 38, "an entry of 'steps' must be at most 100 (got 101)"));
    EXPECT_TRUE(has_error(r, 6, 43, "rollout steps must be strictly ascending (20 after 50)"));
}

TEST(ConfigErrors, EmptyRolloutSteps) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    rollout:
      steps: []
)");
    EXPECT_TRUE(only_error(r, 7, 14, "'steps' must list at least one percentage"));
}

TEST(ConfigErrors, GuardConfidenceStrictlyBetween0And1) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    guard:
      confidence: 1
  - name: two
    path_prefix: /two
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    guard:
      confidence: 0
  - name: three
    path_prefix: /three
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    guard:
      confidence: 99%
)");
    EXPECT_EQ(r.errors.size(), 3u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 7, 19, "'confidence' must be a number strictly between 0 and 1"));
    EXPECT_TRUE(has_error(r, 14, 19, "'confidence' must be a number strictly between 0 and 1"));
    EXPECT_TRUE(has_error(r, 21, 19, "(got '99%')"));
}

TEST(ConfigErrors, RatesWithin0And1) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    guard:
      max_error_rate: 1.5
      max_error_rate_increase: -0.1
)");
    EXPECT_EQ(r.errors.size(), 2u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 7, 23, "'max_error_rate' must be a number between 0 and 1"));
    EXPECT_TRUE(has_error(r, 8, 32, "'max_error_rate_increase' must be a number between 0 and 1"));

    // The bounds themselves are fine.
    EXPECT_TRUE(loads(load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    guard: {max_error_rate: 1, max_error_rate_increase: 0}
)")));
}

TEST(ConfigErrors, MaxEjectionPercentAtMost100) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    outlier_detection:
      max_ejection_percent: 101
)");
    EXPECT_TRUE(only_error(r, 7, 29, "'max_ejection_percent' must be at most 100 (got 101)"));
}

TEST(ConfigErrors, PathPrefixMustStartWithSlash) {
    load_result r = load(R"(services:
  - name: api
    path_prefix: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 3, 18, "'path_prefix' must start with '/'"));
}

TEST(ConfigErrors, HostPatterns) {
    load_result r = load(R"(services:
  - name: api
    hosts: ["App.Example.COM", "*.Example.org", "a.*.example", "*example.net", "x.io:80", "*", ""]
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_EQ(r.errors.size(), 5u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 3, 49, "bad host pattern 'a.*.example'"));
    EXPECT_TRUE(has_error(r, 3, 64, "bad host pattern '*example.net'"));
    EXPECT_TRUE(has_error(r, 3, 80, "bad host pattern 'x.io:80'"));
    EXPECT_TRUE(has_error(r, 3, 91, "bad host pattern '*'"));
    EXPECT_TRUE(has_error(r, 3, 96, "bad host pattern ''"));

    load_result good = load(R"(services:
  - name: api
    hosts: ["App.Example.COM", "*.Example.org"]
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    ASSERT_TRUE(loads(good));
    EXPECT_EQ(good.value->services[0].hosts,
              (std::vector<std::string>{"app.example.com", "*.example.org"}));
}

TEST(ConfigErrors, BadAffinityAndOverrideHeader) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
    affinity: {key: "cookie:", cookie: "a b"}
    override_header: "X Canary"
    balance: random
)");
    EXPECT_EQ(r.errors.size(), 4u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 6, 21, "'key' must be cookie:NAME, header:NAME or client_ip"));
    EXPECT_TRUE(has_error(r, 6, 40, "'cookie' must be a cookie name"));
    EXPECT_TRUE(has_error(r, 7, 22, "'override_header' must be a header name"));
    EXPECT_TRUE(has_error(r, 8, 14, "'balance' must be round_robin or least_request"));
}

// --- Cross-entry checks -----------------------------------------------------

TEST(ConfigErrors, DuplicateServiceNames) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - name: api
    path_prefix: /other
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 6, 11, "duplicate service name 'api' (first at 2:11)"));
}

TEST(ConfigErrors, SameHostsAndPathPrefix) {
    // Hosts compare as case-insensitive sets; reported at the second service.
    load_result r = load(R"(services:
  - name: one
    hosts: ["a.example", "B.example"]
    path_prefix: /api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - name: two
    hosts: ["b.example", "A.EXAMPLE"]
    path_prefix: /api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 8, 5, "service 'two' has the same hosts and path_prefix as "
                                    "service 'one'"));
}

TEST(ConfigErrors, NoHostsEqualsNoHosts) {
    load_result r = load(R"(services:
  - name: one
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - name: two
    path_prefix: /
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 6, 5, "service 'two' has the same hosts and path_prefix"));
}

TEST(Config, DifferentHostsOrPrefixesAreFine) {
    EXPECT_TRUE(loads(load(R"(services:
  - name: one
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - name: two
    path_prefix: /api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - name: three
    hosts: ["a.example"]
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
  - name: four
    hosts: ["a.example", "b.example"]
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)")));
}

TEST(ConfigErrors, DuplicateListenerNamesAndAddresses) {
    load_result r = load(R"(listeners:
  - name: public
    address: 0.0.0.0:8080
  - name: public
    address: 0.0.0.0:8081
  - name: other
    address: 0.0.0.0:8080
  - address: "[::1]:80"
  - address: "[::1]:80"
  - address: nonsense
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_EQ(r.errors.size(), 4u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 4, 11, "duplicate listener name 'public' (first at 2:11)"));
    EXPECT_TRUE(has_error(r, 7, 14, "duplicate listener address '0.0.0.0:8080' (first at 3:14)"));
    EXPECT_TRUE(has_error(r, 9, 14, "duplicate listener address '[::1]:80' (first at 8:14)"));
    EXPECT_TRUE(has_error(r, 10, 14, "'address' must be host:port or [v6]:port"));
}

TEST(ConfigErrors, ListenerMissingAddressOrEmptyList) {
    load_result r = load(R"(listeners:
  - name: public
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 2, 5, "listener 'public' is missing required key 'address'"));
    EXPECT_TRUE(only_error(load("listeners: []\n" + std::string(minimal)), 1, 12,
                           "'listeners' must name at least one listener"));
}

TEST(ConfigErrors, AdminAddressClashingWithAListener) {
    load_result r = load(R"(listeners:
  - address: 127.0.0.1:8080
admin:
  address: 127.0.0.1:8080
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)");
    EXPECT_TRUE(only_error(r, 4, 12, "admin address '127.0.0.1:8080' is also the address"));
}

TEST(Config, AdminOffLoopbackWithoutTokenIsNotAConfigError) {
    // The runtime refuses to start it; `check` must not.
    EXPECT_TRUE(loads(load(R"(admin:
  address: 0.0.0.0:9901
services:
  - name: api
    stable: blue
    pools:
      blue: {endpoints: ["127.0.0.1:5001"], weight: 100}
)")));
}

// --- Files named by the configuration ---------------------------------------

TEST(ConfigErrors, UnreadableListenerTlsFiles) {
    temp_dir dir;
    std::string cert = dir.missing("nope.crt");
    std::string key = dir.path();  // a directory: opens, but cannot be read
    std::string yaml = R"(listeners:
  - name: tls
    address: 0.0.0.0:8443
    tls:
      cert: )" + cert + R"(
      key: )" + key + R"(
  - name: half
    address: 0.0.0.0:8444
    tls:
      cert: )" + dir.file("ok.crt", "x") + R"(
)" + std::string(minimal);
    load_result r = load(yaml);
    EXPECT_EQ(r.errors.size(), 3u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 5, 13,
                          "cannot read tls cert '" + cert + "': No such file or directory"));
    EXPECT_TRUE(has_error(r, 6, 12, "cannot read tls key '" + key + "': Is a directory"));
    EXPECT_TRUE(has_error(r, 9, 5, "'tls' is missing required key 'key'"));
}

TEST(ConfigErrors, UnreadableUpstreamCaFileOnlyWhenEnabled) {
    temp_dir dir;
    std::string ca = dir.missing("ca.pem");
    std::string disabled = R"(upstream_defaults:
  tls:
    enabled: false
    ca_file: )" + ca + "\n" + std::string(minimal);
    EXPECT_TRUE(loads(load(disabled)));

    std::string enabled = R"(upstream_defaults:
  tls:
    enabled: true
    ca_file: )" + ca + "\n" + std::string(minimal);
    EXPECT_TRUE(only_error(load(enabled), 4, 14,
                           "cannot read ca_file '" + ca + "': No such file or directory"));
}

TEST(ConfigErrors, UnreadableAdminTokenFiles) {
    temp_dir dir;
    std::string token = dir.missing("admin.token");
    std::string read_token = dir.missing("read.token");
    std::string empty = dir.file("empty.token", "\n");
    std::string yaml = R"(admin:
  address: 127.0.0.1:9901
  token_file: )" + token + R"(
  read_token_file: )" + read_token + R"(
)" + std::string(minimal);
    load_result r = load(yaml);
    EXPECT_EQ(r.errors.size(), 2u) << joined(r.errors);
    EXPECT_TRUE(has_error(r, 3, 15, "cannot read token_file '" + token + "'"));
    EXPECT_TRUE(has_error(r, 4, 20, "cannot read read_token_file '" + read_token + "'"));

    std::string empty_yaml = "admin:\n  token_file: " + empty + "\n" + std::string(minimal);
    EXPECT_TRUE(only_error(load(empty_yaml), 2, 15, "is empty"));
}

TEST(ConfigErrors, LoadFileThatCannotBeRead) {
    temp_dir dir;
    std::string path = dir.missing("switchyard.yaml");
    load_result r = load_file(path);
    ASSERT_EQ(r.errors.size(), 1u) << joined(r.errors);
    EXPECT_EQ(r.errors[0], path + ": cannot read: No such file or directory");
    EXPECT_FALSE(r.value.has_value());

    load_result d = load_file(dir.path());
    ASSERT_EQ(d.errors.size(), 1u) << joined(d.errors);
    EXPECT_EQ(d.errors[0], dir.path() + ": cannot read: Is a directory");
}

TEST(Config, LoadFileReportsItsPath) {
    temp_dir dir;
    std::string path = dir.file("bad.yaml", "services: []\n");
    load_result r = load_file(path);
    ASSERT_EQ(r.errors.size(), 1u) << joined(r.errors);
    EXPECT_EQ(r.errors[0], path + ":1:11: 'services' must list at least one service");

    std::string good = dir.file("good.yaml", std::string(minimal));
    load_result g = load_file(good);
    ASSERT_TRUE(loads(g));
    EXPECT_EQ(g.value->file, good);
}

// --- Syntax errors and robustness -------------------------------------------

TEST(ConfigErrors, YamlSyntaxError) {
    load_result r = load(R"(services:
  - name: api
    stable: blue
   pools: {blue: {endpoints: ["127.0.0.1:5001"]}}
)");
    ASSERT_EQ(r.errors.size(), 1u) << joined(r.errors);
    EXPECT_TRUE(r.errors[0].starts_with("t.yaml:4:")) << r.errors[0];

    load_result flow = load("services: [\n");
    ASSERT_EQ(flow.errors.size(), 1u) << joined(flow.errors);
    EXPECT_TRUE(flow.errors[0].starts_with("t.yaml:")) << flow.errors[0];

    load_result alias = load("services: *nowhere\n");
    EXPECT_TRUE(only_error(alias, 1, 11, "the referenced anchor is not defined"));
}

TEST(ConfigErrors, OnlyOneDocument) {
    load_result r = load(std::string(minimal) + "---\nworkers: 1\n");
    EXPECT_TRUE(only_error(r, 7, 1, "only one YAML document is allowed"));
}

TEST(ConfigErrors, NeverThrowsOnOddInput) {
    const char* inputs[] = {
        "[1, 2, 3]",
        "just a string",
        "? [a, b]\n: c\nservices: []\n",
        "services:\n  - ~\n  - []\n  - 5\n",
        "services:\n  - name: [x]\n    stable: {a: 1}\n    pools: [1]\n",
        "services:\n  - name: a\n    stable: b\n    pools:\n      b: 5\n",
        "services:\n  - name: a\n    stable: b\n    pools:\n      b: {endpoints: [[1]], weight: {}}\n",
        "\t\tservices:",
        "services: !!binary AAAA",
        "listeners: {a: 1}\nadmin: [1]\nlimits: 3\nservices: {}\n",
    };
    for (const char* input : inputs) {
        load_result r;
        EXPECT_NO_THROW(r = load(input)) << input;
        EXPECT_FALSE(r.ok()) << input;
        EXPECT_FALSE(r.errors.empty()) << input;
        for (const std::string& e : r.errors) {
            EXPECT_TRUE(e.starts_with("t.yaml:")) << e;
        }
    }
}

TEST(ConfigErrors, SeveralErrorsAreAllReportedInFileOrder) {
    load_result r = load(R"(workers: many
drain_timeout: 10
services:
  - name: api
    stable: purple
    pools:
      blue: {endpoints: ["127.0.0.1"], weight: -1}
      green: {endpoints: [], weight: 0}
    guard: {confidence: 2, enabeld: true}
)");
    std::vector<std::string> expected_prefixes = {
        "t.yaml:1:10: 'workers' must be a non-negative integer",
        "t.yaml:2:16: bad duration '10'",
        "t.yaml:5:13: stable pool 'purple' is not one of the pools",
        "t.yaml:7:26: endpoint '127.0.0.1' is not host:port",
        "t.yaml:7:48: 'weight' must not be negative",
        "t.yaml:8:26: pool 'green' has no endpoints",
        "t.yaml:9:25: 'confidence' must be a number strictly between 0 and 1",
        "t.yaml:9:28: unknown key 'enabeld' (did you mean 'enabled'?)",
    };
    ASSERT_EQ(r.errors.size(), expected_prefixes.size()) << joined(r.errors);
    for (std::size_t i = 0; i < expected_prefixes.size(); ++i) {
        EXPECT_TRUE(r.errors[i].starts_with(expected_prefixes[i]))
            << "error " << i << ": " << r.errors[i] << "\nexpected: " << expected_prefixes[i];
    }
}

// --- The example configurations ---------------------------------------------

TEST(Config, ExampleConfigsLoad) {
    for (const char* name : {"bluegreen.yaml", "canary.yaml", "multi-service.yaml"}) {
        std::string path = std::string(SWITCHYARD_SOURCE_DIR) + "/configs/" + name;
        load_result r = load_file(path);
        EXPECT_TRUE(loads(r)) << path;
        if (r.ok()) {
            EXPECT_FALSE(r.value->services.empty()) << path;
            EXPECT_NE(r.value->find_service("asset-anchor-api"), nullptr) << path;
        }
    }
}

// --- Helpers ---------------------------------------------------------------

TEST(ConfigParse, Duration) {
    struct row {
        const char* text;
        std::optional<duration> want;
    };
    const row rows[] = {
        {"250ms", 250ms},   {"2s", 2s},          {"5m", 5min},        {"1h", 1h},
        {"0s", 0ms},        {"0ms", 0ms},        {"90s", 90s},        {"1000ms", 1s},
        {"", std::nullopt}, {"10", std::nullopt}, {"-1s", std::nullopt}, {"1.5s", std::nullopt},
        {"5 minutes", std::nullopt}, {"5 s", std::nullopt}, {" 5s", std::nullopt},
        {"5S", std::nullopt}, {"5sec", std::nullopt}, {"5d", std::nullopt}, {"s", std::nullopt},
        {"+5s", std::nullopt}, {"1h30m", std::nullopt}, {"9999999999999999h", std::nullopt},
    };
    for (const row& r : rows) {
        EXPECT_EQ(parse_duration(r.text), r.want) << "'" << r.text << "'";
    }
}

TEST(ConfigParse, Size) {
    struct row {
        const char* text;
        std::optional<std::uint64_t> want;
    };
    const row rows[] = {
        {"0", 0u},
        {"1024", 1024u},
        {"8KiB", 8192u},
        {"64KiB", 65536u},
        {"10MiB", 10485760u},
        {"1GiB", 1073741824u},
        {"", std::nullopt},
        {"8KB", std::nullopt},
        {"8kb", std::nullopt},
        {"8MB", std::nullopt},
        {"8K", std::nullopt},
        {"8 KiB", std::nullopt},
        {"-1", std::nullopt},
        {"1.5MiB", std::nullopt},
        {"KiB", std::nullopt},
        {"18446744073709551615", 18446744073709551615u},
        {"18446744073709551616", std::nullopt},
        {"17179869184GiB", std::nullopt},
    };
    for (const row& r : rows) {
        EXPECT_EQ(parse_size(r.text), r.want) << "'" << r.text << "'";
    }
}

TEST(ConfigParse, HostPort) {
    struct row {
        const char* text;
        const char* host;  // nullptr: rejected
        std::uint16_t port;
    };
    const row rows[] = {
        {"127.0.0.1:80", "127.0.0.1", 80},
        {"name.example:80", "name.example", 80},
        {"localhost:65535", "localhost", 65535},
        {"my_service:8080", "my_service", 8080},
        {"[::1]:8080", "::1", 8080},
        {"[2001:db8::1]:443", "2001:db8::1", 443},
        {"127.0.0.1", nullptr, 0},
        {"127.0.0.1:", nullptr, 0},
        {"127.0.0.1:0", nullptr, 0},
        {"127.0.0.1:65536", nullptr, 0},
        {"127.0.0.1:99999999", nullptr, 0},
        {"127.0.0.1:-1", nullptr, 0},
        {"127.0.0.1:+80", nullptr, 0},
        {":80", nullptr, 0},
        {"[]:80", nullptr, 0},
        {"[::1]", nullptr, 0},
        {"[::1]80", nullptr, 0},
        {"::1:80", nullptr, 0},
        {"[not-v6]:80", nullptr, 0},
        {"256.0.0.1:80", nullptr, 0},
        {"1.2.3:80", nullptr, 0},
        {"-bad.example:80", nullptr, 0},
        {"a..b:80", nullptr, 0},
        {"a b:80", nullptr, 0},
        {"http://a:80", nullptr, 0},
        {"", nullptr, 0},
    };
    for (const row& r : rows) {
        auto got = parse_host_port(r.text);
        if (r.host == nullptr) {
            EXPECT_FALSE(got.has_value()) << "'" << r.text << "' -> " << got->host;
        } else {
            ASSERT_TRUE(got.has_value()) << "'" << r.text << "'";
            EXPECT_EQ(got->host, r.host) << r.text;
            EXPECT_EQ(got->port, r.port) << r.text;
        }
    }
    // Binding may ask for any free port.
    ASSERT_TRUE(parse_bind_address("127.0.0.1:0").has_value());
    EXPECT_EQ(parse_bind_address("127.0.0.1:0")->port, 0);
    EXPECT_FALSE(parse_bind_address("127.0.0.1:65536").has_value());
}

TEST(ConfigParse, StatusRange) {
    struct row {
        const char* text;
        bool ok;
        unsigned low;
        unsigned high;
    };
    const row rows[] = {
        {"200-399", true, 200, 399}, {"200", true, 200, 200},    {"100-599", true, 100, 599},
        {"204-204", true, 204, 204}, {"399-200", false, 0, 0},   {"99-200", false, 0, 0},
        {"200-600", false, 0, 0},    {"600", false, 0, 0},       {"2xx", false, 0, 0},
        {"", false, 0, 0},           {"200-", false, 0, 0},      {"-399", false, 0, 0},
        {"200 - 399", false, 0, 0},  {"200-399-500", false, 0, 0}, {"0200", false, 0, 0},
    };
    for (const row& r : rows) {
        auto got = parse_status_range(r.text);
        EXPECT_EQ(got.has_value(), r.ok) << "'" << r.text << "'";
        if (got && r.ok) {
            EXPECT_EQ(got->low, r.low) << r.text;
            EXPECT_EQ(got->high, r.high) << r.text;
            EXPECT_TRUE(got->contains(r.low));
            EXPECT_FALSE(got->contains(r.high + 1));
        }
    }
}

}  // namespace
}  // namespace switchyard::config
