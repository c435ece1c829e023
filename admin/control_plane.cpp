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
#include <fstream>
#include <iostream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "health/probe.hpp"

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
            case error::conflict:
                return "conflict with the service's state";
            case error::invalid_config:
                return "the config file is invalid";
            case error::listener_failed:
                return "a listener could not be bound";
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

json::object figures_json(const health::pool_figures& f) {
    return json::object{{"requests", f.requests},
                        {"error_rate", f.error_rate},
                        {"p95_ms", f.p95_ms}};
}

// The decision record (SPEC §6: the numbers behind a revert).
json::object decision_json(const std::string& pool, const health::decision& d) {
    return json::object{{"pool", pool},
                        {"verdict", health::to_string(d.result)},
                        {"metric", d.metric},
                        {"pool_value", d.pool_value},
                        {"baseline_value", d.baseline_value},
                        {"threshold", d.threshold},
                        {"pool_requests", d.pool_requests},
                        {"baseline_requests", d.baseline_requests},
                        {"statistic", d.statistic},
                        {"critical", d.critical},
                        {"lower_bound", d.lower_bound},
                        {"confidence", d.confidence},
                        {"test", d.test},
                        {"baseline_pinned", d.baseline_pinned},
                        {"summary", d.summary()}};
}

// The non-stable pool with the most weight (ties: the first by name); empty
// when no non-stable pool has weight.
std::string heaviest_candidate(const persisted_service& svc) {
    std::string best;
    std::uint32_t best_weight = 0;
    for (const auto& [name, pool] : svc.pools) {
        if (name != svc.stable && pool.weight > best_weight) {
            best = name;
            best_weight = pool.weight;
        }
    }
    return best;
}

void set_only(persisted_service& svc, const std::string& pool) {
    for (auto& [name, p] : svc.pools) {
        p.weight = name == pool ? 100 : 0;
    }
}

}  // namespace

std::optional<rollout_action> parse_rollout_action(std::string_view text) {
    if (text == "start") return rollout_action::start;
    if (text == "pause") return rollout_action::pause;
    if (text == "resume") return rollout_action::resume;
    if (text == "abort") return rollout_action::abort;
    return std::nullopt;
}

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
        case error::invalid_config:
            return 400;
        case error::state_not_saved:
        case error::snapshot_failed:
        case error::listener_failed:
            return 500;
        case error::conflict:
            return 409;
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
    snapshot_ = build_snapshot(config_, next, why);
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

std::shared_ptr<const routing::snapshot> control_plane::build_snapshot(
    const config::config& cfg, const persisted_state& state, std::string& error) {
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
    auto snap = routing::snapshot::build(cfg, routing_state, ids_, &error);
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
    if (!options_.events_file.empty()) {
        // One JSON line per event, appended and flushed before the change
        // answers; a failure is logged and does not undo the change (the
        // state file is the record that must hold).
        std::ofstream out(options_.events_file, std::ios::app);
        out << to_text(to_json(e)) << '\n';
        out.flush();
        if (!out) {
            warn("cannot append to events_file " + options_.events_file);
        }
    }
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
    json::object guard_pools;
    if (const auto v = verdicts_.find(name); v != verdicts_.end()) {
        for (const auto& [pool_name, d] : v->second) {
            guard_pools[pool_name] = json::object{{"verdict", health::to_string(d.result)},
                                                  {"requests", d.pool.requests},
                                                  {"error_rate", d.pool.error_rate},
                                                  {"p95_ms", d.pool.p95_ms},
                                                  {"baseline", figures_json(d.baseline)},
                                                  {"summary", d.summary()}};
        }
    }
    json::object guard{{"enabled", cs->guard_policy.enabled}, {"pools", std::move(guard_pools)}};
    if (const auto b = last_breach_.find(name); b != last_breach_.end()) {
        guard["decision"] = b->second;
    }
    if (const switch_watch* w = watch(name)) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            w->until - health::clock::now());
        guard["post_switch_watch"] =
            json::object{{"pool", w->pool},
                         {"previous", w->previous},
                         {"seconds_left", std::max<double>(0.0, double(left.count()) / 1000.0)}};
    }
    return json::object{{"name", cs->name},
                        {"stable", ps.stable},
                        {"previous", nullable(ps.previous)},
                        {"generation", ps.generation},
                        {"pools", std::move(pools)},
                        {"rollout", rollout_json(ps.rollout)},
                        {"guard", std::move(guard)}};
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
    if (next.rollout != current.rollout) {
        change.before["rollout"] = rollout_json(current.rollout);
        change.after["rollout"] = rollout_json(next.rollout);
    }
    end_watch(request.service);  // the operator has taken over
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
    auto snap = build_snapshot(config_, candidate, why);
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


