// The control plane: runtime state, reconciliation with the config, changes,
// snapshots and events.

#include "admin/control_plane.hpp"

#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>

namespace switchyard::admin {

namespace json = boost::json;

namespace {

class error_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "switchyard.admin"; }
    std::string message(int value) const override {
        switch (static_cast<error>(value)) {
            case error::unknown_service:
                return "unknown service";
            case error::unknown_pool:
                return "unknown pool";
            case error::invalid_request:
                return "invalid request";
            case error::stale_generation:
                return "generation is not current";
            case error::state_not_saved:
                return "state could not be saved";
            case error::snapshot_failed:
                return "routing snapshot could not be built";
        }
        return "admin error";
    }
};

std::string now_rfc3339() {
    const auto now = std::chrono::system_clock::now();
    const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
    const auto millis =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm utc{};
    ::gmtime_r(&seconds, &utc);
    char text[40];
    const std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
    std::snprintf(text + n, sizeof text - n, ".%03dZ", static_cast<int>(millis));
    return text;
}

json::value nullable(const std::string& text) {
    if (text.empty()) {
        return nullptr;
    }
    return json::value(text);
}

json::object weights_json(const persisted_service& svc) {
    json::object out;
    for (const auto& [name, pool] : svc.pools) {
        out[name] = pool.weight;
    }
    return out;
}

// What a weights or stable event shows before and after.
json::object routing_json(const persisted_service& svc) {
    return json::object{{"weights", weights_json(svc)}, {"stable", svc.stable}};
}

json::object rollout_json(const persisted_rollout& rollout) {
    json::object out{{"state", to_string(rollout.state)},
                     {"pool", nullable(rollout.pool)},
                     {"step", nullptr},
                     {"reason", nullable(rollout.reason)}};
    if (rollout.step) {
        out["step"] = *rollout.step;
    }
    return out;
}

bool all_zero(const persisted_service& svc) {
    for (const auto& [name, pool] : svc.pools) {
        if (pool.weight != 0) {
            return false;
        }
    }
    return true;
}

// The state a service has when nothing is remembered about it.
persisted_service from_config(const config::service& cs) {
    persisted_service out;
    for (const auto& cp : cs.pools) {
        out.pools[cp.name] = persisted_pool{cp.weight, cp.weight};
    }
    out.stable = cs.stable;
    out.config_stable = cs.stable;
    return out;
}

// Only what routing and operators see counts as a change worth a generation;
// the config values last seen are bookkeeping.
bool routing_differs(const persisted_service& a, const persisted_service& b) {
    if (a.stable != b.stable || a.rollout != b.rollout || a.pools.size() != b.pools.size()) {
        return true;
    }
    for (const auto& [name, pool] : a.pools) {
        const auto it = b.pools.find(name);
        if (it == b.pools.end() || it->second.weight != pool.weight) {
            return true;
        }
    }
    return false;
}

bool rollout_active(const persisted_rollout& rollout) {
    return rollout.state == rollout_state::progressing || rollout.state == rollout_state::paused;
}

event make_event(std::string service, std::string kind, std::string actor, json::object before,
                 json::object after, std::string reason) {
    event e;
    e.service = std::move(service);
    e.kind = std::move(kind);
    e.actor = std::move(actor);
    e.before = std::move(before);
    e.after = std::move(after);
    e.reason = std::move(reason);
    return e;
}

}  // namespace

const std::error_category& error_category() {
    static const error_category_impl instance;
    return instance;
}

std::error_code make_error_code(error e) {
    return {static_cast<int>(e), error_category()};
}

unsigned http_status(std::error_code ec) {
    if (ec.category() != error_category()) {
        return 500;
    }
    switch (static_cast<error>(ec.value())) {
        case error::unknown_service:
            return 404;
        case error::unknown_pool:
        case error::invalid_request:
            return 400;
        case error::stale_generation:
            return 412;
        case error::state_not_saved:
        case error::snapshot_failed:
            return 500;
    }
    return 500;
}

