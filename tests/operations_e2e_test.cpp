// End-to-end tests of the operator's side through the real switchyard binary
// (SPEC §5, §6): active health checks and outlier ejection, switch with its
// smoke test, the post-switch watch, rollback, progressive rollouts (advance,
// promote, revert, pause/resume/abort), and the event log with its file.
// Upstreams are in-process servers (tests/support/upstream.hpp) that name
// themselves in X-Upstream and answer GET /healthz with set_health_status.
//
// Waits poll a condition with a deadline; times are printed, never asserted.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/client.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

const std::string fast_guard = "    guard: {window: 5s, evaluate_every: 200ms, min_requests: 20}\n";
const std::string no_ejection = "    outlier_detection: {consecutive_failures: 1000}\n";
const std::string fast_health =
    "    health_check: {path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 2, "
    "unhealthy_threshold: 2}\n";
const std::string smoke_healthz =
    "    smoke: {paths: [\"/healthz\"], expect_status: \"200-399\"}\n";

long long ms_since(clock_type::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
}

double generation_of(const json::value& service) { return json_number(service, {"generation"}); }
std::string stable_of(const json::value& service) { return json_text(service, {"stable"}); }
std::string rollout_state(const json::value& service) {
    return json_text(service, {"rollout", "state"});
}

// Events of `service` with id > `after` (all kinds), oldest first.
std::vector<json::value> events_of(admin_client& admin, std::string_view service,
                                   double after = 0) {
    std::vector<json::value> out;
    for (const json::value& e : admin.events(0)) {
        if (json_text(e, {"service"}) == service && json_number(e, {"id"}) > after) {
            out.push_back(e);
        }
    }
    return out;
}

int count_events(const std::vector<json::value>& events, std::string_view kind,
                 std::string_view actor) {
    return static_cast<int>(std::count_if(events.begin(), events.end(), [&](const json::value& e) {
        return json_text(e, {"kind"}) == kind && json_text(e, {"actor"}) == actor;
    }));
}

double last_event_id(admin_client& admin) {
    double id = 0;
    for (const json::value& e : admin.events(0)) {
        id = std::max(id, json_number(e, {"id"}));
    }
    return id;
}

std::string describe(const std::vector<json::value>& events) {
    json::array a;
    for (const auto& e : events) {
        a.push_back(e);
    }
    return json::serialize(a);
}

// The non-stable pools all at 0 and `stable` at 100.
testing::AssertionResult only_pool_has_weight(const json::value& service, std::string_view stable) {
    const json::value* pools = json_at(service, {"pools"});
    if (pools == nullptr || !pools->is_object()) {
        return testing::AssertionFailure() << "no pools in " << json::serialize(service);
    }
    for (const auto& entry : pools->get_object()) {
        const double expected = entry.key() == stable ? 100.0 : 0.0;
        if (pool_weight(service, entry.key()) != expected) {
            return testing::AssertionFailure()
                   << "pool " << entry.key() << " has weight " << pool_weight(service, entry.key())
                   << ", expected " << expected << ": " << json::serialize(service);
        }
    }
    return testing::AssertionSuccess();
}

// GETs on one connection until `n` answered, counting X-Upstream.
std::map<std::string, int> send_requests(std::uint16_t port, int n, std::string_view tag) {
    http_client client(port);
    std::map<std::string, int> by_pool;
    for (int i = 0; i < n; ++i) {
        const http_response r = client.request("GET", "/" + std::string(tag) + "/" + std::to_string(i));
        ++by_pool[r.header("X-Upstream") + (r.status == 200 ? "" : " " + std::to_string(r.status))];
    }
    return by_pool;
}

class operations_e2e : public proxy_fixture {};