// ---------------------------------------------------------------------------
// switch, promote, rollback, rollout

const persisted_service* control_plane::current_for(const std::string& service,
                                                    const std::optional<std::uint64_t>& if_match,
                                                    change_handler& done) {
    const auto found = state_.services.find(service);
    if (found == state_.services.end()) {
        fail(std::move(done), error::unknown_service, "unknown service \"" + service + "\"");
        return nullptr;
    }
    if (if_match && *if_match != found->second.generation) {
        fail(std::move(done), error::stale_generation,
             "generation " + std::to_string(*if_match) + " is not current (service \"" +
                 service + "\" is at generation " + std::to_string(found->second.generation) +
                 "); nothing was changed");
        return nullptr;
    }
    return &found->second;
}

void control_plane::switch_to(switch_request request, change_handler done) {
    const persisted_service* current = current_for(request.service, request.if_match, done);
    if (current == nullptr) {
        return;
    }
    if (request.to.empty()) {
        return fail(std::move(done), error::invalid_request,
                    "name the pool to switch to, like {\"to\":\"green\"}");
    }
    if (!current->pools.contains(request.to)) {
        return fail(std::move(done), error::unknown_pool,
                    "service \"" + request.service + "\" has no pool \"" + request.to + "\"");
    }
    smoke_then_switch(std::move(request.service), std::move(request.to), "switch",
                      request.if_match, std::move(request.actor), std::move(request.reason), true,
                      std::move(done));
}

void control_plane::promote(promote_request request, change_handler done) {
    const persisted_service* current = current_for(request.service, request.if_match, done);
    if (current == nullptr) {
        return;
    }
    std::string pool = request.pool;
    if (pool.empty()) {
        pool = rollout_active(current->rollout) ? current->rollout.pool
                                                : heaviest_candidate(*current);
        if (pool.empty()) {
            return fail(std::move(done), error::conflict,
                        "no non-stable pool has traffic to promote; name one, like "
                        "{\"pool\":\"canary\"}");
        }
    }
    if (!current->pools.contains(pool)) {
        return fail(std::move(done), error::unknown_pool,
                    "service \"" + request.service + "\" has no pool \"" + pool + "\"");
    }
    if (pool == current->stable) {
        return fail(std::move(done), error::invalid_request,
                    "pool \"" + pool + "\" is already the stable pool");
    }
    smoke_then_switch(std::move(request.service), std::move(pool), "promote", request.if_match,
                      std::move(request.actor), std::move(request.reason), true,
                      std::move(done));
}

void control_plane::smoke_then_switch(std::string service, std::string target, std::string kind,
                                      std::optional<std::uint64_t> if_match, std::string actor,
                                      std::string reason, bool smoke, change_handler done) {
    const config::service* cs = find_config_service(service);
    std::vector<std::string> endpoints;
    if (cs != nullptr) {
        if (const config::pool* cp = cs->find_pool(target)) {
            for (const auto& ep : cp->endpoints) {
                endpoints.push_back(ep.address);
            }
        }
    }
    if (!smoke || cs == nullptr || cs->smoke_test.paths.empty()) {
        return apply_switch(service, target, kind, actor, std::move(reason), std::move(done));
    }
    auto after = [this, service, target, kind, if_match, actor, reason = std::move(reason),
                  done = std::move(done)](std::vector<smoke_failure> failures) mutable {
        if (!failures.empty()) {
            json::array list;
            for (const auto& f : failures) {
                json::object item{{"endpoint", f.endpoint},
                                  {"path", f.path},
                                  {"status", nullptr},
                                  {"error", f.error}};
                if (f.status != 0) {
                    item["status"] = f.status;
                }
                list.push_back(std::move(item));
            }
            const auto& first = failures.front();
            change_result result;
            result.error = make_error_code(error::conflict);
            result.message = "the smoke test of pool \"" + target + "\" failed (" +
                             std::to_string(failures.size()) + " failed: " + first.endpoint +
                             first.path + " " +
                             (first.status != 0 ? "answered " + std::to_string(first.status)
                                                : first.error) +
                             "); nothing was changed";
            result.details = json::object{{"failures", std::move(list)}};
            return complete(std::move(done), std::move(result));
        }
        // The service may have changed while the smoke requests ran.
        if (current_for(service, if_match, done) == nullptr) {
            return;
        }
        apply_switch(service, target, kind, actor, std::move(reason), std::move(done));
    };
    run_smoke(cs->smoke_test, std::move(endpoints), std::move(after));
}

