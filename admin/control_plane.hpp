#pragma once
// The control plane: the one owner of switchyard's runtime state (SPEC §5, §6).
//
// It keeps the running config, the runtime state of every service (weights,
// stable, previous, rollout, generation: a persisted_state, the very form the
// state store saves), the routing id registry and the event log; it builds a
// routing snapshot after every change and hands it to the data plane through
// the injected `publish` function (main wires it to proxy::server::publish;
// tests and tools may pass nothing or a recorder).
//
// A change (set_weights, and later switch/rollback/promote/rollout/reload)
// runs in this order, so that "nothing changed" is true of every failure:
// validate -> build the new snapshot -> save the state (when a store is
// configured) -> make it current and record the event -> publish -> complete
// once every worker has acknowledged (STYLE rule 2). Completions are always
// posted to the control executor, never invoked inline.
//
// Startup applies "runtime decisions survive, deliberate edits win" (see
// reconcile()) and saves the result.
//
// Threads: construct it, and call every member, on the control thread (one
// io_context running on one thread; construction may also happen before that
// thread runs the io_context). The publish function's `done` may be called
// from any thread.
// Ownership: owns the state, the registry and the event log; borrows the
// state store and the stats registry, which must outlive it.
// Failure: the constructor throws control_plane_error (one sentence) when the
// state cannot be loaded or saved, or the routing snapshot cannot be built.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "admin/state_store.hpp"
#include "config/config.hpp"
#include "health/guard.hpp"
#include "health/stats.hpp"
#include "proxy/server.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::admin {

namespace net = boost::asio;

// Expected failures of a change, mapped once to an HTTP status (http_status).
enum class error {
    unknown_service = 1,  // 404
    unknown_pool,         // 400
    invalid_request,      // 400: negative, too large or all-zero weights, nothing asked
    stale_generation,     // 412: If-Match names a generation that is no longer current
    state_not_saved,      // 500: the state store refused the write
    snapshot_failed,      // 500: the routing snapshot could not be built
    conflict,             // 409: the smoke test failed, or the action does not fit
                          //      the service's state (pause with no rollout, ...)
    invalid_config,       // 400: a reload found errors in the config file
    listener_failed,      // 500: a reload could not bind a changed listener
};

const std::error_category& error_category();
std::error_code make_error_code(error e);
// The HTTP status for an admin::error (500 for anything else).
unsigned http_status(std::error_code ec);

// The largest weight the API accepts: far above any sensible share, far below
// where a sum over pools could overflow.
inline constexpr std::uint32_t max_weight = 1'000'000;

// One entry of the event log (SPEC §6 GET /api/v1/events).
struct event {
    std::uint64_t id = 0;  // set when recorded
    std::string time;      // RFC 3339, UTC; set when recorded
    std::string service;
    std::string kind;   // weights|switch|rollback|revert|promote|rollout|health|reload
    std::string actor;  // admin|guard|rollout|health|config
    boost::json::object before;
    boost::json::object after;
    std::string reason;
    std::optional<boost::json::object> details;  // e.g. the guard's decision record
};

boost::json::object to_json(const event& e);

// JSON text for the API, the events file and the state file: like
// boost::json::serialize, but numbers that are doubles come out in plain
// shortest form ("0.0024", "41.1", "3.0") where Boost.JSON 1.81 writes
// "2.4E-3", "4.11E1", "3E0"; non-finite doubles become null.
std::string to_text(const boost::json::value& value);

// --- Startup and reload: "runtime decisions survive, deliberate edits win" ---

enum class reconcile_mode {
    restart,  // `prior` comes from the state store: a rollout in progress resumes paused
    reload,   // `prior` is the running state
};

struct reconcile_result {
    persisted_state state;      // last_event_id not yet advanced for `events`
    std::vector<event> events;  // config edits that won, without id and time
};

// The runtime state for `cfg` given what was known before (`prior`, nullptr
// when nothing was): a pool keeps its prior weight unless the config's weight
// differs from the config weight last seen for it (then the config wins and an
// event by "config" says so); the same for `stable`; `previous` and the
// rollout come from `prior`. Services, pools and names that left the config
// are dropped; new ones take the config's values. Pure: no I/O.
reconcile_result reconcile(const config::config& cfg, const persisted_state* prior,
                           reconcile_mode mode);

// --- Changes ---