// SPEC §5: an endpoint failing `unhealthy_threshold` checks gets no traffic;
// after `healthy_threshold` passes it gets traffic again; `health` events by
// `health`; no new generation.
TEST_F(operations_e2e, HealthCheckRemovesAndRestoresEndpoint) {
    upstream one("blue-1");
    upstream two("blue-2");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {one.address(), two.address()}, 100),
                                   fast_health)));
    admin_client admin(admin_port());
    const json::value before = admin.service("app");
    ASSERT_FALSE(before.is_null());
    const double events_before = last_event_id(admin);
    load_generator load(port());
    ASSERT_TRUE(wait_until([&] { return one.request_count() > 0 && two.request_count() > 0; }, 20s,
                           "traffic on both endpoints"))
        << load.summary();

    auto t0 = clock_type::now();
    two.set_health_status(500);
    ASSERT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            return endpoint_flag(s, "blue", two.address(), "healthy") == false;
        },
        10s, "blue-2 marked unhealthy"));
    std::cout << "[health] blue-2 unhealthy after " << ms_since(t0) << " ms\n";
    EXPECT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            return endpoint_flag(s, "blue", one.address(), "healthy") == true;
        },
        1s, "blue-1 still healthy"));

    // Requests in flight at the change may still land: let 50 pass, then
    // none of the next 200 may reach blue-2.
    ASSERT_TRUE(load.wait_for_requests(50));
    const std::size_t two_while_down = two.request_count();
    ASSERT_TRUE(load.wait_for_requests(200));
    EXPECT_EQ(two.request_count(), two_while_down) << "traffic reached an unhealthy endpoint";

    t0 = clock_type::now();
    two.set_health_status(200);
    ASSERT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            return endpoint_flag(s, "blue", two.address(), "healthy") == true;
        },
        10s, "blue-2 healthy again"));
    std::cout << "[health] blue-2 healthy again after " << ms_since(t0) << " ms\n";
    EXPECT_TRUE(wait_until([&] { return two.request_count() > two_while_down; }, 10s,
                           "traffic on blue-2 again"))
        << load.summary();
    load.stop();
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();
    EXPECT_EQ(load.failures(), 0u) << load.summary();

    const std::vector<json::value> events = events_of(admin, "app", events_before);
    EXPECT_GE(count_events(events, "health", "health"), 2)
        << "a health event when blue-2 went down and one when it came back: " << describe(events);
    bool names_endpoint = false;
    for (const auto& e : events) {
        if (json_text(e, {"kind"}) == "health" &&
            json::serialize(e).find(two.address()) != std::string::npos) {
            names_endpoint = true;
        }
    }
    EXPECT_TRUE(names_endpoint) << "health events name the endpoint: " << describe(events);
    const json::value after = admin.service("app");
    EXPECT_EQ(generation_of(after), generation_of(before)) << "health changes keep the generation";
}

// SPEC §5: `consecutive_failures` 5xx in a row eject an endpoint, never more
// than max_ejection_percent of a pool (here 1 of 2); the ejection ends after
// base_ejection and the endpoint gets traffic again.
TEST_F(operations_e2e, OutlierEjectionAndCap) {
    upstream one("blue-1");
    upstream two("blue-2");
    ASSERT_TRUE(start(service_yaml(
        "app", "blue", pool_yaml("blue", {one.address(), two.address()}, 100),
        "    outlier_detection: {consecutive_failures: 3, base_ejection: 1s, "
        "max_ejection_percent: 50}\n")));
    admin_client admin(admin_port());
    http_client client(port());
    one.set_status(500);
    two.set_status(500);

    int most_ejected = 0;
    const auto ejected_count = [&](const json::value& s) {
        int n = 0;
        for (const upstream* u : {&one, &two}) {
            n += endpoint_flag(s, "blue", u->address(), "ejected") == true ? 1 : 0;
        }
        most_ejected = std::max(most_ejected, n);
        return n;
    };
    json::value service;
    ASSERT_TRUE(wait_until(
        [&] {
            for (int i = 0; i < 4; ++i) {
                client.request("GET", "/failing");
            }
            service = admin.service("app");
            return ejected_count(service) > 0;
        },
        10s, "an endpoint ejected"))
        << json::serialize(service);
    const auto t_ejected = clock_type::now();
    const bool one_ejected = endpoint_flag(service, "blue", one.address(), "ejected") == true;
    upstream& ejected = one_ejected ? one : two;
    upstream& other = one_ejected ? two : one;
    std::cout << "[outlier] " << ejected.name() << " ejected after " << ejected.request_count()
              << " requests to it\n";

    // The other keeps failing, but the cap leaves it in: still one ejected.
    for (int i = 0; i < 12; ++i) {
        EXPECT_EQ(client.request("GET", "/still-failing").status, 500u);
    }
    service = admin.service("app");
    EXPECT_EQ(ejected_count(service), 1) << "max_ejection_percent 50 of 2 endpoints: one at most, "
                                         << json::serialize(service);

    // Recovered: the ejected one gets nothing while ejected, traffic after.
    one.set_status(200);
    two.set_status(200);
    const std::size_t while_ejected = ejected.request_count();
    std::map<std::string, int> recovered;
    for (int i = 0; i < 20; ++i) {
        const http_response r = client.request("GET", "/recovered");
        EXPECT_EQ(r.status, 200u);
        ++recovered[r.header("X-Upstream")];
    }
    service = admin.service("app");
    // Still ejected now means ejected all along: with every status 200 no
    // new ejection can have started.
    if (endpoint_flag(service, "blue", ejected.address(), "ejected") == true) {
        EXPECT_EQ(ejected.request_count(), while_ejected) << "an ejected endpoint got traffic";
        EXPECT_EQ(recovered, (std::map<std::string, int>{{other.name(), 20}}));
    } else {
        std::cout << "[outlier] (the ejection ended during the 20 requests: "
                     "no check of the ejected endpoint's silence)\n";
    }

    ASSERT_TRUE(wait_until(
        [&] {
            client.request("GET", "/waiting");
            service = admin.service("app");
            return endpoint_flag(service, "blue", ejected.address(), "ejected") == false;
        },
        15s, "the ejection to end (base_ejection 1s)"))
        << json::serialize(service);
    std::cout << "[outlier] ejection of " << ejected.name() << " ended after "
              << ms_since(t_ejected) << " ms\n";
    EXPECT_TRUE(wait_until(
        [&] {
            client.request("GET", "/back");
            return ejected.request_count() > while_ejected;
        },
        10s, "traffic on the endpoint after its ejection"));
    EXPECT_LE(most_ejected, 1) << "both endpoints were ejected at once";
}