void control_plane::run_smoke(const config::smoke& policy, std::vector<std::string> endpoints,
                              std::function<void(std::vector<smoke_failure>)> done) {
    if (options_.smoke) {
        auto work = net::prefer(executor_, net::execution::outstanding_work.tracked);
        return options_.smoke(policy, std::move(endpoints),
                              [work, done = std::move(done)](std::vector<smoke_failure> f) mutable {
                                  net::post(work, [done = std::move(done), f = std::move(f)]() mutable {
                                      done(std::move(f));
                                  });
                              });
    }
    auto task = [](config::smoke policy, std::vector<std::string> endpoints,
                   std::shared_ptr<const health::probe_tls> tls,
                   std::function<void(std::vector<smoke_failure>)> done) -> net::awaitable<void> {
        std::vector<smoke_failure> failures;
        for (const auto& address : endpoints) {
            const auto hp = config::parse_host_port(address);
            for (const auto& path : policy.paths) {
                if (!hp) {
                    failures.push_back({address, path, 0, "not a host:port"});
                    continue;
                }
                const health::probe_result r = co_await health::probe(
                    hp->host, hp->port, path, std::chrono::milliseconds(2000), nullptr, tls);
                if (!r.error.empty() || !policy.expect_status.contains(r.status)) {
                    // `error` is the transport's; a response out of range
                    // is told by its `status` alone.
                    failures.push_back({address, path, r.status, r.error});
                }
            }
        }
        done(std::move(failures));
    };
    // Over TLS when the data path uses it: the smoke test proves what
    // requests will meet.
    net::co_spawn(executor_,
                  task(policy, std::move(endpoints), health::make_probe_tls(config_.upstream.tls),
                       std::move(done)),
                  net::detached);
}

void control_plane::apply_switch(const std::string& service, const std::string& target,
                                 const std::string& kind, const std::string& actor,
                                 std::string reason, change_handler done) {
    const persisted_service& current = state_.services.at(service);
    persisted_service next = current;
    set_only(next, target);
    const bool new_stable = next.stable != target;
    if (new_stable) {
        next.previous = next.stable;
        next.stable = target;
    }
    if (kind == "promote") {
        next.rollout = persisted_rollout{rollout_state::promoted, target, std::nullopt, {}};
    } else if (rollout_active(next.rollout) || next.rollout.state == rollout_state::reverted) {
        next.rollout = persisted_rollout{};  // the operator has acted
    }
    if (next == current) {
        change_result result;
        result.service = *service_json(service);
        return complete(std::move(done), std::move(result));
    }
    next.generation = current.generation + 1;
    const std::string old_stable = current.stable;
    event change = make_event(service, kind, actor, routing_json(current), routing_json(next),
                              std::move(reason));
    if (next.rollout != current.rollout) {
        change.before["rollout"] = rollout_json(current.rollout);
        change.after["rollout"] = rollout_json(next.rollout);
    }
    // The watch is part of the change; it is set before the answer so that a
    // reader of the answer sees it.
    if (new_stable) {
        start_watch(service, target, old_stable);
    }
    commit(service, std::move(next), std::move(change), std::move(done));
}

