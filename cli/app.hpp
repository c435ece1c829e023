#pragma once
// The assembled process: config -> statistics, control plane, data plane
// (proxy::server) and admin listener, with the control thread that runs the
// control plane and the admin API. Used by `switchyard run` and the demo.
//
// Threads: the workers (proxy::server) and one control thread started by
// start(). Public members are called from the thread that made the app.

#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.hpp"

namespace switchyard::admin {
class admin_server;
class autopilot;
class control_plane;
class metrics;
class state_store;
}  // namespace switchyard::admin
namespace switchyard::health {
class stats_registry;
}
namespace switchyard::proxy {
class access_log_sink;
class server;
}

namespace switchyard::cli {

inline constexpr std::string_view version = "0.1.0";

enum class log_level { debug, info, warn, error };
std::optional<log_level> parse_log_level(std::string_view text);
void set_log_level(log_level level);
// One line to stderr: "TIME LEVEL message".
void log(log_level level, std::string_view message);

// Bad configuration found while assembling (exit 2), as opposed to a runtime
// failure such as a port in use (exit 1).
struct config_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct run_options {
    std::string config_file;
    std::optional<unsigned> workers;
    log_level level = log_level::info;
};

// `switchyard run`: loads, starts, serves until SIGTERM/SIGINT, drains.
int run(const run_options& options);

// `switchyard ctl`.
int run_ctl(const std::vector<std::string>& args);

class app {
public:
    // Binds every listener and the admin address. Throws config_error or
    // std::runtime_error with one sentence.
    app(config::config cfg, std::optional<unsigned> workers, log_level level);
    ~app();
    app(const app&) = delete;
    app& operator=(const app&) = delete;

    void start();
    // Graceful drain (SPEC §1): not ready, stop accepting, finish in-flight
    // requests for up to drain_timeout, close idle connections, stop.
    void drain_and_stop();
    // Immediate stop.
    void stop();
    // SIGHUP: reloads the config file on the control thread (asynchronous;
    // the outcome is logged). Any thread.
    void reload();
    // SIGUSR1: reopens the access log file (log rotation); a failure keeps
    // the old file and is logged. Any thread.
    void reopen_access_log();

    std::uint16_t listener_port(std::size_t index) const;
    std::uint16_t admin_port() const;
    unsigned workers() const { return workers_; }
    // "blue=90 canary=10 gen 3" per service, for the demo's status line.
    std::string status_summary();

private:
    config::config config_;
    unsigned workers_;
    boost::asio::io_context control_;
    std::unique_ptr<health::stats_registry> stats_;
    std::unique_ptr<admin::state_store> store_;
    std::unique_ptr<admin::control_plane> control_plane_;
    std::unique_ptr<admin::autopilot> autopilot_;
    std::unique_ptr<admin::metrics> metrics_;
    std::unique_ptr<proxy::access_log_sink> access_log_;  // null when off; outlives server_
    std::unique_ptr<proxy::server> server_;
    std::unique_ptr<admin::admin_server> admin_;
    std::thread control_thread_;
    bool stopped_ = false;
};

}  // namespace switchyard::cli