// Contract: a smoke failure refuses the switch with 409 and details, nothing
// changes; unknown pool 400, unknown service 404, missing `to` 400.
TEST_F(operations_e2e, SwitchRefusedWhenSmokeFails) {
    upstream blue("blue");
    upstream green1("green-1");
    upstream green2("green-2");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("green", {green1.address(), green2.address()}, 0),
                                   smoke_healthz)));
    admin_client admin(admin_port());
    const json::value before = admin.service("app");
    ASSERT_FALSE(before.is_null());
    const double events_before = last_event_id(admin);
    green2.set_health_status(500);

    const http_response r = admin.post("/api/v1/services/app/switch", R"({"to":"green"})");
    EXPECT_EQ(r.status, 409u) << r.body;
    const json::value body = parse_json(r.body);
    EXPECT_FALSE(json_text(body, {"error"}).empty()) << r.body;
    const json::value* failures = json_at(body, {"details", "failures"});
    ASSERT_TRUE(failures != nullptr && failures->is_array()) << r.body;
    bool green2_reported = false;
    for (const json::value& f : failures->get_array()) {
        EXPECT_NE(json_text(f, {"endpoint"}), green1.address())
            << "green-1 passed its smoke test: " << r.body;
        if (json_text(f, {"endpoint"}) == green2.address()) {
            green2_reported = true;
            EXPECT_EQ(json_text(f, {"path"}), "/healthz") << r.body;
            EXPECT_EQ(json_number(f, {"status"}), 500.0) << r.body;
            EXPECT_EQ(json_text(f, {"error"}), "") << r.body;
        }
    }
    EXPECT_TRUE(green2_reported) << "the failure names green-2: " << r.body;

    const json::value after = admin.service("app");
    EXPECT_EQ(generation_of(after), generation_of(before)) << json::serialize(after);
    EXPECT_EQ(stable_of(after), "blue");
    EXPECT_EQ(pool_weight(after, "blue"), 100.0);
    EXPECT_EQ(pool_weight(after, "green"), 0.0);
    const std::vector<json::value> events = events_of(admin, "app", events_before);
    EXPECT_EQ(count_events(events, "switch", "admin"), 0) << describe(events);

    EXPECT_EQ(admin.post("/api/v1/services/app/switch", R"({"to":"purple"})").status, 400u);
    EXPECT_EQ(admin.post("/api/v1/services/nope/switch", R"({"to":"green"})").status, 404u);
    EXPECT_EQ(admin.post("/api/v1/services/app/switch", R"({})").status, 400u);
    EXPECT_EQ(generation_of(admin.service("app")), generation_of(before));

    const auto seen = send_requests(port(), 20, "after-refusal");
    EXPECT_EQ(seen, (std::map<std::string, int>{{"blue", 20}}));
}