void control_plane::start_watch(const std::string& service, const std::string& pool,
                                const std::string& previous) {
    const config::service* cs = find_config_service(service);
    if (cs == nullptr || cs->guard_policy.post_switch_watch <= config::duration::zero()) {
        watches_.erase(service);
        return;
    }
    switch_watch w;
    w.pool = pool;
    w.previous = previous;
    const auto now = health::clock::now();
    w.until = now + cs->guard_policy.post_switch_watch;
    if (options_.stats != nullptr && snapshot_) {
        if (const routing::service* rs = snapshot_->find_service(service)) {
            if (const routing::pool* rp = rs->find_pool(previous)) {
                w.baseline = options_.stats->summary(rp->id, now, cs->guard_policy.window);
            }
        }
    }
    watches_[service] = std::move(w);
}

const switch_watch* control_plane::watch(std::string_view service) const {
    const auto it = watches_.find(service);
    if (it == watches_.end() || it->second.until <= health::clock::now()) {
        return nullptr;
    }
    return &it->second;
}

void control_plane::end_watch(std::string_view service) {
    if (const auto it = watches_.find(service); it != watches_.end()) {
        watches_.erase(it);
    }
}

void control_plane::rollback(rollback_request request, change_handler done) {
    const persisted_service* current = current_for(request.service, request.if_match, done);
    if (current == nullptr) {
        return;
    }
    persisted_service next = *current;
    std::string reason = request.reason;
    if (!heaviest_candidate(*current).empty()) {
        set_only(next, current->stable);
        if (reason.empty()) {
            reason = "rolled back to the stable pool " + current->stable;
        }
    } else if (!current->previous.empty() && current->pools.contains(current->previous)) {
        set_only(next, current->previous);
        next.stable = current->previous;
        next.previous = current->stable;
        if (reason.empty()) {
            reason = "switched back to the previous stable pool " + current->previous;
        }
        end_watch(request.service);
    } else {
        return fail(std::move(done), error::conflict,
                    "nothing to roll back: no non-stable pool has traffic and there was no "
                    "switch or promote before");
    }
    if (rollout_active(next.rollout)) {
        next.rollout.state = rollout_state::reverted;
        next.rollout.reason = "rolled back by operator";
    } else if (next.rollout.state == rollout_state::reverted) {
        next.rollout = persisted_rollout{};
    }
    next.generation = current->generation + 1;
    event change = make_event(request.service, "rollback", request.actor, routing_json(*current),
                              routing_json(next), std::move(reason));
    commit(request.service, std::move(next), std::move(change), std::move(done));
}

