// End-to-end routing through the real switchyard binary (SPEC §3, §6 weights):
// weighted split, override header, affinity, host and prefix matching, and a
// weight change under concurrent load. Upstreams are in-process servers
// (tests/support/upstream.hpp) that tag every response with X-Upstream.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/client.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

class routing_e2e : public proxy_fixture {};

// SPEC §3.2(b): a pool's share is its weight over the sum; weight 0 gets nothing.
TEST_F(routing_e2e, weighted_split_follows_the_weights_and_a_zero_weight_pool_gets_nothing) {
    upstream blue("blue");
    upstream canary("canary");
    upstream green("green");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 80) +
                                       pool_yaml("canary", {canary.address()}, 20) +
                                       pool_yaml("green", {green.address()}, 0))));

    constexpr int total = 3000;
    std::map<std::string, int> by_pool;
    int failures = 0;
    // Two connections, so that both workers are likely to take part.
    http_client a(port());
    http_client b(port());
    for (int i = 0; i < total; ++i) {
        auto r = (i % 2 == 0 ? a : b).request("GET", "/split/" + std::to_string(i));
        if (r.status != 200) {
            ++failures;
            continue;
        }
        ++by_pool[r.header("X-Upstream")];
    }
    EXPECT_EQ(failures, 0);
    const double blue_share = 100.0 * by_pool["blue"] / total;
    const double canary_share = 100.0 * by_pool["canary"] / total;
    std::cout << "[split] " << total << " requests: blue " << by_pool["blue"] << " ("
              << blue_share << " %), canary " << by_pool["canary"] << " (" << canary_share
              << " %), green " << by_pool["green"] << "\n";
    EXPECT_NEAR(blue_share, 80.0, 3.0);
    EXPECT_NEAR(canary_share, 20.0, 3.0);
    EXPECT_EQ(by_pool["green"], 0);
    EXPECT_EQ(green.request_count(), 0u);
    EXPECT_EQ(by_pool["blue"] + by_pool["canary"], total);
    EXPECT_EQ(blue.request_count() + canary.request_count(), static_cast<std::size_t>(total));
}

// SPEC §3.2(a): a pool name forces that pool (whatever its weight), "never"
// is stable, "always" (no rollout in progress) the non-stable pool with the
// most weight.
TEST_F(routing_e2e, override_header_forces_the_pool) {
    upstream blue("blue");
    upstream canary("canary");
    upstream green("green");
    upstream preview("preview");
    // "always" must pick green: the non-stable pool with the most weight,
    // which is neither the first nor the last non-stable pool by name.
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 60) +
                                       pool_yaml("canary", {canary.address()}, 10) +
                                       pool_yaml("green", {green.address()}, 30) +
                                       pool_yaml("preview", {preview.address()}, 0),
                                   "    override_header: X-Canary\n")));

    const std::vector<std::pair<std::string, std::string>> cases = {
        {"preview", "preview"}, {"canary", "canary"}, {"green", "green"},
        {"blue", "blue"},       {"never", "blue"},    {"always", "green"},
    };
    http_client client(port());
    for (const auto& [value, expected] : cases) {
        std::map<std::string, int> got;
        for (int i = 0; i < 25; ++i) {
            auto r = client.request("GET", "/o", {{"X-Canary", value}});
            EXPECT_EQ(r.status, 200u);
            ++got[r.header("X-Upstream")];
        }
        EXPECT_EQ(got[expected], 25) << "X-Canary: " << value << " must always go to " << expected
                                     << "; pools seen: " << testing::PrintToString(got);
    }
    // Without the header the weights apply: the weight-0 pool gets nothing.
    std::size_t preview_before = preview.request_count();
    for (int i = 0; i < 50; ++i) {
        EXPECT_EQ(client.request("GET", "/plain").status, 200u);
    }
    EXPECT_EQ(preview.request_count(), preview_before);
}