// Contract: switch smoke-tests the target, then green 100, blue 0, stable
// green, generation + 1, a `switch` event by `admin`; traffic follows; a
// stale If-Match gets 412 and changes nothing.
TEST_F(operations_e2e, SwitchSucceeds) {
    upstream blue("blue");
    upstream green("green");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("green", {green.address()}, 0),
                                   smoke_healthz)));
    admin_client admin(admin_port());
    const json::value before = admin.service("app");
    ASSERT_FALSE(before.is_null());
    const auto generation = static_cast<std::uint64_t>(generation_of(before));
    const double events_before = last_event_id(admin);
    load_generator load(port());
    ASSERT_TRUE(load.wait_for_requests(100));
    EXPECT_EQ(green.request_count(), 0u);
    const std::size_t smoke_before = green.health_check_count();

    const auto t0 = clock_type::now();
    const http_response r =
        admin.post("/api/v1/services/app/switch", R"({"to":"green"})", generation);
    std::cout << "[switch] answered in " << ms_since(t0) << " ms\n";
    ASSERT_EQ(r.status, 200u) << r.body;
    const json::value answered = parse_json(r.body);
    EXPECT_EQ(stable_of(answered), "green") << r.body;
    EXPECT_TRUE(only_pool_has_weight(answered, "green"));
    EXPECT_EQ(generation_of(answered), static_cast<double>(generation + 1)) << r.body;
    EXPECT_GT(green.health_check_count(), smoke_before) << "the smoke test asked green /healthz";

    const std::vector<json::value> events = events_of(admin, "app", events_before);
    EXPECT_EQ(count_events(events, "switch", "admin"), 1) << describe(events);

    ASSERT_TRUE(load.wait_for_requests(100));
    const std::size_t blue_after = blue.request_count();
    const std::size_t green_after = green.request_count();
    ASSERT_TRUE(load.wait_for_requests(200));
    EXPECT_EQ(blue.request_count(), blue_after) << "traffic reached blue after the switch";
    EXPECT_GT(green.request_count(), green_after);

    // If-Match naming the generation before the switch: 412, nothing changes.
    const http_response stale =
        admin.post("/api/v1/services/app/switch", R"({"to":"blue"})", generation);
    EXPECT_EQ(stale.status, 412u) << stale.body;
    const json::value now = admin.service("app");
    EXPECT_EQ(stable_of(now), "green");
    EXPECT_TRUE(only_pool_has_weight(now, "green"));
    EXPECT_EQ(generation_of(now), static_cast<double>(generation + 1));
    load.stop();
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();
    EXPECT_EQ(load.failures(), 0u) << load.summary();
}

// Contract: during post_switch_watch a new stable that breaks the thresholds
// against the old stable's baseline is switched back: stable blue again,
// rollout reverted, a `revert` event by `guard`.
TEST_F(operations_e2e, PostSwitchWatchSwitchesBack) {
    upstream blue("blue");
    upstream green("green");
    ASSERT_TRUE(start(service_yaml(
        "app", "blue",
        pool_yaml("blue", {blue.address()}, 100) + pool_yaml("green", {green.address()}, 0),
        "    guard: {window: 5s, evaluate_every: 200ms, min_requests: 20, post_switch_watch: 1m}\n" +
            no_ejection + smoke_healthz)));
    admin_client admin(admin_port());
    load_generator load(port());
    // Enough of blue in the window for the baseline captured at the switch.
    ASSERT_TRUE(poll_service(
        admin, "app",
        [](const json::value& s) { return json_number(s, {"pools", "blue", "stats", "requests"}) >= 100; },
        20s, "100 blue requests in the window"))
        << load.summary();

    const http_response r = admin.post("/api/v1/services/app/switch", R"({"to":"green"})");
    ASSERT_EQ(r.status, 200u) << r.body;
    const double switched_at_event = last_event_id(admin);
    ASSERT_TRUE(wait_until([&] { return green.request_count() > 0; }, 10s, "traffic on green"));

    const auto t0 = clock_type::now();
    green.set_error_rate(0.5, 500, 5);
    json::value service;
    ASSERT_TRUE(poll_service(
        admin, "app",
        [](const json::value& s) {
            return json_text(s, {"stable"}) == "blue" && rollout_state(s) == "reverted";
        },
        30s, "the guard to switch back to blue", &service))
        << load.summary();
    std::cout << "[watch] green at 50 % errors from T0: switched back after " << ms_since(t0)
              << " ms; load " << load.summary() << "\n";
    EXPECT_TRUE(only_pool_has_weight(service, "blue"));
    const std::string reason = json_text(service, {"rollout", "reason"});
    EXPECT_NE(reason.find("error_rate"), std::string::npos) << reason;

    const std::vector<json::value> events = events_of(admin, "app", switched_at_event);
    EXPECT_EQ(count_events(events, "revert", "guard"), 1) << describe(events);

    ASSERT_TRUE(load.wait_for_requests(100));
    const std::size_t green_after = green.request_count();
    ASSERT_TRUE(load.wait_for_requests(200));
    EXPECT_EQ(green.request_count(), green_after) << "traffic reached green after the switch back";
}