json::object to_json(const event& e) {
    json::object out{{"id", e.id},       {"time", e.time},    {"service", e.service},
                     {"kind", e.kind},   {"actor", e.actor},  {"before", e.before},
                     {"after", e.after}, {"reason", e.reason}};
    if (e.details) {
        out["details"] = *e.details;
    }
    return out;
}

namespace {

void append_text(const json::value& value, std::string& out) {
    switch (value.kind()) {
        case json::kind::object: {
            out += '{';
            bool first = true;
            for (const auto& [key, member] : value.get_object()) {
                if (!first) {
                    out += ',';
                }
                first = false;
                out += json::serialize(json::string_view(key));
                out += ':';
                append_text(member, out);
            }
            out += '}';
            return;
        }
        case json::kind::array: {
            out += '[';
            bool first = true;
            for (const auto& element : value.get_array()) {
                if (!first) {
                    out += ',';
                }
                first = false;
                append_text(element, out);
            }
            out += ']';
            return;
        }
        case json::kind::double_: {
            const double d = value.get_double();
            if (!std::isfinite(d)) {
                out += "null";  // JSON has no NaN or infinity
                return;
            }
            char buffer[64];
            const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, d);
            const std::string_view text(buffer, static_cast<std::size_t>(end - buffer));
            out += text;
            // Keep a double recognisable as one for typed readers.
            if (ec == std::errc{} && text.find_first_of(".e") == std::string_view::npos) {
                out += ".0";
            }
            return;
        }
        default:
            out += json::serialize(value);
            return;
    }
}

}  // namespace

std::string to_text(const json::value& value) {
    std::string out;
    append_text(value, out);
    return out;
}

// ---------------------------------------------------------------------------
// reconcile

reconcile_result reconcile(const config::config& cfg, const persisted_state* prior,
                           reconcile_mode mode) {
    reconcile_result out;
    if (prior != nullptr) {
        out.state.last_event_id = prior->last_event_id;
    }
    for (const auto& cs : cfg.services) {
        const persisted_service* old = nullptr;
        if (prior != nullptr) {
            if (const auto it = prior->services.find(cs.name); it != prior->services.end()) {
                old = &it->second;
            }
        }
        if (old == nullptr) {
            out.state.services[cs.name] = from_config(cs);
            continue;
        }

        persisted_service next;
        next.generation = old->generation;
        std::string edits;  // "weight of canary 0 -> 10, stable blue -> green"
        const auto note = [&edits](const std::string& text) {
            edits += edits.empty() ? text : ", " + text;
        };
        bool edited = false;
        for (const auto& cp : cs.pools) {
            persisted_pool pool{cp.weight, cp.weight};
            if (const auto it = old->pools.find(cp.name); it != old->pools.end()) {
                if (cp.weight == it->second.config_weight) {
                    pool.weight = it->second.weight;  // a runtime decision survives
                } else {
                    edited = true;
                    note("weight of " + cp.name + " " + std::to_string(it->second.config_weight) +
                         " -> " + std::to_string(cp.weight));
                }
            }
            next.pools[cp.name] = pool;
        }
        next.config_stable = cs.stable;
        if (cs.stable != old->config_stable) {
            next.stable = cs.stable;
            edited = true;
            note("stable " + old->config_stable + " -> " + cs.stable);
        } else if (next.pools.contains(old->stable)) {
            next.stable = old->stable;
        } else {
            next.stable = cs.stable;
            note("remembered stable " + old->stable + " is no longer in the config");
        }
        if (old->previous != next.stable && next.pools.contains(old->previous)) {
            next.previous = old->previous;
        }
        if (all_zero(next)) {
            // Remembered weights of removed pools cannot carry the traffic;
            // the config's weights are valid by construction.
            for (const auto& cp : cs.pools) {
                next.pools[cp.name].weight = cp.weight;
            }
            note("the remembered weights left no pool with traffic");
        }

        next.rollout = old->rollout;
        std::string rollout_reason;
        if (rollout_active(next.rollout) && !next.pools.contains(next.rollout.pool)) {
            next.rollout = persisted_rollout{};
            rollout_reason =
                "the rollout pool " + old->rollout.pool + " is no longer in the config";
        } else if (edited && next.rollout.state == rollout_state::reverted) {
            // SPEC §5: a config edit of its weights is an operator acting on it.
            next.rollout = persisted_rollout{};
        } else if (next.rollout.state == rollout_state::progressing &&
                   (mode == reconcile_mode::restart || edited)) {
            next.rollout.state = rollout_state::paused;
            rollout_reason = mode == reconcile_mode::restart
                                 ? "the rollout was in progress at restart and resumes paused"
                                 : "paused by an edit of the config file";
            next.rollout.reason = rollout_reason;
        }

        if (routing_differs(next, *old)) {
            next.generation = old->generation + 1;
            if (next.stable != old->stable || weights_json(next) != weights_json(*old)) {
                out.events.push_back(make_event(
                    cs.name, next.stable != old->stable ? "switch" : "weights", "config",
                    routing_json(*old), routing_json(next),
                    edits.empty() ? "the config file changed" : "config file: " + edits));
            }
            if (next.rollout != old->rollout) {
                out.events.push_back(make_event(
                    cs.name, "rollout", mode == reconcile_mode::restart ? "rollout" : "config",
                    json::object{{"rollout", rollout_json(old->rollout)}},
                    json::object{{"rollout", rollout_json(next.rollout)}},
                    rollout_reason.empty() ? "the config file edited the weights"
                                           : rollout_reason));
            }
        }
        out.state.services[cs.name] = std::move(next);
    }
    return out;
}

