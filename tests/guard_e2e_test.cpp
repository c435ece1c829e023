// End-to-end tests of the guard through the real switchyard binary (SPEC §5,
// §6): automatic revert on errors, on latency and on an unavailable canary;
// no verdict without data; no revert of a canary as healthy as stable; the
// revert surviving a restart (state_file); a corrupt state file set aside;
// 503 with Retry-After when no pool can serve. Upstreams are in-process
// servers (tests/support/upstream.hpp) that name themselves in X-Upstream.
//
// Windows are small (window 5s, evaluate_every 200ms, min_requests 20) so
// that each test takes seconds. Times are printed, never asserted.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
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

// Service keys (four-space indent, see service_yaml).
const std::string fast_guard = "    guard: {window: 5s, evaluate_every: 200ms, min_requests: 20}\n";
// Outlier detection out of the way, so that the guard alone sees a bad canary
// (an ejected canary would be reverted as `unavailable` instead).
const std::string no_ejection = "    outlier_detection: {consecutive_failures: 1000}\n";
const std::string fast_health =
    "    health_check: {path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 2, "
    "unhealthy_threshold: 2}\n";

long long ms_since(clock_type::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
}

std::string verdict_of(const json::value& service, std::string_view pool) {
    return json_text(service, {"guard", "pools", pool, "verdict"});
}

bool is_reverted(const json::value& service) {
    return json_text(service, {"rollout", "state"}) == "reverted";
}

// The last event of `service` with this kind and actor, null when none.
json::value find_event(const json::array& events, std::string_view service, std::string_view kind,
                       std::string_view actor) {
    json::value found = nullptr;
    for (const json::value& e : events) {
        if (json_text(e, {"service"}) == service && json_text(e, {"kind"}) == kind &&
            json_text(e, {"actor"}) == actor) {
            found = e;
        }
    }
    return found;
}

const std::vector<std::string_view> decision_keys = {
    "pool",      "metric",      "pool_value", "baseline_value", "threshold", "pool_requests",
    "baseline_requests", "statistic", "lower_bound", "confidence", "test"};

// The state after a guard revert (contract): non-stable weights 0, stable
// 100, rollout reverted naming the pool and the metric, guard.decision the
// record; a `revert` event by `guard` carrying the same record in `details`.
void expect_reverted(admin_client& admin, const json::value& service, std::string_view stable,
                     std::string_view pool, std::string_view metric) {
    SCOPED_TRACE("SERVICE after the revert: " + json::serialize(service));
    EXPECT_EQ(json_text(service, {"stable"}), stable);
    EXPECT_EQ(json_text(service, {"rollout", "state"}), "reverted");
    EXPECT_EQ(json_text(service, {"rollout", "pool"}), pool);
    const std::string reason = json_text(service, {"rollout", "reason"});
    EXPECT_NE(reason.find(metric), std::string::npos)
        << "the rollout reason names the metric " << metric << ": " << reason;
    if (const json::value* pools = json_at(service, {"pools"}); pools && pools->is_object()) {
        for (const auto& entry : pools->get_object()) {
            const double expected = entry.key() == stable ? 100.0 : 0.0;
            EXPECT_EQ(pool_weight(service, entry.key()), expected) << "pool " << entry.key();
        }
    } else {
        ADD_FAILURE() << "SERVICE has no pools";
    }

    const json::value* decision = json_at(service, {"guard", "decision"});
    ASSERT_TRUE(decision != nullptr && decision->is_object()) << "guard.decision is the record";
    for (std::string_view key : decision_keys) {
        EXPECT_TRUE(decision->get_object().contains(key)) << "guard.decision lacks " << key;
    }
    EXPECT_EQ(json_text(*decision, {"pool"}), pool);
    EXPECT_EQ(json_text(*decision, {"metric"}), metric);
    if (metric != "unavailable") {
        EXPECT_GT(json_number(*decision, {"lower_bound"}), 0.0)
            << "a breach is significant: the lower bound of the excess is above zero";
        EXPECT_GT(json_number(*decision, {"pool_value"}), json_number(*decision, {"threshold"}));
        EXPECT_GE(json_number(*decision, {"pool_requests"}), 20.0) << "backed by min_requests";
        EXPECT_GE(json_number(*decision, {"confidence"}), 0.99);
    }

    const json::value revert = find_event(admin.events(0), json_text(service, {"name"}), "revert",
                                          "guard");
    ASSERT_FALSE(revert.is_null()) << "a revert event by the guard";
    const json::value* details = json_at(revert, {"details"});
    ASSERT_TRUE(details != nullptr && details->is_object())
        << "the revert event carries the decision in details: " << json::serialize(revert);
    for (std::string_view key : decision_keys) {
        const json::value* mine = details->get_object().if_contains(key);
        const json::value* theirs = decision->get_object().if_contains(key);
        ASSERT_TRUE(mine != nullptr) << "details lacks " << key << ": " << json::serialize(revert);
        if (theirs != nullptr) {
            EXPECT_EQ(*mine, *theirs) << "details." << key << " differs from guard.decision";
        }
    }
    EXPECT_FALSE(json_text(revert, {"reason"}).empty()) << json::serialize(revert);
}