// Contract: rollback with a weighted non-stable pool: stable 100, rest 0
// (event `rollback`); after a switch: back to the previous stable.
TEST_F(operations_e2e, RollbackAfterWeightsAndAfterSwitch) {
    upstream blue("blue");
    upstream green("green");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("canary", {canary.address()}, 0) +
                                       pool_yaml("green", {green.address()}, 0),
                                   smoke_healthz)));
    admin_client admin(admin_port());

    // After a weights change.
    http_response r = admin.put("/api/v1/services/app/weights", R"({"weights":{"blue":80,"canary":20}})");
    ASSERT_EQ(r.status, 200u) << r.body;
    const double weights_event = last_event_id(admin);
    const double generation = generation_of(admin.service("app"));
    r = admin.post("/api/v1/services/app/rollback");
    ASSERT_EQ(r.status, 200u) << r.body;
    json::value service = admin.service("app");
    EXPECT_EQ(stable_of(service), "blue");
    EXPECT_TRUE(only_pool_has_weight(service, "blue"));
    EXPECT_EQ(generation_of(service), generation + 1);
    std::vector<json::value> events = events_of(admin, "app", weights_event);
    EXPECT_EQ(count_events(events, "rollback", "admin"), 1) << describe(events);
    EXPECT_EQ(send_requests(port(), 20, "after-rollback"),
              (std::map<std::string, int>{{"blue", 20}}));

    // After a switch: back to blue.
    r = admin.post("/api/v1/services/app/switch", R"({"to":"green"})");
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(stable_of(parse_json(r.body)), "green");
    const double switch_event = last_event_id(admin);
    r = admin.post("/api/v1/services/app/rollback");
    ASSERT_EQ(r.status, 200u) << r.body;
    service = admin.service("app");
    EXPECT_EQ(stable_of(service), "blue") << json::serialize(service);
    EXPECT_TRUE(only_pool_has_weight(service, "blue"));
    events = events_of(admin, "app", switch_event);
    EXPECT_EQ(events.size(), 1u) << "one event for the rollback: " << describe(events);
    if (!events.empty()) {
        EXPECT_EQ(json_text(events.back(), {"actor"}), "admin");
    }
    EXPECT_EQ(send_requests(port(), 20, "after-switch-back"),
              (std::map<std::string, int>{{"blue", 20}}));
}

// Contract: nothing to roll back (stable alone, no switch) -> 409, nothing changes.
TEST_F(operations_e2e, RollbackWithNothingIs409) {
    upstream blue("blue");
    upstream green("green");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("green", {green.address()}, 0))));
    admin_client admin(admin_port());
    const json::value before = admin.service("app");
    const http_response r = admin.post("/api/v1/services/app/rollback");
    EXPECT_EQ(r.status, 409u) << r.body;
    EXPECT_FALSE(json_text(parse_json(r.body), {"error"}).empty()) << r.body;
    const json::value after = admin.service("app");
    EXPECT_EQ(generation_of(after), generation_of(before));
    EXPECT_TRUE(only_pool_has_weight(after, "blue"));
    EXPECT_EQ(admin.post("/api/v1/services/nope/rollback").status, 404u);
}

// Contract: promote smoke-tests the pool (409 and nothing changed on
// failure), then it becomes stable at 100 and the rollout `promoted`, a
// `promote` event by `admin`; promoting the stable pool is 400; a rollback
// afterwards returns to the previous stable.
TEST_F(operations_e2e, PromoteAndItsRefusals) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 80) +
                                       pool_yaml("canary", {canary.address()}, 20),
                                   smoke_healthz)));
    admin_client admin(admin_port());
    const json::value before = admin.service("app");
    ASSERT_FALSE(before.is_null());
    const double events_before = last_event_id(admin);

    canary.set_health_status(500);
    http_response r = admin.post("/api/v1/services/app/promote", R"({"pool":"canary"})");
    EXPECT_EQ(r.status, 409u) << r.body;
    const json::value refused = admin.service("app");
    EXPECT_EQ(generation_of(refused), generation_of(before)) << json::serialize(refused);
    EXPECT_EQ(stable_of(refused), "blue");
    EXPECT_EQ(pool_weight(refused, "canary"), 20.0);
    EXPECT_EQ(pool_weight(refused, "blue"), 80.0);

    // Without a body: the non-stable pool with the most weight, canary.
    canary.set_health_status(200);
    r = admin.post("/api/v1/services/app/promote");
    ASSERT_EQ(r.status, 200u) << r.body;
    const json::value promoted = parse_json(r.body);
    EXPECT_EQ(stable_of(promoted), "canary") << r.body;
    EXPECT_TRUE(only_pool_has_weight(promoted, "canary"));
    EXPECT_EQ(rollout_state(promoted), "promoted") << r.body;
    EXPECT_EQ(generation_of(promoted), generation_of(before) + 1) << r.body;
    const std::vector<json::value> events = events_of(admin, "app", events_before);
    EXPECT_EQ(count_events(events, "promote", "admin"), 1) << describe(events);
    EXPECT_EQ(send_requests(port(), 20, "after-promote"),
              (std::map<std::string, int>{{"canary", 20}}));

    r = admin.post("/api/v1/services/app/promote", R"({"pool":"canary"})");
    EXPECT_EQ(r.status, 400u) << "canary is already stable: " << r.body;
    EXPECT_EQ(admin.post("/api/v1/services/app/promote", R"({"pool":"purple"})").status, 400u);

    r = admin.post("/api/v1/services/app/rollback");
    ASSERT_EQ(r.status, 200u) << r.body;
    const json::value back = admin.service("app");
    EXPECT_EQ(stable_of(back), "blue") << json::serialize(back);
    EXPECT_TRUE(only_pool_has_weight(back, "blue"));
}

