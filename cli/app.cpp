#include "cli/app.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <future>
#include <iostream>
#include <mutex>

#include "admin/admin_server.hpp"
#include "admin/autopilot.hpp"
#include "admin/metrics.hpp"
#include "admin/control_plane.hpp"
#include "admin/state_store.hpp"
#include "health/stats.hpp"
#include "proxy/access_log.hpp"
#include "proxy/server.hpp"

namespace switchyard::cli {

namespace net = boost::asio;

namespace {
std::atomic<log_level> g_level{log_level::info};
std::mutex g_log_mutex;

const char* level_name(log_level l) {
    switch (l) {
        case log_level::debug: return "debug";
        case log_level::info: return "info";
        case log_level::warn: return "warn";
        case log_level::error: return "error";
    }
    return "info";
}

void raise_open_file_limit() {
    // SPEC §1: every connection is a descriptor (two, when proxied).
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &lim);
    }
}

config::duration longest_window(const config::config& cfg) {
    config::duration longest = std::chrono::seconds(30);
    for (const auto& s : cfg.services) {
        longest = std::max(longest, s.guard_policy.window);
    }
    return longest;
}

// Resolves `a` running on `ioc`'s thread and waits for it (bounded).
template <class F>
auto run_on(net::io_context& ioc, F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    net::post(ioc, [&task] { task(); });
    return result.get();
}
}  // namespace

std::optional<log_level> parse_log_level(std::string_view text) {
    if (text == "debug") return log_level::debug;
    if (text == "info") return log_level::info;
    if (text == "warn") return log_level::warn;
    if (text == "error") return log_level::error;
    return std::nullopt;
}

void set_log_level(log_level level) { g_level.store(level); }

void log(log_level level, std::string_view message) {
    if (level < g_level.load(std::memory_order_relaxed)) {
        return;
    }
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    std::lock_guard lock(g_log_mutex);
    std::cerr << stamp << ' ' << level_name(level) << ' ' << message << '\n';
}

app::app(config::config cfg, std::optional<unsigned> workers, log_level level)
    : config_(std::move(cfg)) {
    set_log_level(level);
    raise_open_file_limit();
    workers_ = workers.value_or(config_.workers);
    if (workers_ == 0) {
        workers_ = std::max(1u, std::thread::hardware_concurrency());
    }

    std::string token_error;
    auto tokens = admin::load_tokens(config_.admin_listener, token_error);
    if (!tokens) {
        throw config_error(token_error);
    }

    stats_ = std::make_unique<health::stats_registry>(workers_, longest_window(config_));
    if (!config_.state_file.empty()) {
        store_ = std::make_unique<admin::file_state_store>(config_.state_file);
    }

    admin::control_plane_options options;
    options.store = store_.get();
    options.stats = stats_.get();
    options.log = [](std::string_view line) { log(log_level::warn, line); };
    options.events_file = config_.events_file;
    options.publish = [this](std::shared_ptr<const routing::snapshot> snap,
                             std::shared_ptr<const proxy::settings> set, std::function<void()> done) {
        server_->publish(std::move(snap), std::move(set), std::move(done));
    };
    // A reload binds changed listeners before anything else changes; the
    // server exists by the time a reload can run (after start()).
    options.listeners = [this](const std::vector<config::listener>& next) {
        admin::listener_update update;
        auto plan = server_->prepare_listeners(next, update.summary);
        update.commit = [this, plan] { server_->commit_listeners(plan); };
        return update;
    };
    try {
        control_plane_ =
            std::make_unique<admin::control_plane>(control_.get_executor(), config_, options);
    } catch (const admin::control_plane_error& e) {
        throw std::runtime_error(e.what());
    }

    control_plane_->set_event_listener([this](const admin::event& e) {
        log(log_level::info, "event " + std::to_string(e.id) + " " + e.service + " " + e.kind +
                                 " by " + e.actor + ": " + e.reason);
        if (metrics_) {
            metrics_->on_event(e);
        }
    });
    autopilot_ = std::make_unique<admin::autopilot>(*control_plane_, *stats_);
    control_plane_->set_reload_listener([this] { autopilot_->refresh_targets(); });

    access_log_ = proxy::make_access_log(config_.access_log);
    server_ = std::make_unique<proxy::server>(config_, workers_, *stats_, access_log_.get());
    server_->initialise(control_plane_->snapshot(), control_plane_->settings());

    try {
        admin::metrics_sources sources;
        sources.snapshot = [this] { return control_plane_->snapshot(); };
        sources.stats = stats_.get();
        sources.listeners = [this] { return server_->listeners(); };
        sources.reloads = [this] {
            return std::pair{control_plane_->reloads_ok(), control_plane_->reloads_failed()};
        };
        sources.version = std::string(version);
        metrics_ = std::make_unique<admin::metrics>(std::move(sources));
        admin::admin_server_options admin_options;
        admin_options.metrics_text = [this] { return metrics_->scrape(); };
        admin_ = std::make_unique<admin::admin_server>(*control_plane_, config_.admin_listener,
                                                        std::move(*tokens),
                                                        std::move(admin_options));
    } catch (const admin::config_error& e) {
        throw config_error(e.what());
    }
}

