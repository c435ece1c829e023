#include "proxy/worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <iostream>

#include "transport/tls_client.hpp"

namespace switchyard::proxy {

namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void bump(std::atomic<std::uint64_t>& counter, std::int64_t delta) {
    // Single writer (this worker): a load and a store, no locked instruction.
    counter.store(counter.load(std::memory_order_relaxed) + static_cast<std::uint64_t>(delta),
                  std::memory_order_relaxed);
}
}  // namespace

fast_random::fast_random(std::uint64_t seed) {
    for (auto& s : s_) {
        s = splitmix64(seed);
    }
}

std::uint64_t fast_random::operator()() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

void worker::refresh_upstream_tls(const config::upstream_tls& cfg) {
    if (upstream_tls_for_ != cfg) {
        // Connections made with the old context keep its SSL_CTX alive
        // (OpenSSL counts references) until they close.
        upstream_tls_.reset();
        upstream_tls_for_ = cfg;
        try {
            upstream_tls_ = transport::make_client_context(cfg);
        } catch (const std::exception& e) {
            std::cerr << "switchyard: worker " << index_
                      << ": TLS to upstreams is unusable, connections to upstreams fail: " << e.what()
                      << "\n";
        }
    }
}

buffer_pool::buffer buffer_pool::acquire() {
    if (free_.empty()) {
        return std::make_unique_for_overwrite<char[]>(buffer_size);
    }
    auto b = std::move(free_.back());
    free_.pop_back();
    low_water_ = std::min(low_water_, free_.size());
    return b;
}

void buffer_pool::release(buffer b) {
    if (b && free_.size() < max_free) {
        free_.push_back(std::move(b));
    }
}

void buffer_pool::trim() {
    // The most recently released are at the back and reused first: the
    // `low_water_` at the front were not touched since the last trim.
    free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(low_water_));
    low_water_ = free_.size();
}

worker::worker(unsigned index, health::stats_registry& stats, access_log_sink* access_log)
    : index_(index),
      work_(net::make_work_guard(ioc_)),
      stats_(stats),
      random_(std::random_device{}() ^ (std::uint64_t{index} << 32)),
      sweep_timer_(ioc_),
      access_log_(access_log),
      flush_timer_(ioc_) {}

worker::~worker() { stop(); }

std::unique_ptr<listener_slot> worker::bind_listener(
    const std::string& name, std::unique_ptr<boost::asio::ssl::context> tls_context,
    const net::ip::tcp::endpoint& endpoint) {
    // Opening registers the socket with this worker's reactor, which is
    // thread-safe; from here on only the worker thread touches the slot.
    auto slot = std::make_unique<listener_slot>(ioc_);
    slot->name = name;
    slot->tls = tls_context != nullptr;
    slot->tls_context = std::move(tls_context);
    auto& acceptor = slot->acceptor;
    acceptor.open(endpoint.protocol());
    acceptor.set_option(net::socket_base::reuse_address(true));
    const int one = 1;
    if (::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        throw boost::system::system_error(errno, boost::system::system_category(), "SO_REUSEPORT");
    }
    if (endpoint.address().is_v6()) {
        acceptor.set_option(net::ip::v6_only(true));
    }
    acceptor.bind(endpoint);
    acceptor.listen(net::socket_base::max_listen_connections);
    return slot;
}

void worker::add_listener(std::unique_ptr<listener_slot> slot) {
    std::lock_guard lock(listeners_mutex_);
    listeners_.push_back(std::move(slot));
}

std::uint16_t worker::local_port(std::size_t listener) const {
    std::lock_guard lock(listeners_mutex_);
    return listeners_.at(listener)->acceptor.local_endpoint().port();
}

void worker::spawn_accept_loop(std::size_t listener) {
    net::co_spawn(ioc_, accept_loop(listener), [](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                std::cerr << "switchyard: accept loop failed: " << ex.what() << "\n";
            }
        }
    });
}

void worker::start() {
    running_ = true;
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
        if (!listeners_[i]->closed) {
            spawn_accept_loop(i);
        }
    }
    sweep_idle();
    if (access_log_.enabled()) {
        flush_access_log();
    }
    thread_ = std::thread([this] {
        // A bug that throws out of a handler must not take the worker down
        // with every connection it serves: log it and keep running.
        for (;;) {
            try {
                ioc_.run();
                break;
            } catch (const std::exception& e) {
                std::cerr << "switchyard: worker " << index_ << ": unexpected exception: " << e.what()
                          << "\n";
            }
        }
    });
}

void worker::stop() {
    if (!thread_.joinable()) {
        return;
    }
    // Close everything on the worker's own thread, then let run() return by
    // itself once the last coroutine has unwound: every frame is destroyed
    // while the members it points to are still alive.
    net::post(ioc_, [this] {
        stop_accepting();
        for (auto& s : sessions_) {
            s.abort();
        }
        stopping_ = true;
        sweep_timer_.cancel();
        flush_timer_.cancel();
        upstreams_.clear();
        work_.reset();
    });
    thread_.join();
    // Every session has unwound and logged: nothing is lost at exit.
    access_log_.flush();
}