std::string rollout_steps(std::string_view interval) {
    return "    rollout: {steps: [20, 50, 100], step_interval: " + std::string(interval) +
           ", auto_promote: true}\n";
}

// Contract: a rollout starts at steps[0], advances after each unbroken
// step_interval with verdict pass (events `rollout` by `rollout`) and, after
// the last step, promotes (`promote` by `rollout`): canary stable at 100.
TEST_F(operations_e2e, RolloutAdvancesAndPromotes) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("canary", {canary.address()}, 0),
                                   fast_guard + rollout_steps("1s") + smoke_healthz)));
    admin_client admin(admin_port());
    load_generator load(port());
    ASSERT_TRUE(load.wait_for_requests(100));
    const double events_before = last_event_id(admin);

    const auto t0 = clock_type::now();
    const http_response r =
        admin.post("/api/v1/services/app/rollout", R"({"action":"start","pool":"canary"})");
    ASSERT_EQ(r.status, 200u) << r.body;
    const json::value started = parse_json(r.body);
    EXPECT_EQ(rollout_state(started), "progressing") << r.body;
    EXPECT_EQ(json_text(started, {"rollout", "pool"}), "canary") << r.body;
    EXPECT_EQ(json_number(started, {"rollout", "step"}), 0.0) << r.body;
    EXPECT_EQ(pool_weight(started, "canary"), 20.0) << r.body;
    EXPECT_EQ(pool_weight(started, "blue"), 80.0) << r.body;

    std::vector<std::pair<double, long long>> steps_seen{{20.0, 0}};
    bool weights_add_up = true;
    json::value service;
    ASSERT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            const double w = pool_weight(s, "canary");
            if (rollout_state(s) == "progressing") {
                weights_add_up = weights_add_up && w + pool_weight(s, "blue") == 100.0;
                if (w != steps_seen.back().first) {
                    steps_seen.emplace_back(w, ms_since(t0));
                }
            }
            return rollout_state(s) != "progressing";
        },
        40s, "the rollout to finish", &service))
        << load.summary();
    std::cout << "[rollout] canary weight over time (weight@ms):";
    for (const auto& [w, at] : steps_seen) {
        std::cout << " " << w << "@" << at;
    }
    std::cout << "; ended " << rollout_state(service) << " after " << ms_since(t0)
              << " ms; load " << load.summary() << "\n";

    EXPECT_EQ(rollout_state(service), "promoted") << json::serialize(service);
    EXPECT_EQ(stable_of(service), "canary");
    EXPECT_TRUE(only_pool_has_weight(service, "canary"));
    EXPECT_TRUE(weights_add_up) << "blue + canary = 100 at every step";
    EXPECT_TRUE(std::is_sorted(steps_seen.begin(), steps_seen.end()))
        << "the canary's share only grows";
    for (const auto& [w, at] : steps_seen) {
        EXPECT_TRUE(w == 20.0 || w == 50.0 || w == 100.0) << "weight " << w << " is not a step";
    }

    const std::vector<json::value> events = events_of(admin, "app", events_before);
    EXPECT_GE(count_events(events, "rollout", "rollout"), 2)
        << "one event per advance (to 50, to 100): " << describe(events);
    EXPECT_EQ(count_events(events, "promote", "rollout"), 1) << describe(events);

    ASSERT_TRUE(load.wait_for_requests(100));
    const std::size_t blue_after = blue.request_count();
    ASSERT_TRUE(load.wait_for_requests(200));
    EXPECT_EQ(blue.request_count(), blue_after) << "traffic reached blue after the promotion";
    load.stop();
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();
}

