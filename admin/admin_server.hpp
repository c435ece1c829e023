#pragma once
// The admin listener (SPEC §6): HTTP/1.1 with keep-alive on `admin.address`,
// serving /healthz, /readyz, /metrics and the JSON API under /api/v1/ on top
// of a control_plane.
//
// Every /api/ call needs "Authorization: Bearer TOKEN" (compared in constant
// time); a second, read-only token may only GET (403 on a change). Without a
// token the API is open, and the constructor then refuses any listener
// address that is not loopback. Errors are {"error":"one sentence"}.
//
// Threads: runs on the control plane's executor (the control thread): one
// coroutine per connection, co_spawned on accept. Construct, start(), stop()
// and destroy on the control thread, or while that io_context is not running;
// set_ready() from any thread.
// Ownership: borrows the control plane, which must outlive the server and the
// control io_context's pending handlers. Connection coroutines share the
// server's internals by shared_ptr, so destroying the server while they are
// still queued is safe once stop() has been called (the destructor does).
// Failure: the constructor throws config_error for an invalid configuration
// (exit 2) and startup_error when it cannot listen (exit 1; "port in use").

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "admin/control_plane.hpp"
#include "config/config.hpp"

namespace switchyard::admin {

struct config_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct startup_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct admin_tokens {
    std::string full;  // may read and change; empty: none (API open, loopback only)
    std::string read;  // may only GET; empty: none
};

// Reads admin.token_file (else env SWITCHYARD_ADMIN_TOKEN) and
// admin.read_token_file, each trimmed of trailing whitespace and newlines.
// nullopt and `error` (one sentence naming the file) when a named file cannot
// be read or is empty. Blocking file I/O; any thread.
std::optional<admin_tokens> load_tokens(const config::admin& cfg, std::string& error);

// Constant-time equality: the time taken depends on the lengths only, never
// on where the contents differ.
bool token_equals(std::string_view presented, std::string_view expected);

struct admin_server_options {
    std::size_t body_limit = 1024 * 1024;  // request bodies over it: 413
    std::size_t header_limit = 16 * 1024;  // request header blocks over it: 431
    std::chrono::steady_clock::duration idle_timeout = std::chrono::seconds(60);
    std::chrono::steady_clock::duration request_timeout = std::chrono::seconds(30);
    std::size_t max_connections = 256;  // beyond it, new connections are closed at once
    // GET /metrics: the Prometheus text exposition. Empty: /metrics is 404.
    std::function<std::string()> metrics_text;
};

class admin_server {
public:
    // Binds (does not accept yet). `tokens.full` empty with a non-loopback
    // address, or `tokens.read` without `tokens.full`, is a config_error.
    admin_server(control_plane& control, const config::admin& cfg, admin_tokens tokens,
                 admin_server_options options = {});
    ~admin_server();
    admin_server(const admin_server&) = delete;
    admin_server& operator=(const admin_server&) = delete;

    // Starts accepting (control thread).
    void start();
    // Closes the listener and every connection, including one whose change is
    // still waiting for the workers (the change itself still completes).
    // Idempotent.
    void stop();

    // /readyz: 200 while ready, 503 otherwise. Starts not ready: main sets it
    // once the listeners are up, and clears it when draining begins.
    void set_ready(bool ready);
    bool ready() const;

    // The bound port (useful with port 0).
    std::uint16_t port() const;

    // Internals shared with the connection coroutines; named here only so
    // that the .cpp's free coroutines can refer to it.
    struct impl;

private:
    std::shared_ptr<impl> impl_;
};

}  // namespace switchyard::admin