class guard_e2e : public proxy_fixture {
protected:
    std::string canary_service(const upstream& blue, const upstream& canary, int blue_weight,
                               int canary_weight, const std::string& extra) {
        return service_yaml("app", "blue",
                            pool_yaml("blue", {blue.address()}, blue_weight) +
                                pool_yaml("canary", {canary.address()}, canary_weight),
                            extra);
    }

    // Both pools at 3 % errors (different seeds), 50/50, confidence 0.99:
    // load for `duration`, both pools re-seeded every `reseed_every`. Never a
    // revert, and the guard did judge: verdict `pass` seen, never `breach`.
    void run_equal_pools(std::chrono::seconds duration, std::chrono::seconds reseed_every) {
        upstream blue("blue");
        upstream canary("canary");
        ASSERT_TRUE(start(canary_service(
            blue, canary, 50, 50,
            "    guard: {window: 5s, evaluate_every: 200ms, min_requests: 20, confidence: 0.99}\n")));
        admin_client admin(admin_port());
        std::uint64_t round = 0;
        const auto reseed = [&] {
            blue.set_error_rate(0.03, 500, 1000 + 2 * round);
            canary.set_error_rate(0.03, 500, 1001 + 2 * round);
            ++round;
        };
        reseed();
        load_generator load(port());

        std::map<std::string, int> verdicts;
        json::value last;
        bool changed = false;
        const auto t0 = clock_type::now();
        auto next_reseed = t0 + reseed_every;
        while (clock_type::now() - t0 < duration) {
            json::value s = admin.service("app");
            if (s.is_null()) {
                ADD_FAILURE() << "GET /api/v1/services/app failed";
                break;
            }
            last = s;
            ++verdicts[verdict_of(s, "canary")];
            if (is_reverted(s) || pool_weight(s, "canary") != 50.0 ||
                json_text(s, {"stable"}) != "blue") {
                changed = true;
                break;
            }
            if (clock_type::now() >= next_reseed) {
                reseed();
                next_reseed += reseed_every;
            }
            // The cadence of the observation (about two reads per evaluation).
            std::this_thread::sleep_for(100ms);
        }
        load.stop();
        std::cout << "[guard] equal pools at 3 % errors for " << ms_since(t0) << " ms, " << round
                  << " seed pair(s): verdict reads " << testing::PrintToString(verdicts)
                  << "; load " << load.summary() << "; canary received " << canary.request_count()
                  << ", blue " << blue.request_count() << "\nlast guard figures: "
                  << (json_at(last, {"guard"}) != nullptr
                          ? json::serialize(*json_at(last, {"guard"}))
                          : std::string("none"))
                  << "\n";
        EXPECT_FALSE(changed) << "a canary as healthy as stable was reverted: "
                              << json::serialize(last) << "\nevents: "
                              << json::serialize(admin.events(0));
        EXPECT_GT(verdicts["pass"], 0) << "the guard never judged the canary";
        EXPECT_EQ(verdicts["breach"], 0);
        EXPECT_GE(canary.request_count(), 500u) << "the load was too light to mean anything";
    }
};