// ---------------------------------------------------------------------------
// control_plane

control_plane::control_plane(net::any_io_executor control, config::config cfg,
                             control_plane_options options)
    : executor_(std::move(control)), config_(std::move(cfg)), options_(std::move(options)) {
    settings_ =
        std::make_shared<const proxy::settings>(proxy::settings{config_.limit, config_.upstream});

    std::optional<persisted_state> prior;
    if (options_.store != nullptr) {
        load_result loaded = options_.store->load();
        switch (loaded.result) {
            case load_result::status::ok:
                prior = std::move(loaded.state);
                break;
            case load_result::status::empty:
                break;
            case load_result::status::corrupt:
                warn(loaded.error);
                break;
            case load_result::status::failed:
                throw control_plane_error(loaded.error);
        }
    }

    reconcile_result reconciled =
        reconcile(config_, prior ? &*prior : nullptr, reconcile_mode::restart);
    persisted_state next = std::move(reconciled.state);
    const std::string time = now_rfc3339();
    for (event& e : reconciled.events) {
        e.id = ++next.last_event_id;
        e.time = time;
    }

    std::string why;
    snapshot_ = build_snapshot(next, why);
    if (!snapshot_) {
        throw control_plane_error("cannot build the routing table: " + why);
    }
    // Saving at once records the config values seen now, so that the next
    // start compares against them, and fails early on an unwritable path.
    if (options_.store != nullptr && (!prior || *prior != next) &&
        !options_.store->save(next, why)) {
        throw control_plane_error(why);
    }
    state_ = std::move(next);
    for (event& e : reconciled.events) {
        record(std::move(e));
    }
}

control_plane::~control_plane() = default;

void control_plane::warn(std::string_view line) const {
    if (options_.log) {
        options_.log(line);
    } else {
        std::cerr << "switchyard: " << line << '\n';
    }
}

const config::service* control_plane::find_config_service(std::string_view name) const {
    for (const auto& cs : config_.services) {
        if (cs.name == name) {
            return &cs;
        }
    }
    return nullptr;
}

