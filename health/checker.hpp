#pragma once
// Active health checks (SPEC §5): every endpoint of a service with a
// `health_check` gets a GET of the check path every `interval`. An endpoint
// starts healthy, turns unhealthy after `unhealthy_threshold` failed checks
// in a row and healthy again after `healthy_threshold` passed checks in a
// row. A check fails on any probe error (probe.hpp) or a status outside
// `expected_status`. The verdict is written to the endpoint's
// routing::endpoint_health::healthy, which workers read with relaxed loads.
//
// `health_counter` is the threshold logic alone (pure, no Asio).
// `active_checker` runs one coroutine per target on ONE executor, the control
// thread's io_context, as Envoy runs its health checks on the main thread.
// Each coroutine keeps one keep-alive connection to its endpoint across
// probes, and sleeps `interval` plus up to 10 % random jitter (so the checks
// of many endpoints do not align) between the end of one probe and the start
// of the next.
//
// Threads: every member of active_checker, and the change handler, run on the
// executor's thread. The destructor may also run on another thread once the
// executor's io_context has stopped for good (it is not run again).
// Ownership: the checker owns per-target state (counters, connection, timer)
// shared with that target's coroutine, so a coroutine that is still winding
// down after stop()/update() never touches freed memory. The endpoint_health
// objects belong to routing::registry, which must outlive the checker's
// coroutines (it lives for the process).
// Failure: probes fail as values; nothing here throws except std::bad_alloc.
// After stop() no change handler runs and each coroutine ends at its next
// resumption: at once, or, for a probe resolving a DNS name, when the lookup
// is abandoned (immediately; getaddrinfo itself finishes in the background).

#include <boost/asio/any_io_executor.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "health/probe.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::health {

// Consecutive-result thresholds of one endpoint.
struct health_counter {
    bool healthy = true;
    unsigned successes = 0;  // passed checks in a row
    unsigned failures = 0;   // failed checks in a row

    // Records one check; true when `healthy` flipped.
    bool observe(bool ok, const config::health_check& policy);
};

namespace detail {
struct check_state;  // one target's counters, connection and timer (checker.cpp)
}  // namespace detail

struct check_target {
    routing::endpoint_id id = 0;
    std::string service;
    std::string pool;
    std::string address;  // "host:port" as configured
    std::string host;     // DNS name or IP literal (no brackets)
    std::uint16_t port = 0;
    routing::endpoint_health* health = nullptr;  // owned by routing::registry
    config::health_check policy;
    // TLS to upstreams (make_probe_tls); null: plain HTTP. A target whose
    // `tls` changes drops its kept connection.
    std::shared_ptr<const probe_tls> tls;
};

struct health_change {
    check_target target;
    bool healthy = true;
    // One sentence: "3 health checks failed in a row (last: status 500 on GET
    // /healthz)", "2 health checks passed in a row".
    std::string reason;
};

class active_checker {
public:
    using change_handler = std::function<void(const health_change&)>;

    // `on_change` runs on the executor's thread each time an endpoint flips,
    // after endpoint_health::healthy was written. It may call update() or
    // stop(), but must not destroy the checker.
    active_checker(boost::asio::any_io_executor ex, change_handler on_change);
    ~active_checker();  // stop()
    active_checker(const active_checker&) = delete;
    active_checker& operator=(const active_checker&) = delete;

    // Replaces the set of targets. A target whose id stays keeps its counters
    // and connection and takes the new policy from its next check on. A new
    // one starts healthy (health->healthy = true) and is checked at once. A
    // removed one stops; its health->healthy goes back to true (an endpoint
    // without active checks is healthy) and no change is reported for it. Of
    // duplicate ids the first wins. Ignored after stop().
    void update(std::vector<check_target> targets);

    // Cancels every check and closes every connection; no change handler
    // runs after it. Final: update() is ignored afterwards.
    void stop();

    std::size_t target_count() const { return targets_.size(); }

private:
    boost::asio::any_io_executor ex_;
    // Shared with the coroutines, so that a handler that stops the checker
    // is not destroyed while it runs.
    std::shared_ptr<const change_handler> on_change_;
    std::unordered_map<routing::endpoint_id, std::shared_ptr<detail::check_state>> targets_;
    std::uint64_t seed_;  // of each target's jitter generator
    bool stopped_ = false;
};

}  // namespace switchyard::health
