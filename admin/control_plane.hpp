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

// Hands a snapshot (and settings; nullptr = unchanged) to the data plane and
// calls `done`, from any thread, once every worker uses it.
using publish_function =
    std::function<void(std::shared_ptr<const routing::snapshot>,
                       std::shared_ptr<const proxy::settings>, std::function<void()> done)>;

struct control_plane_options {
    publish_function publish;                   // empty: no data plane, changes complete at once
    state_store* store = nullptr;               // borrowed; nullptr: state lives in memory only
    health::stats_registry* stats = nullptr;    // borrowed; nullptr: SERVICE stats are zero
    std::function<void(std::string_view)> log;  // warnings, one line each; empty: stderr
    std::size_t events_kept = 10000;            // in-memory event log length
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
    void complete(change_handler done, change_result result);
    void fail(change_handler done, error e, std::string message);
    std::shared_ptr<const routing::snapshot> build_snapshot(const persisted_state& state,
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
};

}  // namespace switchyard::admin

template <>
struct std::is_error_code_enum<switchyard::admin::error> : std::true_type {};
