#pragma once
// One worker: one thread, one io_context, one SO_REUSEPORT acceptor per
// listener, and everything a request touches (STYLE rule 1). Private to the
// proxy module; server.hpp is the public face.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "health/stats.hpp"
#include "proxy/access_log.hpp"
#include "proxy/server.hpp"
#include "proxy/session.hpp"
#include "proxy/upstream_pool.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::proxy {

namespace net = boost::asio;

class session;
class worker;

// The routing snapshot and settings a worker currently serves with. A request
// holds the epoch it started with (route_lease) so that a publish in the
// middle of it never frees what it reads; the count is a plain integer owned
// by the worker thread, never a shared_ptr copy whose atomic refcount would
// be a cache line written by every worker on every request.
struct route_epoch {
    std::shared_ptr<const routing::snapshot> snap;
    std::shared_ptr<const settings> set;
    std::uint32_t users = 0;
};

// A small, fast, per-worker random source (xoshiro256**): never shared, so
// random choices cost no synchronisation.
class fast_random {
public:
    explicit fast_random(std::uint64_t seed);
    std::uint64_t operator()();

private:
    std::uint64_t s_[4];
};

// Fixed-size relay buffers, reused across requests of one worker so that an
// idle connection holds none and a busy one allocates none.
//
// A request in flight holds two, so the pool must cover the worker's peak
// concurrency, not its average: with a fixed small bound, every swing of the
// in-flight count above it went through malloc (64 connections swinging
// between 30 and 64 requests in flight: 0.5 mallocs of 64 KiB per request).
// The pool keeps up to `max_free` and gives back, at each trim (the worker's
// 2 s sweep), the buffers that stayed free the whole interval: what a burst
// needed is kept while bursts recur and freed once they stop.
class buffer_pool {
public:
    static constexpr std::size_t buffer_size = 64 * 1024;
    static constexpr std::size_t max_free = 512;  // 32 MiB
    using buffer = std::unique_ptr<char[]>;
    buffer acquire();
    void release(buffer b);
    // Frees the buffers unused since the last trim.
    void trim();
    std::size_t free_count() const { return free_.size(); }

private:
    std::vector<buffer> free_;
    std::size_t low_water_ = 0;  // fewest free since the last trim
};

// One listener on one worker. Slots are only ever appended: a session keeps
// its slot's index for life, so a listener that a reload removes or moves is
// closed (it stops accepting) but its slot stays, and its connections go on.
struct listener_slot {
    std::string name;
    bool tls = false;
    // This worker's own context (proxy/tls.hpp); a reload may replace it on
    // the worker thread, for new connections only.
    std::unique_ptr<boost::asio::ssl::context> tls_context;  // null for plain listeners
    net::ip::tcp::acceptor acceptor;
    bool closed = false;  // worker thread: no longer accepting (reload or drain)
    // Contexts replaced by a reload, kept while connections made with them
    // may still be open on this slot (freed at a later swap when none is).
    std::vector<std::unique_ptr<boost::asio::ssl::context>> retired_tls;
    // Written by this worker only, read by the control thread.
    std::atomic<std::uint64_t> open{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> unrouted{0};

    explicit listener_slot(net::io_context& ioc) : acceptor(ioc) {}
};

// A reload's change to one worker's listeners, applied at once on its thread.
struct listener_change {
    std::vector<std::unique_ptr<listener_slot>> added;  // appended in this order
    std::vector<std::size_t> closed;                    // slots that stop accepting
    // Fresh TLS contexts for slots that stay (certificates are re-read on
    // every reload).
    std::vector<std::pair<std::size_t, std::unique_ptr<boost::asio::ssl::context>>> contexts;
};

class worker {
public:
    // `access_log` may be null (no access log); it outlives the worker.
    worker(unsigned index, health::stats_registry& stats, access_log_sink* access_log = nullptr);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    // Control thread, any time: a slot on this worker's io_context, bound to
    // `endpoint` with SO_REUSEPORT and listening (the kernel queues
    // connections until the worker accepts). `tls_context` null: plain.
    // Throws boost::system::system_error.
    std::unique_ptr<listener_slot> bind_listener(
        const std::string& name, std::unique_ptr<boost::asio::ssl::context> tls_context,
        const net::ip::tcp::endpoint& endpoint);
    // Control thread, before start(): appends a slot from bind_listener.
    void add_listener(std::unique_ptr<listener_slot> slot);
    // Control thread, before start().
    std::uint16_t local_port(std::size_t listener) const;

