#pragma once
// The data plane: N workers, each one thread running its own io_context{1},
// its own SO_REUSEPORT acceptor per listener, its own upstream connection
// pools and its own statistics shards (STYLE rule 1). Nothing is shared
// between workers on the request path except read-only memory: the routing
// snapshot (published to each worker, kept in a plain member) and endpoint
// health flags (relaxed loads).
//
// Threads: construct, start(), publish(), stop() from one control thread.
// Failure: the constructor throws startup_error with one sentence naming the
// listener and address at fault ("port in use" included).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "health/stats.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::proxy {

class worker;
class access_log_sink;

struct startup_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Settings the data path reads per request; published with each snapshot so
// that a reload swaps them atomically with the routing.
struct settings {
    config::limits limit;
    config::upstream_defaults upstream;
};

// Counters per listener (downstream side), merged over workers by the reader.
struct listener_counters {
    std::string name;
    std::uint64_t open_connections = 0;
    std::uint64_t unrouted_requests = 0;
    std::uint64_t accepted_connections = 0;
};

class server {
public:
    // Binds every listener on every worker (does not accept yet). Workers
    // write the access log to `access_log` when it is not null; it must
    // outlive the server.
    server(const config::config& cfg, unsigned workers, health::stats_registry& stats,
           access_log_sink* access_log = nullptr);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    // The snapshot and settings every worker starts with; call before start().
    void initialise(std::shared_ptr<const routing::snapshot> snap,
                    std::shared_ptr<const settings> set);

    // Starts the worker threads; they begin accepting.
    void start();

    // Hands a new snapshot (and settings, when non-null) to every worker; calls
    // `done` on some worker thread once every worker has switched to it
    // (Envoy's runOnAllThreads with a completion callback). Any thread.
    void publish(std::shared_ptr<const routing::snapshot> snap,
                 std::shared_ptr<const settings> set, std::function<void()> done = {});

    // Stops accepting on every listener; connections in progress go on.
    void stop_accepting();
    // Asks every connection to finish its current request and close; idle
    // ones close at once. Returns immediately.
    void begin_drain();
    // Open downstream connections over all workers.
    std::uint64_t open_connections() const;
    // Stops every worker and joins its thread (in-flight requests are cut).
    void stop();

    unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }
    // The bound port of listener `index` (useful when the config said port 0).
    std::uint16_t listener_port(std::size_t index) const;
    std::vector<listener_counters> listeners() const;

private:
    void ensure_stats(const routing::snapshot& snap);

    health::stats_registry* stats_ = nullptr;
    std::vector<std::unique_ptr<worker>> workers_;
    std::vector<std::uint16_t> ports_;
    std::vector<std::string> listener_names_;
    bool started_ = false;
};

}  // namespace switchyard::proxy