// Contract: canary errors under load -> reverted; metric error_rate; no
// traffic reaches canary afterwards. Prints the time to revert.
TEST_F(guard_e2e, TimeToRevertOnErrors) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(canary_service(blue, canary, 80, 20, fast_guard + no_ejection)));
    admin_client admin(admin_port());
    load_generator load(port());

    // The guard judges the healthy canary first: the revert below is its
    // reaction to the errors, not to a start-up artefact.
    ASSERT_TRUE(poll_service(
        admin, "app", [](const json::value& s) { return verdict_of(s, "canary") == "pass"; }, 20s,
        "the guard to pass a healthy canary"))
        << load.summary();

    const auto t0 = clock_type::now();
    canary.set_error_rate(0.5, 500, 7);
    json::value service;
    ASSERT_TRUE(poll_service(admin, "app", is_reverted, 30s, "the guard to revert", &service))
        << load.summary();
    const long long elapsed = ms_since(t0);
    std::cout << "[guard] canary at 50 % errors from T0: reverted after " << elapsed
              << " ms; load so far: " << load.summary() << "\n";
    RecordProperty("time_to_revert_ms", static_cast<int>(elapsed));

    expect_reverted(admin, service, "blue", "canary", "error_rate");

    // Requests in flight at the revert may still land on canary: let 100
    // pass, then none of the next 300 may.
    ASSERT_TRUE(load.wait_for_requests(100));
    const std::size_t canary_after = canary.request_count();
    ASSERT_TRUE(load.wait_for_requests(300));
    EXPECT_EQ(canary.request_count(), canary_after) << "traffic reached canary after the revert";
    load.stop();
    EXPECT_EQ(load.failures(), 0u) << load.summary();
}

// Contract: canary 300 ms slower than a fast blue -> reverted, metric p95.
TEST_F(guard_e2e, RevertsOnLatency) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(canary_service(blue, canary, 80, 20, fast_guard + no_ejection)));
    admin_client admin(admin_port());
    // Slow canary responses hold a thread each: more threads keep the rate up.
    load_generator load(port(), {.threads = 4, .rate_per_thread = 80});

    ASSERT_TRUE(poll_service(
        admin, "app", [](const json::value& s) { return verdict_of(s, "canary") == "pass"; }, 20s,
        "the guard to pass a healthy canary"))
        << load.summary();

    const auto t0 = clock_type::now();
    canary.set_delay(300ms);
    json::value service;
    ASSERT_TRUE(poll_service(admin, "app", is_reverted, 30s, "the guard to revert", &service))
        << load.summary();
    const long long elapsed = ms_since(t0);
    std::cout << "[guard] canary +300 ms from T0: reverted after " << elapsed
              << " ms; load so far: " << load.summary() << "\n";
    RecordProperty("time_to_revert_ms", static_cast<int>(elapsed));

    expect_reverted(admin, service, "blue", "canary", "p95");
    load.stop();
    EXPECT_EQ(load.not_ok(), 0u) << "slow is not an error: " << load.summary();
}

