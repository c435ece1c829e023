#include "proxy/server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "proxy/tls.hpp"
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

std::string endpoint_text(const net::ip::tcp::endpoint& ep) {
    return ep.address().is_v6() ? "[" + ep.address().to_string() + "]:" + std::to_string(ep.port())
                                : ep.address().to_string() + ":" + std::to_string(ep.port());
}

bool same_tls_kind(const config::listener& a, const config::listener& b) {
    return a.tls.has_value() == b.tls.has_value();
}

}  // namespace

// What prepare_listeners bound and built, by worker, until commit_listeners
// hands it over (or its destruction closes it).
struct listener_plan {
    std::vector<listener_change> per_worker;
    std::vector<server::slot_record> added;  // slot records, in slot order after the current ones
    std::vector<std::size_t> closed;
    std::vector<std::pair<std::size_t, config::listener>> kept;  // slot, its new config
    std::vector<std::size_t> active;
    std::size_t first_slot = 0;
};

server::server(const config::config& cfg, unsigned workers, health::stats_registry& stats,
               access_log_sink* access_log) {
    if (workers == 0) {
        workers = 1;
    }
    workers_.reserve(workers);
    for (unsigned i = 0; i < workers; ++i) {
        workers_.push_back(std::make_unique<worker>(i, stats, access_log));
    }
    std::string summary;
    commit_listeners(prepare_listeners(cfg.listeners, summary));
    stats_ = &stats;
}

const std::array<unsigned char, 80>& server::ticket_keys_for(const std::string& listener) {
    auto it = ticket_keys_.find(listener);
    if (it == ticket_keys_.end()) {
        it = ticket_keys_.emplace(listener, make_ticket_keys()).first;
    }
    return it->second;
}

std::shared_ptr<listener_plan> server::prepare_listeners(const std::vector<config::listener>& next,
                                                         std::string& summary) {
    auto plan = std::make_shared<listener_plan>();
    plan->per_worker.resize(workers_.size());
    const auto note = [&summary](const std::string& what) {
        summary += summary.empty() ? what : "; " + what;
    };
    // slots_ and active_ change only on this (the control) thread: reading
    // them here needs no lock.
    plan->first_slot = slots_.size();
    std::vector<bool> kept(slots_.size(), false);
    std::vector<std::string> held;  // addresses our open listeners hold
    for (const std::size_t s : active_) {
        held.push_back(slots_[s].bound);
    }
    for (const config::listener& l : next) {
        auto same = std::find_if(active_.begin(), active_.end(), [&](std::size_t s) {
            const config::listener& now = slots_[s].cfg;
            return !kept[s] && now.name == l.name && now.address == l.address &&
                   same_tls_kind(now, l);
        });
        if (same != active_.end()) {
            kept[*same] = true;
            plan->active.push_back(*same);
            plan->kept.emplace_back(*same, l);
            if (l.tls) {
                for (std::size_t w = 0; w < workers_.size(); ++w) {
                    try {
                        plan->per_worker[w].contexts.emplace_back(
                            *same, make_tls_context(l, ticket_keys_for(l.name)));
                    } catch (const tls_error& e) {
                        throw startup_error(e.what());
                    }
                }
            }
            continue;
        }
        auto ep = resolve_listener(l);
        const bool ours = std::find(held.begin(), held.end(), endpoint_text(ep)) != held.end();
        if (ep.port() != 0 && !ours) {
            probe_exclusive(l, ep);
        }
        for (std::size_t w = 0; w < workers_.size(); ++w) {
            std::unique_ptr<boost::asio::ssl::context> context;
            if (l.tls) {
                try {
                    context = make_tls_context(l, ticket_keys_for(l.name));
                } catch (const tls_error& e) {
                    throw startup_error(e.what());
                }
            }
            try {
                plan->per_worker[w].added.push_back(
                    workers_[w]->bind_listener(l.name, std::move(context), ep));
            } catch (const boost::system::system_error& e) {
                if (e.code() == net::error::address_in_use) {
                    throw startup_error("listener " + l.name + ": " + l.address + ": port in use");
                }
                throw startup_error("listener " + l.name + ": cannot bind " + l.address + ": " +
                                    e.code().message());
            }
            // Port 0: the first worker's bind picked the port; the others join it.
            ep.port(plan->per_worker[w].added.back()->acceptor.local_endpoint().port());
        }
        slot_record record{l, endpoint_text(ep), ep.port(), false};
        const bool moved = std::any_of(active_.begin(), active_.end(), [&](std::size_t s) {
            return slots_[s].cfg.name == l.name;
        });
        note("listener " + l.name + (moved ? " moved to " : " added on ") + record.bound +
             (l.tls ? " (TLS)" : ""));
        plan->active.push_back(plan->first_slot + plan->added.size());
        plan->added.push_back(std::move(record));
    }
    for (const std::size_t s : active_) {
        if (kept[s]) {
            continue;
        }
        plan->closed.push_back(s);
        for (auto& change : plan->per_worker) {
            change.closed.push_back(s);
        }
        const bool renamed_or_moved = std::any_of(next.begin(), next.end(), [&](const auto& l) {
            return l.name == slots_[s].cfg.name;
        });
        if (!renamed_or_moved) {
            note("listener " + slots_[s].cfg.name + " on " + slots_[s].bound + " removed");
        }
    }
    return plan;
}