app::~app() { stop(); }

void app::start() {
    server_->start();
    admin_->start();
    admin_->set_ready(true);
    net::post(control_, [this] { autopilot_->start(); });
    control_thread_ = std::thread([this] {
        auto guard = net::make_work_guard(control_);
        control_.run();
    });
    for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
        log(log_level::info, "listener " + config_.listeners[i].name + " on " +
                                 config_.listeners[i].host + ":" +
                                 std::to_string(server_->listener_port(i)) + " (" +
                                 std::to_string(workers_) + " workers)");
    }
    log(log_level::info, "admin API on " + config_.admin_listener.host + ":" +
                             std::to_string(admin_->port()));
}

void app::drain_and_stop() {
    if (stopped_) {
        return;
    }
    log(log_level::info, "draining: not ready, listeners closed, finishing requests in flight");
    if (control_thread_.joinable()) {
        run_on(control_, [this] {
            admin_->set_ready(false);
            return 0;
        });
    }
    server_->stop_accepting();
    server_->begin_drain();
    const auto deadline = std::chrono::steady_clock::now() + config_.drain_timeout;
    // Polls the merged connection count; the workers close each connection
    // as soon as its request in flight is answered.
    while (server_->open_connections() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const auto left = server_->open_connections();
    if (left > 0) {
        log(log_level::warn, "drain_timeout reached with " + std::to_string(left) +
                                 " connections open; closing them");
    }
    stop();
    log(log_level::info, "stopped");
}

void app::stop() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    server_->stop();
    if (control_thread_.joinable()) {
        run_on(control_, [this] {
            autopilot_->stop();
            admin_->stop();
            return 0;
        });
        control_.stop();
        control_thread_.join();
    }
}

void app::reload() {
    net::post(control_, [this] {
        control_plane_->reload("config", [](admin::change_result result) {
            if (result.error) {
                log(log_level::error, "reload failed: " + result.message);
            } else {
                log(log_level::info, "reload done");
            }
        });
    });
}

void app::reopen_access_log() {
    if (!access_log_) {
        log(log_level::info, "SIGUSR1: the access log is off, nothing to reopen");
        return;
    }
    std::string error;
    if (access_log_->reopen(error)) {
        log(log_level::info, "SIGUSR1: reopened the access log " + access_log_->target());
    } else {
        log(log_level::warn, error);
    }
}

std::uint16_t app::listener_port(std::size_t index) const { return server_->listener_port(index); }

std::uint16_t app::admin_port() const { return admin_->port(); }

std::string app::status_summary() {
    auto describe = [this] {
        std::string out;
        const auto snap = control_plane_->snapshot();
        for (const auto& svc : snap->services()) {
            if (!out.empty()) {
                out += "; ";
            }
            out += "weights";
            for (const auto& p : svc.pools) {
                out += ' ' + p.name + '=' + std::to_string(p.weight);
            }
            out += " gen " + std::to_string(svc.generation);
            const auto& state = control_plane_->state().services.at(svc.name);
            if (state.rollout.state != admin::rollout_state::idle) {
                out += " rollout " + std::string(admin::to_string(state.rollout.state));
                if (!state.rollout.pool.empty()) {
                    out += " (" + state.rollout.pool + ")";
                }
                if (!state.rollout.reason.empty()) {
                    out += ": " + state.rollout.reason;
                }
            }
        }
        return out;
    };
    if (!control_thread_.joinable()) {
        return describe();
    }
    return run_on(control_, describe);
}

int run(const run_options& options) {
    set_log_level(options.level);
    auto loaded = config::load_file(options.config_file);
    if (!loaded.ok()) {
        for (const auto& e : loaded.errors) {
            std::cerr << e << "\n";
        }
        return 2;
    }
    try {
        app a(std::move(*loaded.value), options.workers, options.level);
        // Signals are taken on this thread: SIGTERM/SIGINT drain and exit 0.
        net::io_context signals_ioc;
        net::signal_set signals(signals_ioc, SIGTERM, SIGINT, SIGHUP);
        signals.add(SIGUSR1);
        int received = 0;
        std::function<void()> arm = [&] {
            signals.async_wait([&](boost::system::error_code ec, int sig) {
                if (ec) {
                    return;
                }
                if (sig == SIGHUP) {
                    log(log_level::info, "SIGHUP: reloading " + options.config_file);
                    a.reload();
                    arm();
                    return;
                }
                if (sig == SIGUSR1) {
                    a.reopen_access_log();
                    arm();
                    return;
                }
                received = sig;
            });
        };
        arm();
        a.start();
        signals_ioc.run();
        log(log_level::info, std::string("received ") + (received == SIGINT ? "SIGINT" : "SIGTERM"));
        a.drain_and_stop();
        return 0;
    } catch (const config_error& e) {
        std::cerr << "switchyard: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "switchyard: " << e.what() << "\n";
        return 1;
    }
}


}  // namespace switchyard::cli