void control_plane::rollout(rollout_request request, change_handler done) {
    const persisted_service* current = current_for(request.service, request.if_match, done);
    if (current == nullptr) {
        return;
    }
    const config::service* cs = find_config_service(request.service);
    const auto& steps = cs->rollout_policy.steps;
    persisted_service next = *current;
    const rollout_state state = current->rollout.state;
    std::string reason;
    std::string kind = "rollout";
    switch (request.action) {
        case rollout_action::start: {
            if (rollout_active(current->rollout)) {
                return fail(std::move(done), error::conflict,
                            "a rollout of pool \"" + current->rollout.pool + "\" is already " +
                                std::string(to_string(state)) + "; abort it first");
            }
            std::string pool = request.pool;
            if (pool.empty()) {
                pool = heaviest_candidate(*current);
            }
            if (pool.empty()) {
                for (const auto& [name, p] : current->pools) {
                    if (name != current->stable) {
                        if (!pool.empty()) {
                            return fail(std::move(done), error::invalid_request,
                                        "name the pool to roll out, like "
                                        "{\"action\":\"start\",\"pool\":\"canary\"}");
                        }
                        pool = name;
                    }
                }
            }
            if (pool.empty() || !current->pools.contains(pool)) {
                return fail(std::move(done), error::unknown_pool,
                            "service \"" + request.service + "\" has no pool \"" +
                                request.pool + "\" to roll out");
            }
            if (pool == current->stable) {
                return fail(std::move(done), error::invalid_request,
                            "pool \"" + pool + "\" is the stable pool; roll out another one");
            }
            if (steps.empty()) {
                return fail(std::move(done), error::invalid_request,
                            "service \"" + request.service + "\" has no rollout steps");
            }
            for (auto& [name, p] : next.pools) {
                p.weight = name == pool ? steps[0] : name == current->stable ? 100 - steps[0] : 0;
            }
            next.rollout = persisted_rollout{rollout_state::progressing, pool, 0, {}};
            reason = "rollout of " + pool + " started at " + std::to_string(steps[0]) + "%";
            end_watch(request.service);
            break;
        }
        case rollout_action::pause:
            if (state != rollout_state::progressing) {
                return fail(std::move(done), error::conflict,
                            "no rollout is progressing (state " + std::string(to_string(state)) +
                                ")");
            }
            next.rollout.state = rollout_state::paused;
            next.rollout.reason = "paused by operator";
            reason = "rollout of " + current->rollout.pool + " paused by operator";
            break;
        case rollout_action::resume:
            if (state != rollout_state::paused) {
                return fail(std::move(done), error::conflict,
                            "no rollout is paused (state " + std::string(to_string(state)) + ")");
            }
            next.rollout.state = rollout_state::progressing;
            next.rollout.reason.clear();
            if (next.rollout.step && static_cast<std::size_t>(*next.rollout.step) < steps.size()) {
                // A manual weights change paused it: the step's weights again.
                const auto w = steps[static_cast<std::size_t>(*next.rollout.step)];
                for (auto& [name, p] : next.pools) {
                    p.weight = name == next.rollout.pool ? w
                               : name == current->stable ? 100 - w
                                                         : 0;
                }
            }
            reason = "rollout of " + current->rollout.pool + " resumed by operator";
            break;
        case rollout_action::abort:
            if (!rollout_active(current->rollout)) {
                return fail(std::move(done), error::conflict,
                            "no rollout to abort (state " + std::string(to_string(state)) + ")");
            }
            set_only(next, current->stable);
            next.rollout.state = rollout_state::reverted;
            next.rollout.reason = "aborted by operator";
            reason = "rollout of " + current->rollout.pool + " aborted by operator";
            kind = "revert";
            break;
    }
    next.generation = current->generation + 1;
    json::object before = routing_json(*current);
    before["rollout"] = rollout_json(current->rollout);
    json::object after = routing_json(next);
    after["rollout"] = rollout_json(next.rollout);
    event change = make_event(request.service, kind, request.actor, std::move(before),
                              std::move(after), std::move(reason));
    commit(request.service, std::move(next), std::move(change), std::move(done));
}

// ---------------------------------------------------------------------------
// The autopilot's side

void control_plane::guard_revert(const std::string& service, const std::string& pool,
                                 const health::decision& decision, change_handler done) {
    if (!done) {
        done = [](change_result) {};
    }
    const auto found = state_.services.find(service);
    if (found == state_.services.end()) {
        return fail(std::move(done), error::unknown_service, "unknown service");
    }
    const persisted_service& current = found->second;
    persisted_service next = current;
    const std::string summary = decision.summary();
    std::string reason;
    const switch_watch* w = watch(service);
    if (pool == current.stable) {
        // Post-switch watch: back to the colour that was stable before.
        if (w == nullptr || w->pool != pool || !current.pools.contains(w->previous)) {
            return fail(std::move(done), error::conflict, "no post-switch watch to act on");
        }
        set_only(next, w->previous);
        next.stable = w->previous;
        next.previous = pool;
        reason = "guard: " + pool + " breached after the switch, back to " + w->previous + ": " +
                 summary;
    } else {
        set_only(next, current.stable);
        reason = "guard: " + pool + " reverted: " + summary;
    }
    next.rollout.state = rollout_state::reverted;
    next.rollout.pool = pool;
    next.rollout.reason = summary;
    next.generation = current.generation + 1;

    json::object record = decision_json(pool, decision);
    last_breach_[service] = record;
    json::object before = routing_json(current);
    before["rollout"] = rollout_json(current.rollout);
    json::object after = routing_json(next);
    after["rollout"] = rollout_json(next.rollout);
    event change = make_event(service, "revert", "guard", std::move(before), std::move(after),
                              std::move(reason));
    change.details = std::move(record);
    end_watch(service);
    warn("guard reverted service " + service + " pool " + pool + ": " + summary);
    commit(service, std::move(next), std::move(change), std::move(done));
}