std::shared_ptr<const routing::snapshot> control_plane::build_snapshot(const persisted_state& state,
                                                                       std::string& error) {
    std::map<std::string, routing::service_state, std::less<>> routing_state;
    for (const auto& [name, svc] : state.services) {
        routing::service_state rs;
        for (const auto& [pool_name, pool] : svc.pools) {
            rs.weights[pool_name] = pool.weight;
        }
        rs.stable = svc.stable;
        if (rollout_active(svc.rollout)) {
            rs.rollout_pool = svc.rollout.pool;
        }
        rs.generation = svc.generation;
        routing_state.emplace(name, std::move(rs));
    }
    auto snap = routing::snapshot::build(config_, routing_state, ids_, &error);
    if (snap && options_.stats != nullptr) {
        // Workers index their shards by pool id without a check: every pool a
        // published snapshot names must have its shards first.
        for (const auto& svc : snap->services()) {
            for (const auto& pool : svc.pools) {
                options_.stats->ensure(pool.id);
            }
        }
    }
    return snap;
}

void control_plane::record(event e) {
    events_.push_back(std::move(e));
    while (events_.size() > options_.events_kept) {
        events_.pop_front();
    }
    if (event_listener_) {
        event_listener_(events_.back());
    }
}

std::vector<event> control_plane::events_since(std::uint64_t after) const {
    std::vector<event> out;
    for (const auto& e : events_) {
        if (e.id > after) {
            out.push_back(e);
        }
    }
    return out;
}

std::optional<json::object> control_plane::service_json(std::string_view name) const {
    const config::service* cs = find_config_service(name);
    const auto found = state_.services.find(name);
    if (cs == nullptr || found == state_.services.end()) {
        return std::nullopt;
    }
    const persisted_service& ps = found->second;
    const routing::service* rs = snapshot_ ? snapshot_->find_service(name) : nullptr;
    const auto now = health::clock::now();

    json::object pools;
    for (const auto& cp : cs->pools) {
        const auto weight = ps.pools.find(cp.name);
        const routing::pool* rp = rs != nullptr ? rs->find_pool(cp.name) : nullptr;
        json::array endpoints;
        if (rp != nullptr) {
            for (const auto& ep : rp->endpoints) {
                const bool healthy =
                    ep.health == nullptr || ep.health->healthy.load(std::memory_order_relaxed);
                const bool ejected =
                    ep.health != nullptr && ep.health->ejected.load(std::memory_order_relaxed);
                endpoints.push_back(json::object{
                    {"address", ep.address}, {"healthy", healthy}, {"ejected", ejected}});
            }
        }
        health::window_summary summary;
        if (rp != nullptr && options_.stats != nullptr) {
            summary = options_.stats->summary(rp->id, now, cs->guard_policy.window);
        }
        json::object stats{{"requests", summary.requests},
                           {"errors", summary.errors},
                           {"error_rate", summary.error_rate()},
                           {"p50_ms", summary.percentile_ms(0.50)},
                           {"p95_ms", summary.percentile_ms(0.95)},
                           {"p99_ms", summary.percentile_ms(0.99)},
                           {"rps", summary.rps()}};
        pools[cp.name] =
            json::object{{"weight", weight != ps.pools.end() ? weight->second.weight : 0u},
                         {"endpoints", std::move(endpoints)},
                         {"stats", std::move(stats)}};
    }
    return json::object{{"name", cs->name},
                        {"stable", ps.stable},
                        {"generation", ps.generation},
                        {"pools", std::move(pools)},
                        {"rollout", rollout_json(ps.rollout)},
                        {"guard", json::object{{"pools", json::object{}}}}};
}

json::object control_plane::services_json() const {
    json::array services;
    for (const auto& cs : config_.services) {
        if (auto svc = service_json(cs.name)) {
            services.push_back(std::move(*svc));
        }
    }
    return json::object{{"services", std::move(services)}};
}

void control_plane::complete(change_handler done, change_result result) {
    net::post(executor_, [done = std::move(done), result = std::move(result)]() mutable {
        done(std::move(result));
    });
}

