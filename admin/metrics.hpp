#pragma once
// The Prometheus metrics of switchyard (SPEC §7), served by GET /metrics.
//
// Nothing here runs per request (STYLE rule 3): the data plane writes its
// plain per-worker counters (health::pool_shard, the listeners' counters) and
// this class reads and merges them when scraped. A scrape asks a few
// prometheus::Collectable objects for their families, each built from the
// merged figures at that moment, and renders them with prometheus-cpp's
// TextSerializer (text format 0.0.4). prometheus-cpp's Family/Counter objects
// are never used, so no mutex of theirs is ever taken on the request path.
//
// Series:
//   switchyard_requests_total{service,pool,code}            counter (2xx..5xx; 1xx when seen)
//   switchyard_request_duration_seconds{service,pool}       histogram
//   switchyard_upstream_errors_total{service,pool,kind}     counter (connect|timeout|reset)
//   switchyard_pool_weight{service,pool}                    gauge
//   switchyard_endpoint_healthy{service,pool,endpoint}      gauge (1 usable, else 0)
//   switchyard_guard_reverts_total{service,pool,reason}     counter (error_rate|p95|unavailable)
//   switchyard_downstream_connections{listener}             gauge
//   switchyard_accepted_connections_total{listener}         counter
//   switchyard_unrouted_requests_total{listener}            counter
//   switchyard_config_reloads_total{result}                 counter (ok|error)
//   switchyard_build_info{version}                          gauge, always 1
//   process_cpu_seconds_total, process_resident_memory_bytes,
//   process_virtual_memory_bytes, process_open_fds, process_max_fds,
//   process_start_time_seconds                              (from /proc, Linux)
// Pool series follow the current snapshot: a pool that leaves the config
// leaves the exposition (its guard reverts stay, they are this class's own).
//
// Threads: on_event() and scrape() may be called from any thread (a mutex
// guards the revert counts; both normally run on the control thread). The
// sources are called from whichever thread scrapes.
// Ownership: borrows what the sources point to (the stats registry, the
// server, the control plane), which must outlive the last scrape.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "health/stats.hpp"
#include "proxy/server.hpp"
#include "routing/snapshot.hpp"

namespace prometheus {
class Collectable;
}

namespace switchyard::admin {

struct event;  // admin/control_plane.hpp

// Everything a scrape reads; each source may be empty (then its metrics are
// absent or zero).
struct metrics_sources {
    std::function<std::shared_ptr<const routing::snapshot>()> snapshot;  // current routing
    const health::stats_registry* stats = nullptr;
    std::function<std::vector<proxy::listener_counters>()> listeners;
    std::function<std::pair<std::uint64_t, std::uint64_t>()> reloads;  // {ok, error}
    std::string version;  // switchyard_build_info{version}; empty: "unknown"
};

class metrics {
  public:
    explicit metrics(metrics_sources sources);
    ~metrics();
    metrics(const metrics&) = delete;
    metrics& operator=(const metrics&) = delete;

    // Called for every event (hook: control_plane::set_event_listener);
    // counts guard reverts (kind "revert", actor "guard") by (service,
    // details.pool, details.metric). Other events are ignored.
    void on_event(const event& e);

    // The Prometheus text exposition (format 0.0.4), built at scrape time.
    std::string scrape();

    // Content-Type of scrape()'s text.
    static constexpr const char* content_type = "text/plain; version=0.0.4; charset=utf-8";

    struct revert_counts;  // shared with the collectables

  private:
    std::shared_ptr<revert_counts> reverts_;
    std::vector<std::unique_ptr<prometheus::Collectable>> collectables_;
};

}  // namespace switchyard::admin
