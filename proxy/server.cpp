#include "proxy/server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "proxy/worker.hpp"

namespace switchyard::proxy {

namespace {

net::ip::tcp::endpoint resolve_listener(const config::listener& l) {
    boost::system::error_code ec;
    const auto address = net::ip::make_address(l.host, ec);
    if (!ec) {
        return {address, l.port};
    }
    net::io_context ioc;
    net::ip::tcp::resolver resolver(ioc);
    const auto results = resolver.resolve(l.host, std::to_string(l.port), ec);
    if (ec || results.empty()) {
        throw startup_error("listener " + l.name + ": cannot resolve " + l.address + ": " +
                            (ec ? ec.message() : std::string("no address")));
    }
    return *results.begin();
}

// SO_REUSEPORT lets every worker bind the same port, but it would also let a
// second switchyard (same user) silently share it. Binding once without
// SO_REUSEPORT first proves nobody else holds the address.
void probe_exclusive(const config::listener& l, const net::ip::tcp::endpoint& ep) {
    net::io_context ioc;
    net::ip::tcp::acceptor probe(ioc);
    boost::system::error_code ec;
    probe.open(ep.protocol(), ec);
    if (!ec) {
        probe.set_option(net::socket_base::reuse_address(true), ec);
        if (ep.address().is_v6()) {
            probe.set_option(net::ip::v6_only(true), ec);
        }
        probe.bind(ep, ec);
    }
    if (ec == net::error::address_in_use) {
        throw startup_error("listener " + l.name + ": " + l.address + ": port in use");
    }
    if (ec) {
        throw startup_error("listener " + l.name + ": cannot bind " + l.address + ": " + ec.message());
    }
}

}  // namespace

server::server(const config::config& cfg, unsigned workers, health::stats_registry& stats,
               access_log_sink* access_log) {
    if (workers == 0) {
        workers = 1;
    }
    workers_.reserve(workers);
    for (unsigned i = 0; i < workers; ++i) {
        workers_.push_back(std::make_unique<worker>(i, stats, access_log));
    }
    for (std::size_t li = 0; li < cfg.listeners.size(); ++li) {
        const auto& l = cfg.listeners[li];
        auto ep = resolve_listener(l);
        if (ep.port() != 0) {
            probe_exclusive(l, ep);
        }
        for (auto& w : workers_) {
            try {
                w->add_listener(l.name, l.tls.has_value(), ep);
            } catch (const boost::system::system_error& e) {
                if (e.code() == net::error::address_in_use) {
                    throw startup_error("listener " + l.name + ": " + l.address + ": port in use");
                }
                throw startup_error("listener " + l.name + ": cannot bind " + l.address + ": " +
                                    e.code().message());
            }
            // Port 0: the first worker's bind picked the port; the others join it.
            ep.port(w->local_port(li));
        }
        ports_.push_back(ep.port());
        listener_names_.push_back(l.name);
    }
    stats_ = &stats;
}

server::~server() { stop(); }

void server::ensure_stats(const routing::snapshot& snap) {
    for (const auto& svc : snap.services()) {
        for (const auto& p : svc.pools) {
            stats_->ensure(p.id);
        }
    }
}

void server::initialise(std::shared_ptr<const routing::snapshot> snap,
                        std::shared_ptr<const settings> set) {
    ensure_stats(*snap);
    for (auto& w : workers_) {
        w->apply(snap, set);
    }
}

void server::start() {
    if (started_) {
        return;
    }
    started_ = true;
    for (auto& w : workers_) {
        w->start();
    }
}

void server::publish(std::shared_ptr<const routing::snapshot> snap,
                     std::shared_ptr<const settings> set, std::function<void()> done) {
    ensure_stats(*snap);
    if (!started_) {
        for (auto& w : workers_) {
            w->apply(snap, set);
        }
        if (done) {
            done();
        }
        return;
    }
    auto remaining = std::make_shared<std::atomic<unsigned>>(static_cast<unsigned>(workers_.size()));
    auto shared_done = std::make_shared<std::function<void()>>(std::move(done));
    for (auto& w : workers_) {
        net::post(w->context(), [w = w.get(), snap, set, remaining, shared_done] {
            w->apply(snap, set);
            if (remaining->fetch_sub(1, std::memory_order_acq_rel) == 1 && *shared_done) {
                (*shared_done)();
            }
        });
    }
}

void server::stop_accepting() {
    for (auto& w : workers_) {
        net::post(w->context(), [w = w.get()] { w->stop_accepting(); });
    }
}

void server::begin_drain() {
    for (auto& w : workers_) {
        net::post(w->context(), [w = w.get()] { w->begin_drain(); });
    }
}

std::uint64_t server::open_connections() const {
    std::uint64_t n = 0;
    for (const auto& l : listeners()) {
        n += l.open_connections;
    }
    return n;
}

void server::stop() {
    for (auto& w : workers_) {
        w->stop();
    }
}

std::uint16_t server::listener_port(std::size_t index) const { return ports_.at(index); }

std::vector<listener_counters> server::listeners() const {
    std::vector<listener_counters> merged;
    for (std::size_t i = 0; i < listener_names_.size(); ++i) {
        listener_counters c;
        c.name = listener_names_[i];
        merged.push_back(std::move(c));
    }
    for (const auto& w : workers_) {
        const auto per = w->counters();
        for (std::size_t i = 0; i < per.size() && i < merged.size(); ++i) {
            merged[i].open_connections += per[i].open_connections;
            merged[i].accepted_connections += per[i].accepted_connections;
            merged[i].unrouted_requests += per[i].unrouted_requests;
        }
    }
    return merged;
}

}  // namespace switchyard::proxy
