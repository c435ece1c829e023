// The autopilot: outlier ejection, the guard's evaluations and rollout steps
// on the control thread's tick.

#include "admin/autopilot.hpp"

#include <algorithm>

namespace switchyard::admin {

namespace {

const config::service* find_service(const config::config& cfg, std::string_view name) {
    for (const auto& cs : cfg.services) {
        if (cs.name == name) {
            return &cs;
        }
    }
    return nullptr;
}

}  // namespace

autopilot::autopilot(control_plane& control, health::stats_registry& stats)
    : control_(control),
      stats_(stats),
      timer_(control.get_executor()),
      last_tick_(health::clock::now()) {}

autopilot::~autopilot() { stop(); }

void autopilot::start() {
    if (!stopped_) {
        return;
    }
    stopped_ = false;
    checker_ = std::make_unique<health::active_checker>(
        control_.get_executor(), [this](const health::health_change& change) {
            control_.health_changed(change.target.service, change.target.pool,
                                    change.target.address, change.healthy, change.reason);
        });
    refresh_targets();
    arm();
}

void autopilot::stop() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    timer_.cancel();
    if (checker_) {
        checker_->stop();
    }
}

void autopilot::refresh_targets() {
    if (!checker_) {
        return;
    }
    const config::upstream_tls& tls = control_.current_config().upstream.tls;
    if (!tls.enabled) {
        probe_tls_.reset();
    } else if (!probe_tls_ || probe_tls_->settings != tls) {
        probe_tls_ = health::make_probe_tls(tls);
    }
    std::vector<health::check_target> targets;
    const auto snap = control_.snapshot();
    for (const auto& svc : snap->services()) {
        const config::service* cs = find_service(control_.current_config(), svc.name);
        if (cs == nullptr || !cs->active_health) {
            continue;
        }
        for (const auto& pool : svc.pools) {
            for (const auto& ep : pool.endpoints) {
                health::check_target t;
                t.id = ep.id;
                t.service = svc.name;
                t.pool = pool.name;
                t.address = ep.address;
                t.host = ep.host;
                t.port = ep.port;
                t.health = &control_.ids().health(ep.id);
                t.policy = *cs->active_health;
                t.tls = probe_tls_;
                targets.push_back(std::move(t));
            }
        }
    }
    checker_->update(std::move(targets));
}

void autopilot::arm() {
    timer_.expires_after(tick);
    timer_.async_wait([this](boost::system::error_code ec) {
        if (ec || stopped_) {
            return;
        }
        on_tick();
        arm();
    });
}

void autopilot::on_tick() {
    const auto now = health::clock::now();
    scan_outliers(now);
    for (const auto& cs : control_.current_config().services) {
        service_memory& memory = services_[cs.name];
        if (now < memory.next_evaluation) {
            continue;
        }
        memory.next_evaluation = now + cs.guard_policy.evaluate_every;
        evaluate(cs, memory, now);
        memory.last_evaluation = now;
    }
    last_tick_ = now;
}

void autopilot::scan_outliers(health::clock::time_point now) {
    const auto snap = control_.snapshot();
    for (const auto& svc : snap->services()) {
        const config::service* cs = find_service(control_.current_config(), svc.name);
        if (cs == nullptr) {
            continue;
        }
        for (const auto& pool : svc.pools) {
            for (auto& change : outliers_.scan(pool, control_.ids(), cs->outlier, now)) {
                control_.health_changed(svc.name, pool.name, change.address, !change.ejected,
                                        std::move(change.reason));
            }
        }
    }
}

void autopilot::evaluate(const config::service& cs, service_memory& memory,
                         health::clock::time_point now) {
    const auto snap = control_.snapshot();
    const routing::service* rs = snap->find_service(cs.name);
    const auto state_it = control_.state().services.find(cs.name);
    if (rs == nullptr || state_it == control_.state().services.end()) {
        return;
    }
    const persisted_service& ps = state_it->second;
    const std::uint64_t generation = ps.generation;
    const config::guard& policy = cs.guard_policy;
    const routing::pool* stable = rs->find_pool(ps.stable);
    const switch_watch* watch = control_.watch(cs.name);

    for (auto& [name, judged] : memory.pools) {
        judged.seen = false;
    }
    std::map<std::string, health::decision, std::less<>> verdicts;
    std::optional<std::pair<std::string, health::decision>> breach;
    if (policy.enabled && stable != nullptr) {
        for (const auto& pool : rs->pools) {
            const bool is_stable = pool.name == ps.stable;
            const bool watched = is_stable && watch != nullptr && watch->pool == pool.name;
            if ((is_stable && !watched) || (!is_stable && pool.weight == 0)) {
                continue;
            }
            auto [it, fresh] = memory.pools.try_emplace(pool.name);
            judged_pool& judged = it->second;
            judged.seen = true;
            if (fresh) {
                judged.since = memory.last_evaluation.value_or(last_tick_);
                if (watched) {
                    judged.watch.capture_baseline(watch->baseline);
                }
            }
            const auto span = std::clamp<health::clock::duration>(
                now - judged.since, policy.evaluate_every, policy.window);
            const health::window_summary figures = stats_.summary(pool.id, now, span);
            health::window_summary baseline;
            if (!watched) {
                baseline = stats_.summary(stable->id, now, span);
                // Keep the latest baseline with enough traffic for the times
                // stable has none (a 100 % rollout step).
                if (baseline.requests >= policy.min_requests) {
                    judged.watch.capture_baseline(baseline);
                }
            }
            health::decision d =
                judged.watch.evaluate(pool.has_usable_endpoint(), figures, baseline, policy);
            if (d.result == health::verdict::breach && !breach) {
                breach.emplace(pool.name, d);
            }
            verdicts.emplace(pool.name, std::move(d));
        }
    }
    std::erase_if(memory.pools, [](const auto& entry) { return !entry.second.seen; });
    control_.set_verdicts(cs.name, verdicts);

    if (breach) {
        memory.pools.clear();
        memory.passing_since.reset();
        control_.guard_revert(cs.name, breach->first, breach->second);
        return;
    }

    // Rollout steps.
    if (ps.rollout.state != rollout_state::progressing || !ps.rollout.step) {
        memory.step.reset();
        memory.passing_since.reset();
        return;
    }
    if (memory.step != ps.rollout.step) {
        memory.step = ps.rollout.step;
        memory.passing_since.reset();
    }
    const auto verdict = verdicts.find(ps.rollout.pool);
    const bool passing = !policy.enabled ||
                         (verdict != verdicts.end() && verdict->second.result == health::verdict::pass);
    if (!passing) {
        memory.passing_since.reset();
        return;
    }
    if (!memory.passing_since) {
        memory.passing_since = now;
    }
    if (now - *memory.passing_since >= cs.rollout_policy.step_interval) {
        memory.passing_since.reset();
        control_.advance_rollout(cs.name, generation);
    }
}

}  // namespace switchyard::admin