// Contract: fewer than min_requests -> insufficient_data, never a revert,
// however bad the few requests were.
TEST_F(guard_e2e, LowTrafficIsInsufficientData) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(canary_service(
        blue, canary, 50, 50,
        "    guard: {window: 30s, evaluate_every: 200ms, min_requests: 50}\n" + no_ejection)));
    admin_client admin(admin_port());
    canary.set_status(500);

    http_client client(port());
    for (int i = 0; i < 20; ++i) {
        const http_response r = client.request("GET", "/few/" + std::to_string(i));
        EXPECT_TRUE(r.status == 200 || r.status == 500) << r.status << " " << r.body;
    }
    const std::size_t canary_requests = canary.request_count();
    std::cout << "[guard] 20 requests, " << canary_requests << " of them to a failing canary\n";
    ASSERT_GT(canary_requests, 0u) << "50/50: some of 20 requests go to canary";

    // The guard has seen every canary failure and still does not judge.
    ASSERT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            return verdict_of(s, "canary") == "insufficient_data" &&
                   json_number(s, {"guard", "pools", "canary", "requests"}) >=
                       static_cast<double>(canary_requests);
        },
        10s, "verdict insufficient_data with every canary request in the window"));

    // Ten more evaluations (200 ms each): still no revert.
    EXPECT_TRUE(service_holds(
        admin, "app",
        [](const json::value& s) {
            return !is_reverted(s) && pool_weight(s, "canary") == 50.0 &&
                   verdict_of(s, "canary") == "insufficient_data";
        },
        2s, "no revert and verdict insufficient_data"));
}

// A pool that gets weight between two evaluations is judged on every request
// it served since, not only on those after the evaluation that first saw it.
// (Regression: the requests before that evaluation fell out of the window at
// the next one, and with them a first burst of failures; at startup, the
// requests before the first evaluation.)
TEST_F(guard_e2e, RequestsBeforeAPoolsFirstEvaluationAreJudged) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(canary_service(
        blue, canary, 50, 50,
        "    guard: {window: 60s, evaluate_every: 1s, min_requests: 1000}\n" + no_ejection)));
    admin_client admin(admin_port());
    const auto judged = [](const json::value& s) {
        return json_at(s, {"guard", "pools", "canary"}) != nullptr;
    };
    ASSERT_TRUE(poll_service(admin, "app", judged, 10s, "a first evaluation of canary"));
    // Weight 0: the next evaluation stops judging canary.
    ASSERT_EQ(admin.put("/api/v1/services/app/weights", R"({"weights":{"canary":0}})").status, 200u);
    ASSERT_TRUE(poll_service(
        admin, "app", [&](const json::value& s) { return !judged(s); }, 10s,
        "an evaluation without canary"));

    // Right after that evaluation (the next is up to 1 s away): weight back,
    // and a burst of failures.
    canary.set_status(500);
    ASSERT_EQ(admin.put("/api/v1/services/app/weights", R"({"weights":{"canary":50}})").status, 200u);
    canary.clear();
    http_client client(port());
    for (int i = 0; i < 20; ++i) {
        const http_response r = client.request("GET", "/early/" + std::to_string(i));
        EXPECT_TRUE(r.status == 200 || r.status == 500) << r.status << " " << r.body;
    }
    const std::size_t canary_requests = canary.request_count();
    ASSERT_GT(canary_requests, 0u) << "50/50: some of 20 requests go to canary";

    // The next evaluation counts all of them, and so do the ones after it
    // (held over two more evaluations).
    const auto all_counted = [&](const json::value& s) {
        return json_number(s, {"guard", "pools", "canary", "requests"}) ==
               static_cast<double>(canary_requests);
    };
    ASSERT_TRUE(poll_service(admin, "app", all_counted, 10s,
                             "every canary request in the guard's window"));
    EXPECT_TRUE(service_holds(
        admin, "app",
        [&](const json::value& s) {
            return all_counted(s) && verdict_of(s, "canary") == "insufficient_data";
        },
        2500ms, "the canary's requests stay in the window"));
}