void server::commit_listeners(std::shared_ptr<listener_plan> plan) {
    {
        std::lock_guard lock(mutex_);
        if (plan->first_slot != slots_.size()) {
            throw std::logic_error("listener plan prepared against other listeners");
        }
        for (auto& record : plan->added) {
            slots_.push_back(std::move(record));
        }
        for (const std::size_t s : plan->closed) {
            slots_[s].closed = true;
        }
        for (auto& [s, cfg] : plan->kept) {
            slots_[s].cfg = std::move(cfg);
        }
        active_ = std::move(plan->active);
    }
    for (std::size_t w = 0; w < workers_.size(); ++w) {
        worker* target = workers_[w].get();
        if (!started_) {
            if (plan->closed.empty() && plan->per_worker[w].contexts.empty()) {
                for (auto& slot : plan->per_worker[w].added) {
                    target->add_listener(std::move(slot));
                }
            } else {
                target->change_listeners(std::move(plan->per_worker[w]));
            }
            continue;
        }
        net::post(target->context(), [target, change = std::move(plan->per_worker[w])]() mutable {
            target->change_listeners(std::move(change));
        });
    }
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

std::uint16_t server::listener_port(std::size_t index) const {
    std::lock_guard lock(mutex_);
    return slots_.at(active_.at(index)).port;
}

std::vector<listener_counters> server::listeners() const {
    std::lock_guard lock(mutex_);
    std::vector<listener_counters> per_slot(slots_.size());
    for (const auto& w : workers_) {
        const auto counts = w->counters();
        // A worker may not have run the latest change yet: fewer slots.
        for (std::size_t i = 0; i < counts.size() && i < per_slot.size(); ++i) {
            per_slot[i].open_connections += counts[i].open_connections;
            per_slot[i].accepted_connections += counts[i].accepted_connections;
            per_slot[i].unrouted_requests += counts[i].unrouted_requests;
        }
    }
    std::vector<listener_counters> merged;
    const auto entry = [&merged](const std::string& name) -> listener_counters* {
        for (auto& m : merged) {
            if (m.name == name) {
                return &m;
            }
        }
        return nullptr;
    };
    for (const std::size_t s : active_) {
        if (entry(slots_[s].cfg.name) == nullptr) {
            merged.push_back(listener_counters{slots_[s].cfg.name});
        }
    }
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        listener_counters* m = entry(slots_[i].cfg.name);
        if (m == nullptr) {
            if (per_slot[i].open_connections == 0) {
                continue;  // removed, and its last connection is gone
            }
            merged.push_back(listener_counters{slots_[i].cfg.name});
            m = &merged.back();
        }
        m->open_connections += per_slot[i].open_connections;
        m->accepted_connections += per_slot[i].accepted_connections;
        m->unrouted_requests += per_slot[i].unrouted_requests;
    }
    return merged;
}

}  // namespace switchyard::proxy