    void start();
    void stop();

    // Runs on this worker's thread (post from anywhere).
    void apply(std::shared_ptr<const routing::snapshot> snap, std::shared_ptr<const settings> set);
    void stop_accepting();
    void begin_drain();
    // A reload: new slots start accepting (unless draining), closed ones
    // stop, kept TLS slots take their new contexts.
    void change_listeners(listener_change change);

    net::io_context& context() { return ioc_; }
    unsigned index() const { return index_; }

    // --- Worker thread only, used by sessions. ---
    route_epoch& current_epoch() { return *current_; }
    void release(route_epoch& epoch);
    const settings& config() const { return *current_->set; }
    routing::balancer_state& balancer() { return balancer_; }
    health::pool_shard& stats(routing::pool_id id) { return stats_.shard(id, index_); }
    upstream_pool& upstreams() { return upstreams_; }
    // This worker's TLS client context for connections to upstreams, made
    // by apply() when settings with upstream_defaults.tls on arrive and made
    // again when a reload changes them (connections made with the old one
    // are never reused: upstream_pool). Null when TLS to upstreams was never
    // on, or when the context cannot be made (the CA file became unreadable
    // since the config was checked: logged once per change of settings).
    net::ssl::context* upstream_tls() { return upstream_tls_.get(); }
    buffer_pool& buffers() { return buffers_; }
    fast_random& random() { return random_; }
    bool draining() const { return draining_; }
    listener_slot& listener(std::size_t i) { return *listeners_[i]; }
    access_log_buffer& access_log() { return access_log_; }

    void session_started(session* s);
    void session_ended(session* s);

    // --- Any thread (relaxed reads of worker-written counters). ---
    // By slot index, closed slots included.
    std::vector<listener_counters> counters() const;

private:
    awaitable<void> accept_loop(std::size_t listener);
    void spawn_accept_loop(std::size_t listener);
    void sweep_idle();
    void flush_access_log();
    void refresh_upstream_tls(const config::upstream_tls& cfg);

    unsigned index_;
    // One thread runs it. UNSAFE_IO: the reactor takes no per-socket lock
    // (Asio locks each socket's state on every operation start and
    // completion otherwise: ~1.7k instructions per request in mutex
    // lock/unlock, callgrind). Safe because every socket of a worker is used
    // by one thread at a time: its own, except acceptors that the control
    // thread opens and binds (no operation started) before handing them over
    // with a post. Posting from other threads stays locked (the scheduler).
    net::io_context ioc_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    net::executor_work_guard<net::io_context::executor_type> work_;
    std::thread thread_;
    std::vector<std::unique_ptr<listener_slot>> listeners_;
    // Appends (worker thread after start) against counters() on the control
    // thread; the worker's own reads of listeners_ take no lock.
    mutable std::mutex listeners_mutex_;
    std::unique_ptr<route_epoch> current_;
    std::vector<std::unique_ptr<route_epoch>> retired_;  // still used by requests in flight
    routing::balancer_state balancer_;
    health::stats_registry& stats_;
    upstream_pool upstreams_;
    std::unique_ptr<net::ssl::context> upstream_tls_;
    std::optional<config::upstream_tls> upstream_tls_for_;  // what upstream_tls_ was made for
    buffer_pool buffers_;
    fast_random random_;
    net::steady_timer sweep_timer_;
    access_log_buffer access_log_;
    net::steady_timer flush_timer_;
    boost::intrusive::list<session, boost::intrusive::constant_time_size<false>> sessions_;
    bool draining_ = false;
    bool accepting_ = true;
    bool stopping_ = false;
    bool running_ = false;  // start() was called: new slots accept at once
};

// Pins the worker's current epoch for the life of one request.
class route_lease {
public:
    explicit route_lease(worker& w) : worker_(w), epoch_(w.current_epoch()) { ++epoch_.users; }
    ~route_lease() { worker_.release(epoch_); }
    route_lease(const route_lease&) = delete;
    route_lease& operator=(const route_lease&) = delete;
    const route_epoch& epoch() const { return epoch_; }

private:
    worker& worker_;
    route_epoch& epoch_;
};

}  // namespace switchyard::proxy