// Contract: the guard reverts a rollout whose canary goes bad mid-way.
TEST_F(operations_e2e, RolloutRevertedWhenCanaryGoesBad) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("canary", {canary.address()}, 0),
                                   fast_guard + no_ejection + rollout_steps("2s"))));
    admin_client admin(admin_port());
    load_generator load(port());
    ASSERT_TRUE(load.wait_for_requests(100));

    http_response r =
        admin.post("/api/v1/services/app/rollout", R"({"action":"start","pool":"canary"})");
    ASSERT_EQ(r.status, 200u) << r.body;
    ASSERT_TRUE(poll_service(
        admin, "app",
        [](const json::value& s) { return json_number(s, {"rollout", "step"}) == 1.0; }, 30s,
        "the rollout at its second step"))
        << load.summary();

    const auto t0 = clock_type::now();
    canary.set_error_rate(0.5, 500, 9);
    json::value service;
    ASSERT_TRUE(poll_service(
        admin, "app", [](const json::value& s) { return rollout_state(s) != "progressing"; }, 30s,
        "the rollout to end", &service))
        << load.summary();
    std::cout << "[rollout] canary at 50 % errors mid-rollout: ended "
              << rollout_state(service) << " after " << ms_since(t0) << " ms\n";
    EXPECT_EQ(rollout_state(service), "reverted") << json::serialize(service);
    EXPECT_EQ(json_text(service, {"rollout", "pool"}), "canary");
    const std::string reason = json_text(service, {"rollout", "reason"});
    EXPECT_NE(reason.find("error_rate"), std::string::npos) << reason;
    EXPECT_EQ(stable_of(service), "blue");
    EXPECT_TRUE(only_pool_has_weight(service, "blue"));
    EXPECT_EQ(count_events(events_of(admin, "app"), "revert", "guard"), 1);

    // A reverted rollout does not carry on: past one more step_interval.
    EXPECT_TRUE(service_holds(
        admin, "app",
        [](const json::value& s) {
            return rollout_state(s) == "reverted" && pool_weight(s, "canary") == 0.0;
        },
        2500ms, "reverted, canary at 0"));
}

// Contract: pause -> paused, resume -> progressing, abort -> weights back and
// reverted ("aborted"); an action that does not fit the state 409, an unknown
// action 400; every change a new generation.
TEST_F(operations_e2e, RolloutPauseResumeAbort) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("canary", {canary.address()}, 0),
                                   fast_guard + rollout_steps("1m"))));
    admin_client admin(admin_port());
    const std::string target = "/api/v1/services/app/rollout";
    double generation = generation_of(admin.service("app"));
    const double events_before = last_event_id(admin);

    http_response r = admin.post(target, R"({"action":"pause"})");
    EXPECT_EQ(r.status, 409u) << "pause with no rollout: " << r.body;
    r = admin.post(target, R"({"action":"jump"})");
    EXPECT_EQ(r.status, 400u) << "unknown action: " << r.body;
    EXPECT_EQ(generation_of(admin.service("app")), generation);

    const auto expect_step = [&](std::string_view action, std::string_view state,
                                 double canary_weight) {
        SCOPED_TRACE(std::string(action));
        const http_response res =
            admin.post(target, "{\"action\":\"" + std::string(action) + "\"" +
                                   (action == "start" ? ",\"pool\":\"canary\"}" : "}"));
        ASSERT_EQ(res.status, 200u) << res.body;
        const json::value s = admin.service("app");
        EXPECT_EQ(rollout_state(s), state) << json::serialize(s);
        EXPECT_EQ(pool_weight(s, "canary"), canary_weight) << json::serialize(s);
        EXPECT_EQ(pool_weight(s, "blue"), 100.0 - canary_weight) << json::serialize(s);
        EXPECT_GT(generation_of(s), generation) << "a rollout state change is a new generation";
        generation = generation_of(s);
    };
    expect_step("start", "progressing", 20.0);
    r = admin.post(target, R"({"action":"start","pool":"canary"})");
    EXPECT_EQ(r.status, 409u) << "start while progressing: " << r.body;
    expect_step("pause", "paused", 20.0);
    expect_step("resume", "progressing", 20.0);
    expect_step("abort", "reverted", 0.0);

    const json::value service = admin.service("app");
    const std::string reason = json_text(service, {"rollout", "reason"});
    EXPECT_NE(reason.find("aborted"), std::string::npos) << reason;
    EXPECT_TRUE(only_pool_has_weight(service, "blue"));
    const std::vector<json::value> events = events_of(admin, "app", events_before);
    EXPECT_EQ(events.size(), 4u) << "start, pause, resume, abort: " << describe(events);
    for (const auto& e : events) {
        EXPECT_EQ(json_text(e, {"actor"}), "admin") << json::serialize(e);
    }
}

