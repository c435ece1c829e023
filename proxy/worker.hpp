#pragma once
// One worker: one thread, one io_context{1}, one SO_REUSEPORT acceptor per
// listener, and everything a request touches (STYLE rule 1). Private to the
// proxy module; server.hpp is the public face.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/list.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
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
class buffer_pool {
public:
    static constexpr std::size_t buffer_size = 64 * 1024;
    using buffer = std::unique_ptr<char[]>;
    buffer acquire();
    void release(buffer b);

private:
    std::vector<buffer> free_;
};

struct listener_slot {
    std::string name;
    bool tls = false;
    net::ip::tcp::acceptor acceptor;
    // Written by this worker only, read by the control thread.
    std::atomic<std::uint64_t> open{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> unrouted{0};

    explicit listener_slot(net::io_context& ioc) : acceptor(ioc) {}
};

class worker {
public:
    // `access_log` may be null (no access log); it outlives the worker.
    worker(unsigned index, health::stats_registry& stats, access_log_sink* access_log = nullptr);
    ~worker();
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    // Control thread, before start(): adds a listener bound to `endpoint`
    // with SO_REUSEPORT. Throws boost::system::system_error.
    void add_listener(const std::string& name, bool tls, const net::ip::tcp::endpoint& endpoint);
    std::uint16_t local_port(std::size_t listener) const;

    void start();
    void stop();

    // Runs on this worker's thread (post from anywhere).
    void apply(std::shared_ptr<const routing::snapshot> snap, std::shared_ptr<const settings> set);
    void stop_accepting();
    void begin_drain();

    net::io_context& context() { return ioc_; }
    unsigned index() const { return index_; }

    // --- Worker thread only, used by sessions. ---
    route_epoch& current_epoch() { return *current_; }
    void release(route_epoch& epoch);
    const settings& config() const { return *current_->set; }
    routing::balancer_state& balancer() { return balancer_; }
    health::pool_shard& stats(routing::pool_id id) { return stats_.shard(id, index_); }
    upstream_pool& upstreams() { return upstreams_; }
    buffer_pool& buffers() { return buffers_; }
    fast_random& random() { return random_; }
    bool draining() const { return draining_; }
    listener_slot& listener(std::size_t i) { return *listeners_[i]; }
    access_log_buffer& access_log() { return access_log_; }

    void session_started(session* s);
    void session_ended(session* s);

    // --- Any thread (relaxed reads of worker-written counters). ---
    std::vector<listener_counters> counters() const;

private:
    net::awaitable<void> accept_loop(std::size_t listener);
    void sweep_idle();
    void flush_access_log();

    unsigned index_;
    net::io_context ioc_{1};
    net::executor_work_guard<net::io_context::executor_type> work_;
    std::thread thread_;
    std::vector<std::unique_ptr<listener_slot>> listeners_;
    std::unique_ptr<route_epoch> current_;
    std::vector<std::unique_ptr<route_epoch>> retired_;  // still used by requests in flight
    routing::balancer_state balancer_;
    health::stats_registry& stats_;
    upstream_pool upstreams_;
    buffer_pool buffers_;
    fast_random random_;
    net::steady_timer sweep_timer_;
    access_log_buffer access_log_;
    net::steady_timer flush_timer_;
    boost::intrusive::list<session, boost::intrusive::constant_time_size<false>> sessions_;
    bool draining_ = false;
    bool accepting_ = true;
    bool stopping_ = false;
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
