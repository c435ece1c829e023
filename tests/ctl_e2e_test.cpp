// `switchyard ctl` against a running proxy (SPEC §1): every command, --json,
// the token from a file and from the environment, and the API's error
// sentence with exit 1.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

struct ctl_result {
    int code = -1;
    std::string out;
    std::string err;
};

class ctl_e2e : public proxy_fixture {
protected:
    void SetUp() override {
        token_file_ = dir().write("admin.token", std::string(token) + "\n");
        // The proxy reads its token from the environment; ctl from the file.
        proxy_options opts;
        opts.env = {{"SWITCHYARD_ADMIN_TOKEN", std::string(token)}};
        ASSERT_TRUE(start(service_yaml("shop", "blue",
                                       pool_yaml("blue", {blue_.address()}, 80) +
                                           pool_yaml("canary", {canary_.address()}, 20) +
                                           pool_yaml("green", {green_.address()}, 0),
                                       "    guard: { enabled: false }\n"),
                          opts));
    }

    ctl_result ctl(std::vector<std::string> args, env_list env = {}) {
        std::vector<std::string> argv{"ctl", "--admin",
                                      "http://127.0.0.1:" + std::to_string(admin_port())};
        argv.insert(argv.end(), args.begin(), args.end());
        process p = process::switchyard(std::move(argv), std::move(env));
        ctl_result r;
        r.code = p.wait(30s);
        r.out = p.output();
        r.err = p.errors();
        return r;
    }
    std::vector<std::string> with_file(std::vector<std::string> args) {
        args.insert(args.begin(), {"--token-file", token_file_});
        return args;
    }

    static constexpr std::string_view token = "ctl-test-token-0123456789";
    upstream blue_{"blue"};
    upstream canary_{"canary"};
    upstream green_{"green"};
    std::string token_file_;
};

TEST_F(ctl_e2e, status_prints_a_table_and_json) {
    const ctl_result table = ctl(with_file({"status"}));
    ASSERT_EQ(table.code, 0) << table.err;
    EXPECT_NE(table.out.find("service shop"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("canary"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("WEIGHT"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("rollout idle"), std::string::npos) << table.out;

    const ctl_result js = ctl(with_file({"--json", "status", "shop"}));
    ASSERT_EQ(js.code, 0) << js.err;
    const json::value v = parse_json(js.out);
    EXPECT_EQ(pool_weight(v, "canary"), 20) << js.out;
}

TEST_F(ctl_e2e, token_comes_from_the_environment_or_is_refused) {
    const ctl_result env = ctl({"status"}, {{"SWITCHYARD_ADMIN_TOKEN", std::string(token)}});
    EXPECT_EQ(env.code, 0) << env.err;
    const ctl_result none = ctl({"status"}, {{"SWITCHYARD_ADMIN_TOKEN", "wrong"}});
    EXPECT_EQ(none.code, 1);
    EXPECT_NE(none.err.find("token"), std::string::npos) << none.err;
}

TEST_F(ctl_e2e, changes_and_their_errors) {
    ctl_result r = ctl(with_file({"weights", "shop", "blue=90", "canary=10"}));
    ASSERT_EQ(r.code, 0) << r.err;
    http_client client(admin_port());
    const auto svc = parse_json(
        client.request("GET", "/api/v1/services/shop",
                       {{"Authorization", "Bearer " + std::string(token)}})
            .body);
    EXPECT_EQ(pool_weight(svc, "canary"), 10);

    r = ctl(with_file({"weights", "shop", "purple=5"}));
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("purple"), std::string::npos) << r.err;

    r = ctl(with_file({"weights", "shop", "blue"}));
    EXPECT_EQ(r.code, 2) << r.err;  // usage

    r = ctl(with_file({"rollback", "shop"}));
    ASSERT_EQ(r.code, 0) << r.err;
    r = ctl(with_file({"rollback", "shop"}));
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("nothing to roll back"), std::string::npos) << r.err;

    r = ctl(with_file({"rollout", "shop", "start", "canary"}));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("rollout progressing"), std::string::npos) << r.out;
    r = ctl(with_file({"rollout", "shop", "abort"}));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("reverted"), std::string::npos) << r.out;

    r = ctl(with_file({"switch", "shop", "green"}));
    ASSERT_EQ(r.code, 0) << r.err;  // green's /healthz answers 200
    EXPECT_NE(r.out.find("stable green"), std::string::npos) << r.out;

    r = ctl(with_file({"events"}));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("switch"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("rollback"), std::string::npos) << r.out;

    r = ctl(with_file({"--json", "events", "--since", "1"}));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out.find("\"id\":1,"), std::string::npos) << r.out;

    r = ctl(with_file({"reload"}));
    EXPECT_EQ(r.code, 0) << r.err;
}

TEST_F(ctl_e2e, unreachable_admin_is_exit_1_with_a_sentence) {
    process p = process::switchyard(
        {"ctl", "--admin", "http://127.0.0.1:" + std::to_string(free_port()), "status"});
    EXPECT_EQ(p.wait(30s), 1);
    EXPECT_NE(p.errors().find("cannot reach"), std::string::npos) << p.errors();
}

}  // namespace
}  // namespace switchyard::test