struct change_result {
    std::error_code error;        // admin::error; empty on success
    std::string message;          // one sentence, when error
    std::optional<boost::json::object> details;  // e.g. the smoke test's failures (409)
    std::vector<std::string> errors;  // invalid_config: "FILE:LINE:COL: message" each
    boost::json::object service;  // the SERVICE after the change, on success
    bool changed = false;         // false: the request asked for what already was
};

using change_handler = std::function<void(change_result)>;

struct weights_request {
    std::string service;
    std::map<std::string, std::int64_t, std::less<>> weights;  // pool -> weight, as asked
    std::optional<std::uint64_t> if_match;                     // expected generation
    std::string actor = "admin";
    std::string reason;  // optional, recorded in the event
};

// POST /api/v1/services/{svc}/switch: smoke test `to`, then `to` 100, the rest
// 0, stable = `to`, previous = the old stable; post_switch_watch begins.
struct switch_request {
    std::string service;
    std::string to;
    std::optional<std::uint64_t> if_match;
    std::string actor = "admin";
    std::string reason;
};

// POST .../promote: like switch, to `pool` (empty: the non-stable pool with
// the most weight); the rollout becomes `promoted`.
struct promote_request {
    std::string service;
    std::string pool;
    std::optional<std::uint64_t> if_match;
    std::string actor = "admin";
    std::string reason;
};

// POST .../rollback: a non-stable pool has weight -> stable 100, the rest 0;
// else, after a switch or promote, switch back to `previous` (no smoke test:
// the way back must not depend on the pool that is being left).
struct rollback_request {
    std::string service;
    std::optional<std::uint64_t> if_match;
    std::string actor = "admin";
    std::string reason;
};

enum class rollout_action { start, pause, resume, abort };
std::optional<rollout_action> parse_rollout_action(std::string_view text);

// POST .../rollout.
struct rollout_request {
    std::string service;
    rollout_action action = rollout_action::start;
    std::string pool;  // start: the pool to roll out (empty: the non-stable pool
                       // with the most weight, else the only non-stable one)
    std::optional<std::uint64_t> if_match;
    std::string actor = "admin";
};

// After a switch or promote, for `post_switch_watch`: the new stable is judged
// against the old stable's figures captured at the switch (SPEC §5).
struct switch_watch {
    std::string pool;      // the new stable
    std::string previous;  // the pool a breach switches back to
    health::clock::time_point until;
    health::window_summary baseline;  // the previous pool's window at the switch
};

// Checks each endpoint of a pool with the smoke requests (SPEC §2 `smoke`)
// and calls `done` on the control executor with the failures (empty: passed).
// Injected so that tools can run the control plane without a network; the
// default (control_plane_options::smoke empty) sends real requests with
// health::probe.
struct smoke_failure {
    std::string endpoint;
    std::string path;
    unsigned status = 0;  // 0: no response
    std::string error;
};
using smoke_function =
    std::function<void(const config::smoke& policy, std::vector<std::string> endpoints,
                       std::function<void(std::vector<smoke_failure>)> done)>;

// Hands a snapshot (and settings; nullptr = unchanged) to the data plane and
// calls `done`, from any thread, once every worker uses it.
using publish_function =
    std::function<void(std::shared_ptr<const routing::snapshot>,
                       std::shared_ptr<const proxy::settings>, std::function<void()> done)>;

// A reload's listener change, prepared (bound) by listeners_function and
// applied by `commit` once the rest of the reload has succeeded; dropping it
// uncommitted closes what it bound.
struct listener_update {
    std::function<void()> commit;
    std::string summary;  // "listener public moved to 127.0.0.1:9000"; "" when none moved
};
// Binds what changed among `listeners` (proxy::server::prepare_listeners);
// throws std::exception with one sentence naming the listener and address
// when it cannot, nothing changed.
using listeners_function =
    std::function<listener_update(const std::vector<config::listener>& listeners)>;

struct control_plane_options {
    publish_function publish;                   // empty: no data plane, changes complete at once
    state_store* store = nullptr;               // borrowed; nullptr: state lives in memory only
    health::stats_registry* stats = nullptr;    // borrowed; nullptr: SERVICE stats are zero
    std::function<void(std::string_view)> log;  // warnings, one line each; empty: stderr
    std::size_t events_kept = 10000;            // in-memory event log length
    smoke_function smoke;                       // empty: real requests (health::probe)
    std::string events_file;                    // JSON lines appended per event; empty: none
    listeners_function listeners;               // empty: listener changes wait for a restart
};

struct control_plane_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

