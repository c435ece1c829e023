#pragma once
// In-process upstream servers for the integration tests (STYLE rule 11).
//
// `upstream` is a real HTTP/1.1 server (Boost.Beast) on 127.0.0.1, port 0:
// keep-alive, TCP_NODELAY, streaming request bodies (only their length and a
// prefix are kept), generated response bodies of any size (never held in
// memory), and cues to answer with a status, a delay, a random error rate, or
// a fault (reset, close, truncate, stall, malformed). It records what it got.
//
// `raw_upstream` speaks no HTTP: it records every byte it receives and answers
// each connection with one canned byte string, for hostile-input tests ("the
// upstream saw nothing") and malformed-response tests.
//
// A request with "Expect: 100-continue" gets "100 Continue" before its body
// is read, as nginx does.
//
// Threads: each server owns one io_context and one thread, started by the
// constructor, stopped and joined by the destructor (open connections are
// closed). Every public member may be called from any thread other than the
// server's own, at any time while it runs; a change applies to responses that
// have not started yet.
// Failure: the constructor throws std::system_error when it cannot listen.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchyard::test {

using header_list = std::vector<std::pair<std::string, std::string>>;

// Generated bodies (upstream::set_response_size, http_client::upload) repeat
// this 64-byte pattern from offset 0, so a receiver can check every byte.
inline constexpr std::string_view generated_body_pattern =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n";

inline char generated_body_byte(std::uint64_t offset) {
    return generated_body_pattern[offset % generated_body_pattern.size()];
}

// True when `data` equals the generated body at `offset`.
bool matches_generated_body(std::string_view data, std::uint64_t offset);

class upstream {
public:
    enum class fault {
        none,
        reset_before_response,   // request read, then RST (SO_LINGER 0)
        close_before_response,   // request read, then FIN without a byte
        close_mid_body,          // full header with Content-Length, half the body, FIN
        stall,                   // request read, never answered; connection kept open
        bad_status_line,         // "HTTP/1.1 2OO OK" and a body
        extra_bytes_after_body,  // a valid response followed by stray bytes
    };

    struct recorded_request {
        std::string method;
        std::string target;
        unsigned version = 11;  // 10 or 11
        header_list headers;    // in arrival order, names as received
        std::uint64_t body_bytes = 0;
        std::string body_prefix;      // first record_body_limit bytes (default 4 KiB)
        std::uint64_t body_hash = 0;  // FNV-1a 64 of the whole body
        std::size_t connection = 0;   // 0-based index of the TCP connection it arrived on

        // First value of the header, case-insensitive; "" when absent.
        std::string header(std::string_view name) const;
        int header_count(std::string_view name) const;
    };

    // Default response: 200, `X-Upstream: <name>`, body "<name>\n".
    explicit upstream(std::string name = "upstream");
    ~upstream();
    upstream(const upstream&) = delete;
    upstream& operator=(const upstream&) = delete;

    std::uint16_t port() const;
    std::string address() const;  // "127.0.0.1:PORT"
    const std::string& name() const;

    void set_status(unsigned status);
    void set_body(std::string body);  // also cancels set_response_size
    // Waits on a timer (the server thread stays free) after the request is
    // read and before the response starts.
    void set_delay(std::chrono::milliseconds delay);
    // A fraction p of responses (drawn from a generator seeded with `seed`)
    // get `status` instead; p = 0 turns it off.
    void set_error_rate(double p, unsigned status = 500, std::uint64_t seed = 1);
    // Status answered on GET /healthz (body "ok\n"). Health checks ignore every
    // other setting (status, body, delay, error rate, fault, echo) and are not
    // in requests(); they are counted by health_check_count().
    void set_health_status(unsigned status);
    // Streams a generated body of `bytes` (generated_body_pattern), with
    // Content-Length or chunked, in 64 KiB pieces; set_body cancels it.
    void set_response_size(std::uint64_t bytes, bool chunked = false);
    // How many leading body bytes each recorded request keeps (default 4 KiB).
    void set_record_body_limit(std::size_t bytes);
    void set_fault(fault f);
    // Answers 200 with the request head as received ("METHOD TARGET HTTP/1.x",
    // then "Name: value" lines, CRLF-terminated, then an empty line) followed
    // by the request body. Echoed bodies are held in memory: keep them small.
    void set_echo(bool on);
    // Extra headers added to every (non-health) response.
    void set_response_headers(header_list headers);

    std::vector<recorded_request> requests() const;
    std::size_t request_count() const;
    std::size_t health_check_count() const;
    std::size_t connection_count() const;  // accepted TCP connections, ever
    std::size_t open_connections() const;
    // Forgets recorded requests and zeroes the counters (not open_connections,
    // and connection indexes keep counting up).
    void clear();

    // Closes every keep-alive connection waiting for its next request.
    // Returns once the sockets are closed; open_connections() drops shortly
    // after (use wait_until).
    void close_idle_connections();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

class raw_upstream {
public:
    raw_upstream();
    ~raw_upstream();
    raw_upstream(const raw_upstream&) = delete;
    raw_upstream& operator=(const raw_upstream&) = delete;

    std::uint16_t port() const;
    std::string address() const;

    // Sent once per connection as soon as it has received "\r\n\r\n"; empty
    // (the default) means never answer.
    void set_reply(std::string raw);
    void set_close_after_reply(bool close);

    std::string received() const;                        // all connections, in arrival order
    std::string received(std::size_t connection) const;  // one connection's bytes
    std::size_t connection_count() const;
    std::size_t open_connections() const;
    void clear();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace switchyard::test
