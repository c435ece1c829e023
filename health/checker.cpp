#include "health/checker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <limits>
#include <random>
#include <utility>

#include "health/probe.hpp"

namespace switchyard::health {

namespace net = boost::asio;
namespace beast = boost::beast;

namespace detail {

struct check_state {
    check_state(const net::any_io_executor& ex, check_target t,
                std::shared_ptr<const active_checker::change_handler> h, std::uint64_t seed)
        : target(std::move(t)), timer(ex), handler(std::move(h)), rng(seed) {}

    check_target target;
    health_counter counter;
    probe_connection stream;          // kept alive across probes
    std::shared_ptr<const probe_tls> stream_tls;  // what `stream` was made with
    net::steady_timer timer;          // the wait between probes
    net::cancellation_signal cancel;  // bound to the coroutine (co_spawn)
    std::shared_ptr<const active_checker::change_handler> handler;
    std::mt19937_64 rng;   // jitter
    bool stopped = false;  // set by halt(); the coroutine ends at its next resumption
    bool running = false;  // the coroutine's body has not returned yet
};

}  // namespace detail

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

void bump(unsigned& n) {
    if (n < std::numeric_limits<unsigned>::max()) {
        ++n;
    }
}

std::string checks(unsigned n) {
    return std::to_string(n) + (n == 1 ? " health check" : " health checks");
}

std::string failed_reason(unsigned failures, const probe_result& r, const std::string& path) {
    const std::string last = r.error.empty() ? "status " + std::to_string(r.status) : r.error;
    return checks(failures) + " failed in a row (last: " + last + " on GET " + path + ")";
}

// `interval` plus up to 10 % so that checks started together drift apart.
std::chrono::milliseconds next_wait(std::chrono::milliseconds interval, std::mt19937_64& rng) {
    const auto spread = std::max<std::chrono::milliseconds::rep>(interval.count() / 10, 0);
    std::uniform_int_distribution<std::chrono::milliseconds::rep> jitter(0, spread);
    return interval + std::chrono::milliseconds(jitter(rng));
}

// Stops one target's coroutine: it sees `stopped` at its next resumption,
// which the closed stream, the cancelled timer and the cancellation make
// immediate. The cancellation (it only matters to a probe resolving a name)
// is emitted on the executor's thread, holding the state: Asio forwards it
// into the coroutine through a handler that would otherwise be posted with
// a raw pointer into the state's signal.
void halt(const std::shared_ptr<detail::check_state>& st) {
    st->stopped = true;
    st->timer.cancel();
    if (st->stream) {
        st->stream->close();
    }
    net::dispatch(st->timer.get_executor(), [st] {
        if (st->running) {
            st->cancel.emit(net::cancellation_type::terminal);
        }
    });
}

net::awaitable<void> run_checks(std::shared_ptr<detail::check_state> st) {
    // Cancellation (stop/update) must surface as error values, as everywhere
    // else in a probe, not as exceptions out of co_await.
    co_await net::this_coro::throw_if_cancelled(false);
    while (!st->stopped) {
        // A copy: update() may replace the policy while the probe runs.
        const config::health_check policy = st->target.policy;
        if (st->stream_tls != st->target.tls) {
            // TLS turned on, off or changed by a reload: a new connection.
            if (st->stream) {
                st->stream->close();
            }
            st->stream.reset();
            st->stream_tls = st->target.tls;
        }
        const probe_result result = co_await probe(st->target.host, st->target.port, policy.path,
                                                   policy.timeout, &st->stream, st->stream_tls);
        if (st->stopped) {
            break;
        }
        const bool ok = result.error.empty() && policy.expected_status.contains(result.status);
        if (st->counter.observe(ok, policy)) {
            if (st->target.health != nullptr) {
                st->target.health->healthy.store(st->counter.healthy, std::memory_order_relaxed);
            }
            health_change change{st->target, st->counter.healthy,
                                 st->counter.healthy
                                     ? checks(st->counter.successes) + " passed in a row"
                                     : failed_reason(st->counter.failures, result, policy.path)};
            const auto handler = st->handler;
            if (*handler) {
                (*handler)(change);
            }
            if (st->stopped) {
                break;
            }
        }
        st->timer.expires_after(next_wait(policy.interval, st->rng));
        co_await st->timer.async_wait(use_tuple);
    }
    st->running = false;
}

}  // namespace

bool health_counter::observe(bool ok, const config::health_check& policy) {
    if (ok) {
        bump(successes);
        failures = 0;
        if (!healthy && successes >= std::max<std::uint32_t>(policy.healthy_threshold, 1)) {
            healthy = true;
            return true;
        }
    } else {
        bump(failures);
        successes = 0;
        if (healthy && failures >= std::max<std::uint32_t>(policy.unhealthy_threshold, 1)) {
            healthy = false;
            return true;
        }
    }
    return false;
}

active_checker::active_checker(net::any_io_executor ex, change_handler on_change)
    : ex_(std::move(ex)),
      on_change_(std::make_shared<const change_handler>(std::move(on_change))),
      seed_(std::random_device{}()) {}

active_checker::~active_checker() {
    stop();
}

void active_checker::update(std::vector<check_target> targets) {
    if (stopped_) {
        return;
    }
    std::unordered_map<routing::endpoint_id, std::shared_ptr<detail::check_state>> next;
    std::vector<std::shared_ptr<detail::check_state>> started;
    for (auto& t : targets) {
        if (next.contains(t.id)) {
            continue;
        }
        const routing::endpoint_id id = t.id;
        if (auto it = targets_.find(id); it != targets_.end()) {
            auto st = std::move(it->second);
            targets_.erase(it);
            const bool interval_changed = st->target.policy.interval != t.policy.interval;
            st->target = std::move(t);
            if (interval_changed) {
                // Wake a waiting coroutine: it checks now and then keeps the
                // new interval, instead of finishing the old wait.
                st->timer.cancel();
            }
            next.emplace(id, std::move(st));
            continue;
        }
        if (t.health != nullptr) {
            t.health->healthy.store(true, std::memory_order_relaxed);
        }
        auto st = std::make_shared<detail::check_state>(ex_, std::move(t), on_change_, seed_++);
        started.push_back(st);
        next.emplace(id, std::move(st));
    }
    for (auto& [id, st] : targets_) {
        halt(st);
        if (st->target.health != nullptr) {
            st->target.health->healthy.store(true, std::memory_order_relaxed);
        }
    }
    targets_ = std::move(next);
    for (auto& st : started) {
        st->running = true;
        net::co_spawn(ex_, run_checks(st),
                      net::bind_cancellation_slot(st->cancel.slot(), net::detached));
    }
}

void active_checker::stop() {
    stopped_ = true;
    for (auto& [id, st] : targets_) {
        halt(st);
    }
    targets_.clear();
}

}  // namespace switchyard::health
