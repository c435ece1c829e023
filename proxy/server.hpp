#pragma once
// The data plane: N workers, each one thread running its own io_context,
// its own SO_REUSEPORT acceptor per listener, its own upstream connection
// pools and its own statistics shards (STYLE rule 1). Nothing is shared
// between workers on the request path except read-only memory: the routing
// snapshot (published to each worker, kept in a plain member) and endpoint
// health flags (relaxed loads).
//
// Listeners: each worker has one slot per listener it ever bound; a reload
// that adds, moves or removes listeners binds the new ones on every worker
// before the old ones close (prepare_listeners, commit_listeners), and never
// reuses a slot, so a connection that outlives the change keeps its own.
// TLS listeners get one context per worker (proxy/tls.hpp), rebuilt from the
// files at every reload for new connections.
//
// Threads: construct, start(), publish(), stop() from one control thread;
// listeners(), open_connections() and listener_port() from any thread.
// Failure: the constructor throws startup_error with one sentence naming the
// listener and address at fault ("port in use" included).

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "health/stats.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::proxy {

class worker;
class access_log_sink;
// A reload's listener change, bound but not yet serving; dropping it unused
// closes what it bound (defined in server.cpp).
struct listener_plan;

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

    // Reload, step one (control thread): binds, on every worker, each
    // listener of `next` that is new or whose name, address or TLS-ness
    // changed (the address first proved free of other processes, unless one
    // of our listeners holds it), and builds fresh TLS contexts for the TLS
    // listeners that stay. Nothing serves differently yet. `summary` gets
    // "listener public moved to 127.0.0.1:9000" and the like ("" when no
    // listener was added, moved or removed). Throws startup_error naming the
    // listener and address (or the TLS file) at fault; nothing changed.
    std::shared_ptr<listener_plan> prepare_listeners(const std::vector<config::listener>& next,
                                                     std::string& summary);
    // Step two (control thread): every worker starts accepting on the new
    // listeners, then closes the removed and moved ones (their connections
    // go on), and kept TLS listeners switch to their new contexts.
    void commit_listeners(std::shared_ptr<listener_plan> plan);

    unsigned worker_count() const { return static_cast<unsigned>(workers_.size()); }
    // The bound port of listener `index` of the current config (useful when
    // the config said port 0).
    std::uint16_t listener_port(std::size_t index) const;
    // One entry per name: the current listeners in config order, then
    // removed ones while they still have open connections. A name's counters
    // add up every listener that had it (a moved listener keeps counting).
    std::vector<listener_counters> listeners() const;

private:
    friend struct listener_plan;
    // One listener as bound on every worker (the slot of that index).
    struct slot_record {
        config::listener cfg;
        std::string bound;  // "127.0.0.1:8080", the actual port
        std::uint16_t port = 0;
        bool closed = false;
    };

    void ensure_stats(const routing::snapshot& snap);
    const std::array<unsigned char, 80>& ticket_keys_for(const std::string& listener);

    health::stats_registry* stats_ = nullptr;
    std::vector<std::unique_ptr<worker>> workers_;
    // Guards slots_ and active_ (written on the control thread by reloads,
    // read by metrics scrapes and the drain).
    mutable std::mutex mutex_;
    std::vector<slot_record> slots_;   // by slot index, every one ever bound
    std::vector<std::size_t> active_;  // config order -> slot index
    // Session ticket keys by listener name, drawn once (proxy/tls.hpp).
    std::map<std::string, std::array<unsigned char, 80>> ticket_keys_;
    bool started_ = false;
};

}  // namespace switchyard::proxy
