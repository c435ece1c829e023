#pragma once
// Blocking clients for the integration tests, and wait_until.
//
// `http_client` speaks HTTP/1.1 (Boost.Beast) to 127.0.0.1:PORT and reuses its
// keep-alive connection. `raw_connection` is a plain TCP socket for sending
// arbitrary (hostile) bytes and reading whatever comes back.
//
// Threads: one object, one thread at a time. Every call that waits takes a
// deadline and never blocks past it.
// Failure: http_client throws std::runtime_error (naming the request, the
// port and the cause) on timeout, I/O or parse errors; raw_connection throws
// std::runtime_error when it cannot connect, on a send timeout and on an
// unparsable response in read_response.

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchyard::test {

using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_response {
    unsigned status = 0;
    header_list headers;  // in order, names as received
    std::string body;
    std::uint64_t body_bytes = 0;  // == body.size() unless streamed (http_client::stream)
    bool keep_alive = false;
    unsigned version = 11;

    // First value, case-insensitive; "" when absent.
    std::string header(std::string_view name) const;
    int header_count(std::string_view name) const;
};

class http_client {
public:
    explicit http_client(std::uint16_t port);
    ~http_client();
    http_client(const http_client&) = delete;
    http_client& operator=(const http_client&) = delete;

    // Sends one request and reads the whole response. Connects when not
    // connected (first call, or the previous response ended the connection);
    // never retries on a failed reused connection (tests must see it).
    // Host is "localhost" unless given; Content-Length is set from `body`
    // unless Content-Length or Transfer-Encoding is given. 1xx interim
    // responses are skipped. The timeout covers the whole exchange.
    http_response request(std::string_view method, std::string_view target,
                          header_list headers = {}, std::string body = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(10));

    // As request(), but the response body is handed to `on_body` piece by
    // piece instead of being kept (http_response::body stays empty,
    // body_bytes counts it). For downloads of any size.
    http_response stream(std::string_view method, std::string_view target,
                         const std::function<void(std::string_view)>& on_body,
                         header_list headers = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

    // Sends a generated body (generated_body_pattern) of `bytes`, with
    // Content-Length or chunked, in 64 KiB pieces, and reads the response.
    http_response upload(std::string_view method, std::string_view target, std::uint64_t bytes,
                         bool chunked = false, header_list headers = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

    // True while the connection is open and the peer has not closed it
    // (checked without blocking).
    bool connected() const;
    std::size_t connections_made() const;
    void close();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// One GET on a fresh connection.
http_response http_get(std::uint16_t port, std::string_view target, header_list headers = {});

class raw_connection {
public:
    // Connects to 127.0.0.1:port (throws if refused or not done in 10 s).
    explicit raw_connection(std::uint16_t port);
    ~raw_connection();
    raw_connection(const raw_connection&) = delete;
    raw_connection& operator=(const raw_connection&) = delete;

    // Sends everything; false when the peer closed or reset the connection
    // first (hostile-input tests expect that). Throws when the peer does not
    // read for `timeout`.
    bool send(std::string_view bytes, std::chrono::milliseconds timeout = std::chrono::seconds(10));

    // Returns the bytes available (buffered first), waiting up to `timeout`
    // for some; "" on timeout or EOF (see closed()).
    std::string read_some(std::chrono::milliseconds timeout);
    // All bytes until EOF/reset or `timeout`, buffered bytes included.
    std::string read_until_close(std::chrono::milliseconds timeout);
    // One response, parsed; bytes after it stay buffered for the next call.
    // nullopt on timeout or when the connection ends before a full response
    // (the bytes stay buffered, read_until_close returns them). Pass
    // head_request for a response to HEAD. 1xx responses are returned as is.
    std::optional<http_response> read_response(std::chrono::milliseconds timeout,
                                               bool head_request = false);

    // EOF or reset seen.
    bool closed() const;
    void shutdown_write();
    void close();  // FIN
    void reset();  // RST (SO_LINGER 0)
    int native_handle() const;

private:
    bool fill(std::chrono::steady_clock::time_point deadline);
    int fd_ = -1;
    bool closed_ = false;
    std::string buffer_;
};

// Polls `condition` every ~5 ms until it holds or `deadline` passes.
testing::AssertionResult wait_until(const std::function<bool()>& condition,
                                    std::chrono::milliseconds deadline = std::chrono::seconds(10),
                                    std::string_view what = "condition");

}  // namespace switchyard::test