void control_plane::fail(change_handler done, error e, std::string message) {
    change_result result;
    result.error = make_error_code(e);
    result.message = std::move(message);
    complete(std::move(done), std::move(result));
}

void control_plane::set_weights(weights_request request, change_handler done) {
    const auto found = state_.services.find(request.service);
    if (found == state_.services.end()) {
        return fail(std::move(done), error::unknown_service,
                    "unknown service \"" + request.service + "\"");
    }
    const persisted_service& current = found->second;
    if (request.if_match && *request.if_match != current.generation) {
        return fail(std::move(done), error::stale_generation,
                    "generation " + std::to_string(*request.if_match) +
                        " is not current (service \"" + request.service + "\" is at generation " +
                        std::to_string(current.generation) + "); nothing was changed");
    }
    if (request.weights.empty()) {
        return fail(std::move(done), error::invalid_request,
                    "no weights given; name at least one pool");
    }
    persisted_service next = current;
    for (const auto& [pool, weight] : request.weights) {
        const auto it = next.pools.find(pool);
        if (it == next.pools.end()) {
            return fail(std::move(done), error::unknown_pool,
                        "service \"" + request.service + "\" has no pool \"" + pool + "\"");
        }
        if (weight < 0) {
            return fail(std::move(done), error::invalid_request,
                        "the weight of pool \"" + pool + "\" is negative; weights are " +
                            "non-negative integers");
        }
        if (weight > static_cast<std::int64_t>(max_weight)) {
            return fail(std::move(done), error::invalid_request,
                        "the weight of pool \"" + pool + "\" is over the maximum of " +
                            std::to_string(max_weight));
        }
        it->second.weight = static_cast<std::uint32_t>(weight);
    }
    if (all_zero(next)) {
        return fail(std::move(done), error::invalid_request,
                    "the weights would all be zero; at least one pool must carry traffic");
    }
    if (next.rollout.state == rollout_state::progressing) {
        next.rollout.state = rollout_state::paused;  // SPEC §5
        next.rollout.reason = "paused by a manual weights change";
    } else if (next.rollout.state == rollout_state::reverted) {
        next.rollout = persisted_rollout{};  // the operator has acted on it
    }
    if (next == current) {
        change_result result;
        result.service = *service_json(request.service);
        return complete(std::move(done), std::move(result));
    }
    next.generation = current.generation + 1;
    event change = make_event(request.service, "weights", request.actor, routing_json(current),
                              routing_json(next), std::move(request.reason));
    commit(request.service, std::move(next), std::move(change), std::move(done));
}

void control_plane::commit(const std::string& service, persisted_service next,
                           std::optional<event> change, change_handler done) {
    persisted_state candidate = state_;
    candidate.services[service] = std::move(next);
    if (change) {
        change->id = ++candidate.last_event_id;
        change->time = now_rfc3339();
    }
    std::string why;
    auto snap = build_snapshot(candidate, why);
    if (!snap) {
        return fail(std::move(done), error::snapshot_failed,
                    "the routing table could not be built (" + why + "); nothing was changed");
    }
    if (options_.store != nullptr && !options_.store->save(candidate, why)) {
        warn(why);
        return fail(std::move(done), error::state_not_saved, why + "; nothing was changed");
    }
    state_ = std::move(candidate);
    snapshot_ = snap;
    if (change) {
        record(std::move(*change));
    }

    change_result result;
    result.changed = true;
    result.service = *service_json(service);
    if (!options_.publish) {
        return complete(std::move(done), std::move(result));
    }
    // The ack arrives on a worker thread; the answer belongs on the control
    // thread. The tracked executor keeps the control io_context from running
    // out of work while the workers switch.
    auto work = net::prefer(executor_, net::execution::outstanding_work.tracked);
    options_.publish(std::move(snap), nullptr,
                     [work, done = std::move(done), result = std::move(result)]() mutable {
                         net::post(work,
                                   [done = std::move(done), result = std::move(result)]() mutable {
                                       done(std::move(result));
                                   });
                     });
}

}  // namespace switchyard::admin