// SPEC §6: GET /api/v1/events?since=N returns ids > N in ascending order;
// `since` not a number 400; events_file holds one JSON object per line and
// per event, the same as the API's.
TEST_F(operations_e2e, EventsSinceAndEventsFile) {
    upstream blue("blue");
    upstream canary("canary");
    const std::string events_file = dir().file("events.jsonl");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("canary", {canary.address()}, 0)),
                      {.top_level = "events_file: " + events_file + "\n"}));
    admin_client admin(admin_port());

    ASSERT_EQ(admin.put("/api/v1/services/app/weights", R"({"weights":{"canary":10}})").status, 200u);
    ASSERT_EQ(admin.put("/api/v1/services/app/weights", R"({"weights":{"blue":90}})").status, 200u);
    ASSERT_EQ(admin.post("/api/v1/services/app/rollback").status, 200u);

    const json::array all = admin.events(0);
    std::vector<double> ids;
    for (const json::value& e : all) {
        ids.push_back(json_number(e, {"id"}));
        for (std::string_view key : {"id", "time", "service", "kind", "actor", "before", "after"}) {
            EXPECT_NE(json_at(e, {key}), nullptr) << "event lacks " << key << ": " << json::serialize(e);
        }
    }
    ASSERT_GE(ids.size(), 3u) << json::serialize(all);
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()) &&
                std::adjacent_find(ids.begin(), ids.end()) == ids.end())
        << "ids strictly ascending: " << json::serialize(all);
    const std::vector<json::value> mine = events_of(admin, "app");
    ASSERT_GE(mine.size(), 3u);
    EXPECT_EQ(json_text(mine[mine.size() - 3], {"kind"}), "weights");
    EXPECT_EQ(json_text(mine[mine.size() - 2], {"kind"}), "weights");
    EXPECT_EQ(json_text(mine.back(), {"kind"}), "rollback");

    // since=N: exactly the events after N.
    const auto first = static_cast<std::uint64_t>(ids.front());
    const json::array later = admin.events(first);
    ASSERT_EQ(later.size(), all.size() - 1) << json::serialize(later);
    for (std::size_t i = 0; i < later.size(); ++i) {
        EXPECT_EQ(later[i], all[i + 1]);
    }
    EXPECT_TRUE(admin.events(static_cast<std::uint64_t>(ids.back())).empty());
    EXPECT_EQ(admin.request("GET", "/api/v1/events?since=abc").status, 400u);

    // The file: one object per line, the same events.
    std::map<double, json::value> in_file;
    std::string text;
    EXPECT_TRUE(wait_until(
        [&] {
            std::ifstream in(events_file);
            std::stringstream content;
            content << in.rdbuf();
            text = content.str();
            in_file.clear();
            std::istringstream lines(text);
            std::string line;
            while (std::getline(lines, line)) {
                const json::value e = parse_json(line);
                if (e.is_object()) {
                    in_file[json_number(e, {"id"})] = e;
                }
            }
            return in_file.size() >= all.size();
        },
        10s, "every event in the events file"))
        << events_file << ":\n" << text;
    std::size_t lines = 0;
    std::istringstream split(text);
    for (std::string line; std::getline(split, line);) {
        ++lines;
        EXPECT_TRUE(parse_json(line).is_object()) << "not one JSON object: " << line;
    }
    EXPECT_EQ(lines, in_file.size()) << "one line per event";
    for (const json::value& e : all) {
        const auto found = in_file.find(json_number(e, {"id"}));
        ASSERT_NE(found, in_file.end()) << "missing in the file: " << json::serialize(e);
        for (std::string_view key :
             {"id", "time", "service", "kind", "actor", "before", "after", "reason"}) {
            const json::value* api = json_at(e, {key});
            const json::value* file = json_at(found->second, {key});
            ASSERT_TRUE(file != nullptr) << "file event lacks " << key;
            if (api != nullptr) {
                EXPECT_EQ(*file, *api) << key << " differs: file " << json::serialize(found->second)
                                       << " api " << json::serialize(e);
            }
        }
    }
}

}  // namespace
}  // namespace switchyard::test