class control_plane {
public:
    control_plane(net::any_io_executor control, config::config cfg, control_plane_options options);
    ~control_plane();
    control_plane(const control_plane&) = delete;
    control_plane& operator=(const control_plane&) = delete;

    net::any_io_executor get_executor() const { return executor_; }

    // The data plane's starting point: proxy::server::initialise(snapshot(), settings()).
    std::shared_ptr<const routing::snapshot> snapshot() const { return snapshot_; }
    std::shared_ptr<const proxy::settings> settings() const { return settings_; }
    const config::config& current_config() const { return config_; }
    const persisted_state& state() const { return state_; }
    routing::registry& ids() { return ids_; }

    // --- Reads (SPEC §6 SERVICE) ---
    // nullopt: no such service.
    std::optional<boost::json::object> service_json(std::string_view name) const;
    // {"services":[SERVICE...]} in config order.
    boost::json::object services_json() const;
    // Events with id > `after`, oldest first (only the last events_kept are kept).
    std::vector<event> events_since(std::uint64_t after) const;
    std::uint64_t last_event_id() const { return state_.last_event_id; }
    // Called on the control thread for every event recorded, after it is saved
    // (the events file and `events --follow` hang here).
    void set_event_listener(std::function<void(const event&)> listener) {
        event_listener_ = std::move(listener);
    }

    // --- Changes ---
    // PUT /api/v1/services/{svc}/weights: pools not named keep their weight;
    // unknown pool, negative, over max_weight, or an all-zero result fail with
    // nothing changed. A rollout in progress pauses; a reverted service returns
    // to idle (the operator has acted). Asking for what already is succeeds
    // without a new generation or event.
    void set_weights(weights_request request, change_handler done);

    // The same for coroutines and other completion tokens:
    //   auto result = co_await cp.async_set_weights(req, net::use_awaitable);
    template <class CompletionToken>
    auto async_set_weights(weights_request request, CompletionToken&& token) {
        return net::async_initiate<CompletionToken, void(change_result)>(
            initiate_change<&control_plane::set_weights, weights_request>{this}, token,
            std::move(request));
    }

    // SPEC §6 switch, promote, rollback, rollout (see the request structs).
    // Generation, If-Match, events and persistence as for set_weights. A smoke
    // failure is error::conflict with `details.failures`; nothing changes.
    void switch_to(switch_request request, change_handler done);
    void promote(promote_request request, change_handler done);
    void rollback(rollback_request request, change_handler done);
    void rollout(rollout_request request, change_handler done);

    template <class CompletionToken>
    auto async_switch(switch_request request, CompletionToken&& token) {
        return net::async_initiate<CompletionToken, void(change_result)>(
            initiate_change<&control_plane::switch_to, switch_request>{this}, token,
            std::move(request));
    }
    template <class CompletionToken>
    auto async_promote(promote_request request, CompletionToken&& token) {
        return net::async_initiate<CompletionToken, void(change_result)>(
            initiate_change<&control_plane::promote, promote_request>{this}, token,
            std::move(request));
    }
    template <class CompletionToken>
    auto async_rollback(rollback_request request, CompletionToken&& token) {
        return net::async_initiate<CompletionToken, void(change_result)>(
            initiate_change<&control_plane::rollback, rollback_request>{this}, token,
            std::move(request));
    }
    template <class CompletionToken>
    auto async_rollout(rollout_request request, CompletionToken&& token) {
        return net::async_initiate<CompletionToken, void(change_result)>(
            initiate_change<&control_plane::rollout, rollout_request>{this}, token,
            std::move(request));
    }

    // SIGHUP and POST /api/v1/reload (SPEC §6): reads config_file() again.
    // Invalid: error::invalid_config with every error, nothing changed.
    // Valid: routing, pools, health checks, guard and limits swap at once;
    // weights follow reconcile() (runtime decisions survive, edits win);
    // `listeners` change through options.listeners (bound before anything
    // else changes; a failure is error::listener_failed, nothing changed),
    // or at the next start without it; `admin`, `workers` and `state_file`
    // take effect at the next start (the event's reason says so when they
    // changed). `actor` is "admin" or "config".
    void reload(std::string actor, change_handler done);
    template <class CompletionToken>
    auto async_reload(std::string actor, CompletionToken&& token) {
        return net::async_initiate<CompletionToken, void(change_result)>(
            initiate_change<&control_plane::reload, std::string>{this}, token, std::move(actor));
    }
    // Reloads so far, by result (switchyard_config_reloads_total).
    std::uint64_t reloads_ok() const { return reloads_ok_; }
    std::uint64_t reloads_failed() const { return reloads_failed_; }
    // Called on the control thread after a reload took effect (the autopilot
    // re-targets its health checks here).
    void set_reload_listener(std::function<void()> listener) {
        reload_listener_ = std::move(listener);
    }