// SPEC §3.2: with affinity the choice is deterministic per key; a request
// carrying the key gets no cookie.
TEST_F(routing_e2e, affinity_key_always_lands_on_the_same_pool) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 50) +
                                       pool_yaml("canary", {canary.address()}, 50),
                                   "    affinity: {key: \"header:X-User-Id\"}\n")));

    // Several connections: they may be served by different workers, which
    // must agree without shared state.
    std::vector<std::unique_ptr<http_client>> clients;
    for (int i = 0; i < 4; ++i) {
        clients.push_back(std::make_unique<http_client>(port()));
    }
    std::map<std::string, int> users_per_pool;
    int unstable = 0;
    for (int u = 0; u < 40; ++u) {
        const std::string user = "user-" + std::to_string(u);
        std::set<std::string> pools;
        for (int i = 0; i < 8; ++i) {
            auto r = clients[static_cast<std::size_t>(i) % clients.size()]->request(
                "GET", "/a", {{"X-User-Id", user}});
            EXPECT_EQ(r.status, 200u);
            EXPECT_EQ(r.header_count("Set-Cookie"), 0)
                << "a request carrying the affinity key needs no cookie: " << r.header("Set-Cookie");
            pools.insert(r.header("X-Upstream"));
        }
        if (pools.size() != 1) {
            ++unstable;
            ADD_FAILURE() << user << " was sent to " << testing::PrintToString(pools);
        }
        ++users_per_pool[*pools.begin()];
    }
    EXPECT_EQ(unstable, 0);
    // 40 keys over a 50/50 split: both pools hold some of them.
    EXPECT_GT(users_per_pool["blue"], 0) << testing::PrintToString(users_per_pool);
    EXPECT_GT(users_per_pool["canary"], 0) << testing::PrintToString(users_per_pool);
}

// SPEC §3.2 and §2 affinity.cookie: without key and cookie, an id is issued in
// `sy_uid` (1 year, HttpOnly) and used at once; sending it back keeps the pool.
TEST_F(routing_e2e, affinity_cookie_is_issued_and_keeps_the_pool) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 50) +
                                       pool_yaml("canary", {canary.address()}, 50),
                                   "    affinity: {key: \"header:X-User-Id\"}\n")));

    http_client client(port());
    http_client other(port());
    std::set<std::string> ids;
    std::map<std::string, int> ids_per_pool;
    for (int n = 0; n < 20; ++n) {
        auto first = client.request("GET", "/c");
        ASSERT_EQ(first.status, 200u);
        ASSERT_EQ(first.header_count("Set-Cookie"), 1);
        const std::string cookie = first.header("Set-Cookie");
        ASSERT_EQ(cookie.rfind("sy_uid=", 0), 0u) << cookie;
        const auto end = cookie.find(';');
        const std::string value = cookie.substr(7, end == std::string::npos ? end : end - 7);
        ASSERT_FALSE(value.empty()) << cookie;
        EXPECT_NE(lower(cookie).find("httponly"), std::string::npos) << cookie;
        EXPECT_TRUE(lower(cookie).find("max-age=31536000") != std::string::npos ||
                    lower(cookie).find("expires=") != std::string::npos)
            << "the cookie lasts a year: " << cookie;
        ids.insert(value);
        const std::string pool = first.header("X-Upstream");
        ++ids_per_pool[pool];

        for (int i = 0; i < 6; ++i) {
            // Alone, and among other cookies, on two connections.
            const std::string header =
                i % 2 == 0 ? "sy_uid=" + value : "theme=dark; sy_uid=" + value + "; lang=en";
            auto r = (i % 3 == 0 ? other : client).request("GET", "/c", {{"Cookie", header}});
            EXPECT_EQ(r.status, 200u);
            EXPECT_EQ(r.header("X-Upstream"), pool)
                << "sy_uid=" << value << " first went to " << pool << " (Cookie: " << header << ")";
            EXPECT_EQ(r.header_count("Set-Cookie"), 0) << "a returning client gets no new id";
        }
    }
    EXPECT_EQ(ids.size(), 20u) << "every issued id is new";
    EXPECT_GT(ids_per_pool["blue"], 0) << testing::PrintToString(ids_per_pool);
    EXPECT_GT(ids_per_pool["canary"], 0) << testing::PrintToString(ids_per_pool);
}