void control_plane::advance_rollout(const std::string& service, std::uint64_t generation,
                                    change_handler done) {
    if (!done) {
        done = [](change_result) {};
    }
    const auto found = state_.services.find(service);
    const config::service* cs = find_config_service(service);
    if (found == state_.services.end() || cs == nullptr) {
        return fail(std::move(done), error::unknown_service, "unknown service");
    }
    const persisted_service& current = found->second;
    if (current.generation != generation || current.rollout.state != rollout_state::progressing ||
        !current.rollout.step) {
        return fail(std::move(done), error::stale_generation, "the rollout changed meanwhile");
    }
    const auto& steps = cs->rollout_policy.steps;
    const auto step = static_cast<std::size_t>(*current.rollout.step);
    const std::string& pool = current.rollout.pool;
    if (step + 1 >= steps.size()) {
        if (!cs->rollout_policy.auto_promote) {
            return fail(std::move(done), error::conflict, "the last step waits for promote");
        }
        return apply_switch(service, pool, "promote", "rollout",
                            "rollout of " + pool + " passed every step: promoted",
                            std::move(done));
    }
    persisted_service next = current;
    const auto w = steps[step + 1];
    for (auto& [name, p] : next.pools) {
        p.weight = name == pool ? w : name == current.stable ? 100 - w : 0;
    }
    next.rollout.step = static_cast<int>(step + 1);
    next.generation = current.generation + 1;
    json::object before = routing_json(current);
    before["rollout"] = rollout_json(current.rollout);
    json::object after = routing_json(next);
    after["rollout"] = rollout_json(next.rollout);
    event change = make_event(service, "rollout", "rollout", std::move(before), std::move(after),
                              "rollout of " + pool + " advanced to " + std::to_string(w) +
                                  "% after a step with the guard passing");
    commit(service, std::move(next), std::move(change), std::move(done));
}

void control_plane::set_verdicts(const std::string& service,
                                 std::map<std::string, health::decision, std::less<>> verdicts) {
    verdicts_[service] = std::move(verdicts);
}

void control_plane::health_changed(const std::string& service, const std::string& pool,
                                   const std::string& endpoint, bool usable, std::string reason) {
    persisted_state candidate = state_;
    event e = make_event(service, "health", "health",
                         json::object{{"pool", pool}, {"endpoint", endpoint}, {"usable", !usable}},
                         json::object{{"pool", pool}, {"endpoint", endpoint}, {"usable", usable}},
                         std::move(reason));
    e.id = ++candidate.last_event_id;
    e.time = now_rfc3339();
    std::string why;
    // Saved so that event ids never repeat across a restart; a failure is
    // logged and the event still recorded (health is not a change of state).
    if (options_.store != nullptr && !options_.store->save(candidate, why)) {
        warn(why);
    }
    state_.last_event_id = candidate.last_event_id;
    record(std::move(e));
}


// ---------------------------------------------------------------------------
// reload

namespace {

// What a reload cannot apply to a running process, in words; empty: nothing.
std::string restart_only_changes(const config::config& now, const config::config& next,
                                 bool listeners_too) {
    std::string out;
    const auto note = [&out](const std::string& what) { out += out.empty() ? what : ", " + what; };
    bool listeners_differ = listeners_too && now.listeners.size() != next.listeners.size();
    for (std::size_t i = 0; listeners_too && !listeners_differ && i < now.listeners.size(); ++i) {
        const auto& a = now.listeners[i];
        const auto& b = next.listeners[i];
        listeners_differ = a.name != b.name || a.address != b.address ||
                           a.tls.has_value() != b.tls.has_value();
    }
    if (listeners_differ) {
        note("listeners");
    }
    if (now.admin_listener.address != next.admin_listener.address ||
        now.admin_listener.token_file != next.admin_listener.token_file ||
        now.admin_listener.read_token_file != next.admin_listener.read_token_file) {
        note("admin");
    }
    if (now.workers != next.workers) {
        note("workers");
    }
    if (now.state_file != next.state_file) {
        note("state_file");
    }
    return out;
}

}  // namespace