    // --- The autopilot's side (guard, rollout steps, health; control thread) ---

    // The guard found `pool` in breach: every non-stable pool to 0 and stable
    // to 100 (or, when `pool` is the stable under post_switch_watch, back to
    // `previous`), rollout `reverted` with the decision's summary, a `revert`
    // event carrying the decision record. `done` may be empty.
    void guard_revert(const std::string& service, const std::string& pool,
                      const health::decision& decision, change_handler done = {});
    // The rollout of `service` held its step: the next step, or after the last
    // one promote (auto_promote) or stay. `generation` is the one the autopilot
    // judged; a change since then makes this a no-op.
    void advance_rollout(const std::string& service, std::uint64_t generation,
                         change_handler done = {});
    // The guard's latest verdicts for the SERVICE JSON `guard.pools`.
    void set_verdicts(const std::string& service,
                      std::map<std::string, health::decision, std::less<>> verdicts);
    // An endpoint's health changed (active checks or outlier detection): a
    // `health` event (no new generation).
    void health_changed(const std::string& service, const std::string& pool,
                        const std::string& endpoint, bool usable, std::string reason);
    // The post-switch watch of `service`, if one is running.
    const switch_watch* watch(std::string_view service) const;
    void end_watch(std::string_view service);

private:
    // Adapts a completion handler (possibly move-only) to change_handler and
    // completes it on its associated executor.
    template <auto Member, class Request>
    struct initiate_change {
        control_plane* self;
        template <class Handler>
        void operator()(Handler&& handler, Request request) const {
            using handler_type = std::decay_t<Handler>;
            auto shared = std::make_shared<handler_type>(std::forward<Handler>(handler));
            (self->*Member)(std::move(request), [shared](change_result result) {
                auto ex = net::get_associated_executor(*shared);
                net::dispatch(ex, [shared, result = std::move(result)]() mutable {
                    (*shared)(std::move(result));
                });
            });
        }
    };

    // Validated change of one service -> snapshot, save, event, publish, done.
    void commit(const std::string& service, persisted_service next, std::optional<event> change,
                change_handler done);
    // Checks the request's service and If-Match; fails `done` and returns
    // nullptr when either is wrong.
    const persisted_service* current_for(const std::string& service,
                                         const std::optional<std::uint64_t>& if_match,
                                         change_handler& done);
    // Smoke, then the switch/promote to `target` (the shared tail of both).
    void smoke_then_switch(std::string service, std::string target, std::string kind,
                           std::optional<std::uint64_t> if_match, std::string actor,
                           std::string reason, bool smoke, change_handler done);
    void apply_switch(const std::string& service, const std::string& target,
                      const std::string& kind, const std::string& actor, std::string reason,
                      change_handler done);
    void start_watch(const std::string& service, const std::string& pool,
                     const std::string& previous);
    void run_smoke(const config::smoke& policy, std::vector<std::string> endpoints,
                   std::function<void(std::vector<smoke_failure>)> done);
    void complete(change_handler done, change_result result);
    void fail(change_handler done, error e, std::string message);
    std::shared_ptr<const routing::snapshot> build_snapshot(const config::config& cfg,
                                                            const persisted_state& state,
                                                            std::string& error);
    void record(event e);
    void warn(std::string_view line) const;
    const config::service* find_config_service(std::string_view name) const;

    net::any_io_executor executor_;
    config::config config_;
    control_plane_options options_;
    persisted_state state_;
    routing::registry ids_;
    std::shared_ptr<const routing::snapshot> snapshot_;
    std::shared_ptr<const proxy::settings> settings_;
    std::deque<event> events_;
    std::function<void(const event&)> event_listener_;
    std::map<std::string, switch_watch, std::less<>> watches_;
    std::map<std::string, std::map<std::string, health::decision, std::less<>>, std::less<>>
        verdicts_;
    std::map<std::string, boost::json::object, std::less<>> last_breach_;  // by service
    std::function<void()> reload_listener_;
    std::uint64_t reloads_ok_ = 0;
    std::uint64_t reloads_failed_ = 0;
};

}  // namespace switchyard::admin

template <>
struct std::is_error_code_enum<switchyard::admin::error> : std::true_type {};