// SPEC §3.1: exact host, then the longest *.suffix (any depth, not the bare
// suffix), then host-less services; then the longest segment-aware prefix.
TEST_F(routing_e2e, host_and_longest_prefix_matching_and_404) {
    upstream wild("wild");
    upstream shop("shop");
    upstream api("api");
    upstream apiv2("apiv2");
    ASSERT_TRUE(start(
        service_yaml("wild", "main", pool_yaml("main", {wild.address()}, 100),
                     "    hosts: [\"*.example.com\"]\n    path_prefix: /\n") +
        service_yaml("shop", "main", pool_yaml("main", {shop.address()}, 100),
                     "    hosts: [\"shop.example.com\"]\n    path_prefix: /\n") +
        service_yaml("api", "main", pool_yaml("main", {api.address()}, 100),
                     "    path_prefix: /api\n") +
        service_yaml("apiv2", "main", pool_yaml("main", {apiv2.address()}, 100),
                     "    path_prefix: /api/v2\n")));

    struct expectation {
        std::string host;
        std::string target;
        std::string upstream;  // "" = 404
    };
    const std::vector<expectation> cases = {
        {"a.example.com", "/x", "wild"},
        {"a.b.example.com", "/x", "wild"},
        {"a.b.example.com:8080", "/x", "wild"},
        {"A.B.Example.COM", "/x", "wild"},
        {"shop.example.com", "/x", "shop"},
        {"SHOP.example.com:80", "/x", "shop"},
        {"example.com", "/x", ""},
        {"badexample.com", "/x", ""},
        {"example.com", "/api", "api"},
        {"example.com", "/api/x", "api"},
        {"example.com", "/api/v20", "api"},
        {"example.com", "/api/v2", "apiv2"},
        {"example.com", "/api/v2/items?id=1", "apiv2"},
        {"localhost", "/apix", ""},
        {"other.test", "/", ""},
    };
    http_client client(port());
    std::size_t routed = 0;
    for (const auto& c : cases) {
        auto r = client.request("GET", c.target, {{"Host", c.host}});
        if (c.upstream.empty()) {
            EXPECT_EQ(r.status, 404u) << "Host: " << c.host << " " << c.target;
            EXPECT_EQ(r.header("X-Upstream"), "") << "Host: " << c.host << " " << c.target;
            EXPECT_NE(r.body.find("switchyard"), std::string::npos)
                << "the proxy's own 404 says so: " << r.body;
        } else {
            ++routed;
            EXPECT_EQ(r.status, 200u) << "Host: " << c.host << " " << c.target;
            EXPECT_EQ(r.header("X-Upstream"), c.upstream) << "Host: " << c.host << " " << c.target;
        }
    }
    EXPECT_EQ(wild.request_count() + shop.request_count() + api.request_count() +
                  apiv2.request_count(),
              routed)
        << "a 404 never reaches an upstream";
}