void control_plane::reload(std::string actor, change_handler done) {
    config::load_result loaded = config::load_file(config_.file);
    if (!loaded.ok()) {
        ++reloads_failed_;
        change_result result;
        result.error = make_error_code(error::invalid_config);
        result.message = "the config file " + config_.file + " has " +
                         std::to_string(loaded.errors.size()) +
                         (loaded.errors.size() == 1 ? " error" : " errors") +
                         "; nothing was changed";
        result.errors = loaded.errors;
        warn("reload refused: " + result.message);
        for (const auto& e : loaded.errors) {
            warn("  " + e);
        }
        return complete(std::move(done), std::move(result));
    }
    config::config next_config = std::move(*loaded.value);

    reconcile_result reconciled = reconcile(next_config, &state_, reconcile_mode::reload);
    persisted_state candidate = std::move(reconciled.state);
    const std::string time = now_rfc3339();
    for (event& e : reconciled.events) {
        e.id = ++candidate.last_event_id;
        e.time = time;
    }
    const std::string later =
        restart_only_changes(config_, next_config, !static_cast<bool>(options_.listeners));
    // Bound (not yet serving) before anything else is decided, so that a
    // port in use fails the reload with nothing changed.
    listener_update listeners;
    if (options_.listeners) {
        try {
            listeners = options_.listeners(next_config.listeners);
        } catch (const std::exception& e) {
            ++reloads_failed_;
            warn(std::string("reload refused: ") + e.what());
            return fail(std::move(done), error::listener_failed,
                        std::string(e.what()) + "; nothing was changed");
        }
    }
    std::string reason = "configuration reloaded from " + next_config.file;
    if (!listeners.summary.empty()) {
        reason += "; " + listeners.summary;
    }
    if (!later.empty()) {
        reason += "; changes to " + later + " take effect at the next start";
    }
    event reloaded = make_event("", "reload", actor, json::object{}, json::object{}, reason);
    reloaded.id = ++candidate.last_event_id;
    reloaded.time = time;

    std::string why;
    auto snap = build_snapshot(next_config, candidate, why);
    if (!snap) {
        ++reloads_failed_;
        return fail(std::move(done), error::snapshot_failed,
                    "the routing table could not be built (" + why + "); nothing was changed");
    }
    if (options_.store != nullptr && !options_.store->save(candidate, why)) {
        ++reloads_failed_;
        warn(why);
        return fail(std::move(done), error::state_not_saved, why + "; nothing was changed");
    }
    // Admin and workers stay as they are until a restart (listeners too
    // without options_.listeners); every other setting takes effect now.
    if (listeners.commit) {
        listeners.commit();
    } else {
        next_config.listeners = config_.listeners;
    }
    next_config.admin_listener = config_.admin_listener;
    next_config.workers = config_.workers;
    next_config.state_file = config_.state_file;
    options_.events_file = next_config.events_file;
    config_ = std::move(next_config);
    state_ = std::move(candidate);
    snapshot_ = snap;
    settings_ =
        std::make_shared<const proxy::settings>(proxy::settings{config_.limit, config_.upstream});
    std::erase_if(watches_, [this](const auto& w) { return !state_.services.contains(w.first); });
    std::erase_if(verdicts_, [this](const auto& v) { return !state_.services.contains(v.first); });
    std::erase_if(last_breach_,
                  [this](const auto& b) { return !state_.services.contains(b.first); });
    for (event& e : reconciled.events) {
        record(std::move(e));
    }
    record(std::move(reloaded));
    ++reloads_ok_;
    if (!later.empty()) {
        warn("reload: changes to " + later + " take effect at the next start");
    }
    if (reload_listener_) {
        reload_listener_();
    }

    change_result result;
    result.changed = true;
    result.service = services_json();
    if (!options_.publish) {
        return complete(std::move(done), std::move(result));
    }
    auto work = net::prefer(executor_, net::execution::outstanding_work.tracked);
    options_.publish(std::move(snap), settings_,
                     [work, done = std::move(done), result = std::move(result)]() mutable {
                         net::post(work,
                                   [done = std::move(done), result = std::move(result)]() mutable {
                                       done(std::move(result));
                                   });
                     });
}

}  // namespace switchyard::admin