void worker::apply(std::shared_ptr<const routing::snapshot> snap,
                   std::shared_ptr<const settings> set) {
    auto next = std::make_unique<route_epoch>();
    next->snap = std::move(snap);
    next->set = set ? std::move(set) : (current_ ? current_->set : nullptr);
    if (next->set && next->set->upstream.tls.enabled) {
        refresh_upstream_tls(next->set->upstream.tls);
    }
    if (current_) {
        if (current_->users == 0) {
            current_.reset();
        } else {
            retired_.push_back(std::move(current_));
        }
    }
    current_ = std::move(next);
}

void worker::release(route_epoch& epoch) {
    if (--epoch.users != 0 || &epoch == current_.get()) {
        return;
    }
    std::erase_if(retired_, [&](const std::unique_ptr<route_epoch>& e) { return e.get() == &epoch; });
}

void worker::stop_accepting() {
    accepting_ = false;
    for (auto& l : listeners_) {
        boost::system::error_code ec;
        l->closed = true;
        l->acceptor.close(ec);
    }
}

void worker::change_listeners(listener_change change) {
    for (auto& [index, context] : change.contexts) {
        listener_slot& slot = *listeners_.at(index);
        if (slot.closed) {
            continue;
        }
        // A session reads tls_context when it starts; with none open on this
        // slot, no session can hold a retired one any more.
        if (slot.open.load(std::memory_order_relaxed) == 0) {
            slot.retired_tls.clear();
        }
        slot.retired_tls.push_back(std::move(slot.tls_context));
        slot.tls_context = std::move(context);
    }
    const std::size_t first_new = listeners_.size();
    {
        std::lock_guard lock(listeners_mutex_);
        for (auto& slot : change.added) {
            listeners_.push_back(std::move(slot));
        }
    }
    // The new sockets have been listening (queueing) since they were bound:
    // start accepting on them before the old ones close.
    for (std::size_t i = first_new; i < listeners_.size(); ++i) {
        if (!accepting_) {  // draining: a listener added now never opens
            boost::system::error_code ec;
            listeners_[i]->closed = true;
            listeners_[i]->acceptor.close(ec);
        } else if (running_) {
            spawn_accept_loop(i);
        }  // else start() spawns it
    }
    for (const std::size_t index : change.closed) {
        listener_slot& slot = *listeners_.at(index);
        boost::system::error_code ec;
        slot.closed = true;
        slot.acceptor.close(ec);
    }
}

void worker::begin_drain() {
    draining_ = true;
    for (auto& s : sessions_) {
        s.drain();
    }
}

void worker::session_started(session* s) { sessions_.push_back(*s); }

void worker::session_ended(session*) {
    // The intrusive hook unlinks itself when the session is destroyed.
}

std::vector<listener_counters> worker::counters() const {
    std::lock_guard lock(listeners_mutex_);
    std::vector<listener_counters> out;
    out.reserve(listeners_.size());
    for (const auto& l : listeners_) {
        listener_counters c;
        c.name = l->name;
        c.open_connections = l->open.load(std::memory_order_relaxed);
        c.accepted_connections = l->accepted.load(std::memory_order_relaxed);
        c.unrouted_requests = l->unrouted.load(std::memory_order_relaxed);
        out.push_back(std::move(c));
    }
    return out;
}

namespace {
awaitable<void> run_session(worker& w, client_socket socket, std::size_t listener) {
    auto& slot = w.listener(listener);
    bump(slot.open, 1);
    struct open_guard {
        listener_slot& slot;
        ~open_guard() { bump(slot.open, -1); }
    } guard{slot};
    session s(w, std::move(socket), listener);
    co_await s.run();
}
}  // namespace

awaitable<void> worker::accept_loop(std::size_t index) {
    auto& slot = *listeners_[index];
    net::steady_timer backoff(ioc_);
    while (accepting_ && !slot.closed) {
        const auto& limits = current_->set->limit;
        if (limits.max_connections != 0 &&
            slot.open.load(std::memory_order_relaxed) >= limits.max_connections) {
            // At the cap: stop accepting (the kernel backlog holds the rest)
            // and look again shortly; connections being served go on.
            backoff.expires_after(std::chrono::milliseconds(10));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        // The socket on this worker's own executor type (session.hpp).
        auto [ec, socket] = co_await slot.acceptor.async_accept(ioc_, use_tuple);
        if (ec) {
            if (ec == net::error::operation_aborted || !slot.acceptor.is_open()) {
                co_return;
            }
            // EMFILE/ENFILE/ENOBUFS: back off instead of spinning on a
            // listener that stays readable.
            backoff.expires_after(std::chrono::milliseconds(50));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        bump(slot.accepted, 1);
        net::co_spawn(ioc_, run_session(*this, std::move(socket), index), [](std::exception_ptr e) {
            if (e) {
                try {
                    std::rethrow_exception(e);
                } catch (const std::exception& ex) {
                    std::cerr << "switchyard: connection closed by an unexpected error: " << ex.what()
                              << "\n";
                }
            }
        });
    }
}

void worker::sweep_idle() {
    sweep_timer_.expires_after(std::chrono::seconds(2));
    sweep_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec) {
            return;
        }
        const auto idle = current_ ? current_->set->limit.idle_timeout : std::chrono::seconds(60);
        upstreams_.sweep(idle);
        buffers_.trim();
        sweep_idle();
    });
}

void worker::flush_access_log() {
    // A quiet worker's last lines reach the file within 250 ms.
    flush_timer_.expires_after(std::chrono::milliseconds(250));
    flush_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || stopping_) {
            return;
        }
        access_log_.flush();
        flush_access_log();
    });
}

}  // namespace switchyard::proxy