// Contract: a canary with weight and no healthy endpoint for three
// evaluations is reverted, reason `unavailable`.
TEST_F(guard_e2e, UnavailableCanaryIsReverted) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(canary_service(blue, canary, 80, 20, fast_guard + fast_health)));
    admin_client admin(admin_port());
    load_generator load(port());
    ASSERT_TRUE(wait_until([&] { return canary.request_count() > 0; }, 20s, "traffic on canary"))
        << load.summary();

    const auto t0 = clock_type::now();
    canary.set_health_status(503);
    json::value service;
    ASSERT_TRUE(poll_service(admin, "app", is_reverted, 30s, "the guard to revert", &service))
        << load.summary();
    const long long elapsed = ms_since(t0);
    std::cout << "[guard] canary failing health checks from T0: reverted after " << elapsed
              << " ms; load so far: " << load.summary() << "\n";
    RecordProperty("time_to_revert_ms", static_cast<int>(elapsed));

    expect_reverted(admin, service, "blue", "canary", "unavailable");
    EXPECT_EQ(endpoint_flag(service, "canary", canary.address(), "healthy"), false)
        << json::serialize(service);
    load.stop();
    // Canary kept answering its (few) requests: its share went to blue.
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();
    EXPECT_EQ(load.failures(), 0u) << load.summary();
}


// SPEC §5: a canary as healthy as stable (same error rate, ordinary noise) is
// never reverted. Ten seconds here; the minute-long run below is opt-in.
TEST_F(guard_e2e, HealthyCanaryIsNotRevertedUnderShortLoad) {
    run_equal_pools(10s, 10s);
}

// The same for 60 s with a fresh seed pair every 10 s (the suite's longest
// test; ctest runs it beside the others).
TEST_F(guard_e2e, HealthyCanaryIsNotRevertedOverAMinute) {
    run_equal_pools(60s, 10s);
}

// Contract: after a revert, SIGTERM and a restart with the same config (where
// canary still has weight 20): canary stays at 0, the rollout stays reverted.
TEST_F(guard_e2e, PersistenceKeepsRevertAcrossRestart) {
    upstream blue("blue");
    upstream canary("canary");
    const std::string state_file = dir().file("state.json");
    ASSERT_TRUE(start(canary_service(blue, canary, 80, 20, fast_guard + no_ejection),
                      {.top_level = "state_file: " + state_file + "\n"}));
    admin_client admin(admin_port());
    canary.set_status(500);
    {
        load_generator load(port());
        json::value service;
        ASSERT_TRUE(poll_service(admin, "app", is_reverted, 30s, "the guard to revert", &service))
            << load.summary();
        EXPECT_EQ(pool_weight(service, "canary"), 0.0);
    }
    ASSERT_TRUE(std::filesystem::exists(state_file)) << "the revert is persisted in " << state_file;

    ASSERT_EQ(stop(), 0) << "SIGTERM drains and exits 0";
    ASSERT_TRUE(restart());

    admin_client again(admin_port());
    const json::value service = again.service("app");
    ASSERT_FALSE(service.is_null());
    SCOPED_TRACE("SERVICE after the restart: " + json::serialize(service));
    EXPECT_EQ(pool_weight(service, "canary"), 0.0) << "the restart brought the bad canary back";
    EXPECT_EQ(pool_weight(service, "blue"), 100.0);
    EXPECT_EQ(json_text(service, {"stable"}), "blue");
    EXPECT_EQ(json_text(service, {"rollout", "state"}), "reverted");
    EXPECT_EQ(json_text(service, {"rollout", "pool"}), "canary");

    const std::size_t canary_before = canary.request_count();
    http_client client(port());
    for (int i = 0; i < 50; ++i) {
        const http_response r = client.request("GET", "/after-restart/" + std::to_string(i));
        EXPECT_EQ(r.status, 200u);
        EXPECT_EQ(r.header("X-Upstream"), "blue");
    }
    EXPECT_EQ(canary.request_count(), canary_before);
}