// SPEC §3 (last paragraph) and §6: a weight change takes effect for the next
// request on every worker without dropping a connection or a request.
TEST_F(routing_e2e, weight_change_under_load_drops_nothing_and_applies_at_once) {
    upstream blue("blue");
    upstream canary("canary");
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {blue.address()}, 100) +
                                       pool_yaml("canary", {canary.address()}, 0)),
                      {.workers = 2}));

    struct outcome {
        std::uint64_t seq = 0;           // order in which requests started
        bool started_after_put = false;  // the PUT had answered before it was sent
        bool done_before_put = false;    // answered before the PUT was sent
        bool canary = false;
    };
    std::atomic<bool> stop_load{false};
    std::atomic<bool> put_sent{false};
    std::atomic<bool> put_answered{false};
    std::atomic<std::uint64_t> next_seq{0};
    std::atomic<std::uint64_t> after_count{0};
    std::atomic<std::uint64_t> total_count{0};
    std::mutex mutex;
    std::vector<outcome> outcomes;
    std::vector<std::string> failures;

    auto load = [&](int id) {
        http_client client(port());
        std::vector<outcome> mine;
        std::vector<std::string> my_failures;
        while (!stop_load.load()) {
            outcome o;
            o.started_after_put = put_answered.load();
            o.seq = next_seq.fetch_add(1);
            try {
                auto r = client.request("GET", "/load/" + std::to_string(id));
                o.done_before_put = !put_sent.load();
                if (r.status != 200) {
                    my_failures.push_back("status " + std::to_string(r.status) + ": " + r.body);
                } else {
                    o.canary = r.header("X-Upstream") == "canary";
                }
            } catch (const std::exception& e) {
                my_failures.push_back(e.what());
            }
            mine.push_back(o);
            total_count.fetch_add(1);
            if (o.started_after_put) {
                after_count.fetch_add(1);
            }
        }
        std::lock_guard lock(mutex);
        outcomes.insert(outcomes.end(), mine.begin(), mine.end());
        failures.insert(failures.end(), my_failures.begin(), my_failures.end());
    };
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back(load, i);
    }
    struct joiner {
        std::atomic<bool>& stop;
        std::vector<std::thread>& threads;
        void join() {
            stop = true;
            for (auto& t : threads) {
                if (t.joinable()) {
                    t.join();
                }
            }
        }
        ~joiner() { join(); }
    } join_all{stop_load, threads};

    EXPECT_TRUE(wait_until([&] { return total_count.load() >= 400; }, 30s, "400 requests before the PUT"));

    put_sent = true;
    http_client admin(admin_port());
    auto put = admin.request("PUT", "/api/v1/services/app/weights",
                             {{"Content-Type", "application/json"}},
                             R"({"weights":{"blue":50,"canary":50}})");
    put_answered = true;
    EXPECT_EQ(put.status, 200u) << put.body;

    EXPECT_TRUE(wait_until([&] { return after_count.load() >= 2000; }, 60s,
                           "2000 requests started after the PUT answered"));
    join_all.join();

    std::vector<outcome> after;
    std::uint64_t canary_before = 0;
    std::uint64_t done_before = 0;
    for (const auto& o : outcomes) {
        if (o.started_after_put) {
            after.push_back(o);
        }
        if (o.done_before_put) {
            ++done_before;
            canary_before += o.canary ? 1 : 0;
        }
    }
    std::sort(after.begin(), after.end(),
              [](const outcome& a, const outcome& b) { return a.seq < b.seq; });
    const auto canary_after = std::count_if(after.begin(), after.end(),
                                            [](const outcome& o) { return o.canary; });
    const auto first = std::min<std::size_t>(after.size(), 200);
    const auto canary_in_first =
        std::count_if(after.begin(), after.begin() + static_cast<std::ptrdiff_t>(first),
                      [](const outcome& o) { return o.canary; });
    const double share = after.empty() ? 0.0 : 100.0 * static_cast<double>(canary_after) /
                                                   static_cast<double>(after.size());

    std::cout << "[weights] " << outcomes.size() << " requests on 4 keep-alive connections, "
              << failures.size() << " failed; " << done_before << " answered before the PUT ("
              << canary_before << " on canary); " << after.size()
              << " started after it: canary share " << share << " % (" << canary_in_first
              << " canary in the first " << first << ")\n";

    EXPECT_TRUE(failures.empty()) << failures.size() << " failed requests, first: "
                                  << (failures.empty() ? "" : failures.front());
    EXPECT_GT(done_before, 0u);
    EXPECT_EQ(canary_before, 0u) << "canary had weight 0 before the PUT";
    ASSERT_GE(after.size(), 200u);
    EXPECT_GT(canary_in_first, 0) << "requests started after the PUT answered must see it";
    EXPECT_NEAR(share, 50.0, 5.0);
}

}  // namespace
}  // namespace switchyard::test
