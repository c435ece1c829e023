#pragma once
// The autopilot: what acts on a service without an operator (SPEC §5).
//
// On a 100 ms tick of the control thread it
//   - scans every pool for outlier ejections and their ends (health::outlier_detector),
//   - every `evaluate_every` of a service, judges each non-stable pool with
//     weight (and the new stable during a post-switch watch) with
//     health::pool_watch over the service's window, publishes the verdicts to
//     the control plane, and on a breach asks it to revert,
//   - advances a progressing rollout after an unbroken `step_interval` of
//     `pass` (insufficient_data and breach restart the clock),
// and it keeps the active health checks (health::active_checker) pointed at
// the endpoints of the current snapshot.
//
// The window judged: the guard reads min(window, time since the pool began
// being judged), so that figures from before a pool got its traffic back
// (after a revert and an operator's new weights) do not condemn it again.
// A pool begins being judged at the service's previous evaluation (the last
// one that did not judge it; for a service's first evaluation, the
// autopilot's previous tick, its construction for the first): its traffic may begin
// any time after that, and the first requests count like the others.
//
// Threads: construct, start(), stop() and destroy on the control thread (or
// before it runs). Ownership: borrows the control plane and the statistics,
// which must outlive it.

#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "admin/control_plane.hpp"
#include "health/checker.hpp"
#include "health/guard.hpp"
#include "health/outlier.hpp"
#include "health/stats.hpp"

namespace switchyard::admin {

class autopilot {
public:
    static constexpr std::chrono::milliseconds tick{100};

    autopilot(control_plane& control, health::stats_registry& stats);
    ~autopilot();
    autopilot(const autopilot&) = delete;
    autopilot& operator=(const autopilot&) = delete;

    void start();
    void stop();
    // After a change of config (reload): re-targets the health checks.
    void refresh_targets();

private:
    struct judged_pool {
        health::pool_watch watch;
        health::clock::time_point since;  // began being judged
        bool seen = false;                // judged in the current evaluation
    };
    struct service_memory {
        health::clock::time_point next_evaluation{};
        std::map<std::string, judged_pool, std::less<>> pools;
        // The previous evaluation: where a pool judged afresh begins.
        std::optional<health::clock::time_point> last_evaluation;
        // Rollout stepping: the step being held and since when it has passed.
        std::optional<int> step;
        std::optional<health::clock::time_point> passing_since;
    };

    void arm();
    void on_tick();
    void scan_outliers(health::clock::time_point now);
    void evaluate(const config::service& cs, service_memory& memory,
                  health::clock::time_point now);

    control_plane& control_;
    health::stats_registry& stats_;
    boost::asio::steady_timer timer_;
    health::outlier_detector outliers_;
    std::unique_ptr<health::active_checker> checker_;
    // TLS for the health checks (upstream_defaults.tls), kept across reloads
    // that leave those settings alone so the checks keep their connections.
    std::shared_ptr<const health::probe_tls> probe_tls_;
    std::map<std::string, service_memory, std::less<>> services_;
    health::clock::time_point last_tick_;  // construction before the first tick
    bool stopped_ = true;
};

}  // namespace switchyard::admin