// Contract: a state file that is not JSON does not stop the proxy; it is
// renamed aside to STATE.corrupt-<digits> in the same directory, untouched.
TEST_F(guard_e2e, CorruptStateFileIsSetAside) {
    upstream blue("blue");
    upstream canary("canary");
    const std::string corrupt = "{not json";
    const std::string state_file = dir().write("state/state.json", corrupt);
    ASSERT_TRUE(start(canary_service(blue, canary, 100, 0, fast_guard),
                      {.top_level = "state_file: " + state_file + "\n"}));

    // state.json.corrupt-<digits>
    const std::string aside_prefix = "state.json.corrupt-";
    std::vector<std::string> aside;
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir().file("state"))) {
        const std::string name = entry.path().filename().string();
        names.push_back(name);
        const std::string rest =
            name.starts_with(aside_prefix) ? name.substr(aside_prefix.size()) : std::string();
        if (!rest.empty() && std::all_of(rest.begin(), rest.end(), [](char c) {
                return c >= '0' && c <= '9';
            })) {
            aside.push_back(entry.path().string());
        }
    }
    ASSERT_EQ(aside.size(), 1u) << "one state.json.corrupt-<digits> beside the state file; found "
                                << testing::PrintToString(names);
    std::ifstream in(aside.front(), std::ios::binary);
    std::stringstream content;
    content << in.rdbuf();
    EXPECT_EQ(content.str(), corrupt) << "the corrupt file is set aside as it was";

    if (std::filesystem::exists(state_file)) {
        std::ifstream now(state_file, std::ios::binary);
        std::stringstream text;
        text << now.rdbuf();
        EXPECT_FALSE(parse_json(text.str()).is_null())
            << "a state file written after start is JSON: " << text.str();
    }
    EXPECT_NE(proxy().errors().find("state.json"), std::string::npos)
        << "the corrupt state file is reported, naming it";

    http_client client(port());
    const http_response r = client.request("GET", "/after-corrupt-state");
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.header("X-Upstream"), "blue");
    admin_client admin(admin_port());
    const json::value service = admin.service("app");
    EXPECT_EQ(pool_weight(service, "blue"), 100.0) << json::serialize(service);
}

// SPEC §3.4: every endpoint of every pool failing its checks -> 503 with
// Retry-After, and no upstream sees the request; one endpoint back -> 200.
TEST_F(guard_e2e, NoPoolCanServeIs503WithRetryAfter) {
    upstream one("blue-1");
    upstream two("blue-2");
    ASSERT_TRUE(start(service_yaml("app", "blue", pool_yaml("blue", {one.address(), two.address()}, 100),
                                   fast_health)));
    admin_client admin(admin_port());
    http_client client(port());
    EXPECT_EQ(client.request("GET", "/before").status, 200u);

    one.set_health_status(500);
    two.set_health_status(500);
    ASSERT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            return endpoint_flag(s, "blue", one.address(), "healthy") == false &&
                   endpoint_flag(s, "blue", two.address(), "healthy") == false;
        },
        10s, "both endpoints unhealthy"));

    const std::size_t served_before = one.request_count() + two.request_count();
    for (int i = 0; i < 5; ++i) {
        const http_response r = client.request("GET", "/nothing-can-serve/" + std::to_string(i));
        EXPECT_EQ(r.status, 503u) << r.body;
        EXPECT_FALSE(r.header("Retry-After").empty()) << "a 503 with Retry-After";
        EXPECT_FALSE(r.body.empty()) << "the proxy's own error says so";
        EXPECT_EQ(r.header("X-Upstream"), "");
    }
    EXPECT_EQ(one.request_count() + two.request_count(), served_before)
        << "no request reached an unhealthy endpoint";
    // The proxy's own 503s count for the service and its pool (SPEC §4, §7).
    const http_response metrics = admin.request("GET", "/metrics");
    ASSERT_EQ(metrics.status, 200u);
    EXPECT_NE(metrics.body.find(
                  "switchyard_requests_total{service=\"app\",pool=\"blue\",code=\"5xx\"} 5"),
              std::string::npos)
        << metrics.body.substr(0, 2000);

    two.set_health_status(200);
    http_response last;
    EXPECT_TRUE(wait_until(
        [&] {
            last = client.request("GET", "/recovered");
            return last.status == 200;
        },
        10s, "200 once an endpoint passes its checks again"))
        << "last: " << last.status << " " << last.body;
    EXPECT_EQ(last.header("X-Upstream"), "blue-2");
}

}  // namespace
}  // namespace switchyard::test
