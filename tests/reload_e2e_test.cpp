// Hot reload through the real binary (SPEC §6 POST /api/v1/reload, SIGHUP):
// under load, not one request fails and the edited weights take effect; an
// invalid file changes nothing and says why, with FILE:LINE:COL.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <string>

#include "tests/e2e_fixture.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

class reload_e2e : public proxy_fixture {
protected:
    std::string services(int blue_weight, int canary_weight) const {
        return service_yaml("shop", "blue",
                            pool_yaml("blue", {blue_.address()}, blue_weight) +
                                pool_yaml("canary", {canary_.address()}, canary_weight),
                            "    guard: { enabled: false }\n");
    }
    // Rewrites the config file in place (the ports stay those of start()).
    void rewrite(const std::string& text) { dir().write("switchyard.yaml", text); }

    upstream blue_{"blue"};
    upstream canary_{"canary"};
};

TEST_F(reload_e2e, twenty_reloads_under_load_lose_nothing_and_apply_the_weights) {
    ASSERT_TRUE(start(services(100, 0)));
    admin_client admin(admin_port());
    load_generator load(port(), {.threads = 2, .rate_per_thread = 200});
    ASSERT_TRUE(load.wait_for_requests(100));

    int canary = 0;
    for (int i = 1; i <= 20; ++i) {
        canary = (i * 5) % 50;
        rewrite(config_text(services(100 - canary, canary), {}));
        const auto deadline = std::chrono::steady_clock::now() + 500ms;
        if (i % 2 == 0) {
            const http_response r = admin.post("/api/v1/reload");
            ASSERT_EQ(r.status, 200u) << r.body;
            const json::value body = parse_json(r.body);
            const json::value* reloaded = json_at(body, {"reloaded"});
            EXPECT_TRUE(reloaded != nullptr && reloaded->is_bool() && reloaded->get_bool())
                << r.body;
        } else {
            ASSERT_EQ(::kill(pid(), SIGHUP), 0);
        }
        ASSERT_TRUE(poll_service(
            admin, "shop",
            [&](const json::value& svc) { return pool_weight(svc, "canary") == canary; }, 5s,
            "the reloaded canary weight " + std::to_string(canary)));
        // Paced at about 0.5 s per reload (pacing, not synchronisation).
        std::this_thread::sleep_until(deadline);
    }
    // The last weights carry the traffic: canary gets requests again.
    const std::uint64_t canary_before = load.count("canary");
    ASSERT_TRUE(load.wait_for_requests(600));
    load.stop();
    std::cout << "[ reload ] 20 reloads, " << load.total() << " requests: " << load.summary()
              << "\n";
    EXPECT_EQ(load.failures(), 0u) << load.summary();
    EXPECT_EQ(load.not_ok(), 0u) << load.summary();
    if (canary > 0) {
        EXPECT_GT(load.count("canary"), canary_before) << load.summary();
    }
    // Every reload is an event by config or admin.
    int reloads = 0;
    for (const auto& e : admin.events()) {
        reloads += json_text(e, {"kind"}) == "reload" ? 1 : 0;
    }
    EXPECT_EQ(reloads, 20);
}

TEST_F(reload_e2e, an_invalid_file_changes_nothing_and_says_where) {
    ASSERT_TRUE(start(services(80, 20)));
    admin_client admin(admin_port());
    const json::value before = admin.service("shop");
    ASSERT_FALSE(before.is_null());

    // canary weight 50 would be a change, but the file has a typo too.
    rewrite(config_text(services(50, 50), {}) + "    guard_typo: 1\n");
    const http_response r = admin.post("/api/v1/reload");
    ASSERT_EQ(r.status, 400u) << r.body;
    const json::value body = parse_json(r.body);
    EXPECT_FALSE(json_text(body, {"error"}).empty()) << r.body;
    const json::value* errors = json_at(body, {"errors"});
    ASSERT_TRUE(errors != nullptr && errors->is_array() && !errors->get_array().empty()) << r.body;
    const std::string first(errors->get_array()[0].as_string());
    EXPECT_NE(first.find(config_path() + ":"), std::string::npos) << first;
    EXPECT_NE(first.find("guard_typo"), std::string::npos) << first;

    // SIGHUP with the same file: logged, nothing changes, still serving.
    ASSERT_EQ(::kill(pid(), SIGHUP), 0);
    ASSERT_TRUE(wait_until([&] { return proxy().errors().find("reload") != std::string::npos; },
                           5s, "the refused reload to be logged"));
    const json::value after = admin.service("shop");
    EXPECT_EQ(pool_weight(after, "canary"), 20);
    EXPECT_EQ(json_number(after, {"generation"}), json_number(before, {"generation"}));
    http_client client(port());
    EXPECT_EQ(client.request("GET", "/still-serving").status, 200u);

    // Fixed: the edit applies.
    rewrite(config_text(services(50, 50), {}));
    const http_response ok = admin.post("/api/v1/reload");
    ASSERT_EQ(ok.status, 200u) << ok.body;
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 50);
}

TEST_F(reload_e2e, a_reload_keeps_runtime_weights_unless_the_file_edits_them) {
    ASSERT_TRUE(start(services(80, 20)));
    admin_client admin(admin_port());
    ASSERT_EQ(admin.put("/api/v1/services/shop/weights", R"({"weights":{"canary":0}})").status,
              200u);
    // Same file: the operator's decision survives the reload.
    ASSERT_EQ(admin.post("/api/v1/reload").status, 200u);
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 0);
    // An edit of canary's weight in the file wins, and "config" says so.
    rewrite(config_text(services(80, 30), {}));
    ASSERT_EQ(admin.post("/api/v1/reload").status, 200u);
    EXPECT_EQ(pool_weight(admin.service("shop"), "canary"), 30);
    bool config_event = false;
    for (const auto& e : admin.events()) {
        config_event |= json_text(e, {"kind"}) == "weights" && json_text(e, {"actor"}) == "config";
    }
    EXPECT_TRUE(config_event);
}

}  // namespace
}  // namespace switchyard::test
