// The Prometheus exposition of the real binary under load (SPEC §7, issue 6):
// /metrics is scraped on the admin port while requests flow through two
// workers, and the scrape passes `promtool check metrics` (Debian package
// `prometheus`; skipped with a message saying so when promtool is missing).

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/e2e_fixture.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

// promtool's exit code and everything it printed.
std::pair<int, std::string> promtool_check(const std::string& file) {
    const std::string command = "promtool check metrics < '" + file + "' 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        return {-1, "popen failed"};
    }
    std::string output;
    char buffer[4096];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) {
        output.append(buffer, n);
    }
    const int status = ::pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

class metrics_e2e : public proxy_fixture {
protected:
    upstream blue_{"blue"};
    upstream canary_{"canary"};
};

TEST_F(metrics_e2e, a_scrape_under_load_passes_promtool) {
    SWITCHYARD_NEED_PROMTOOL();
    ASSERT_TRUE(start(service_yaml("shop", "blue",
                                   pool_yaml("blue", {blue_.address()}, 90) +
                                       pool_yaml("canary", {canary_.address()}, 10),
                                   "    guard: { enabled: false }\n")));
    admin_client admin(admin_port());
    load_generator load(port(), {.threads = 2, .rate_per_thread = 300});
    ASSERT_TRUE(load.wait_for_requests(200));

    // Several scrapes while the load runs, each checked on its own: every
    // one must be valid, not only a quiet one.
    std::string text;
    for (int i = 0; i < 3; ++i) {
        const std::uint64_t seen = load.total();
        const http_response r = admin.request("GET", "/metrics");
        ASSERT_EQ(r.status, 200u);
        EXPECT_NE(r.header("Content-Type").find("text/plain"), std::string::npos);
        text = r.body;
        const std::string file = dir().write("scrape-" + std::to_string(i) + ".txt", text);
        const auto [code, output] = promtool_check(file);
        EXPECT_EQ(code, 0) << output << "\nfor:\n" << text;
        EXPECT_EQ(output, "") << "for:\n" << text;
        ASSERT_TRUE(load.wait_for_requests(50)) << "the load stalled after " << seen;
    }
    load.stop();
    EXPECT_EQ(load.failures(), 0u) << load.summary();

    // The scrape taken under load saw that load.
    EXPECT_NE(text.find("switchyard_requests_total{"), std::string::npos) << text;
    EXPECT_NE(text.find("pool=\"blue\""), std::string::npos) << text;
    EXPECT_NE(text.find("switchyard_request_duration_seconds_bucket{"), std::string::npos) << text;
    EXPECT_NE(text.find("switchyard_downstream_connections{listener=\"public\"}"),
              std::string::npos)
        << text;
}

}  // namespace
}  // namespace switchyard::test
