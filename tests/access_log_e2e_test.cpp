// The access log through the real binary (SPEC §1, §2 `access_log`): one
// JSON object per request with the fields SPEC §1 lists, for proxied
// requests and for the ones the proxy answers itself; reopened on SIGUSR1
// (logrotate renames, then signals); nothing lost on SIGTERM.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

// The lines of `path` ("" when it does not exist), complete lines only.
std::vector<std::string> read_lines(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    std::vector<std::string> lines;
    std::string all = text.str();
    std::size_t start = 0;
    for (std::size_t nl; (nl = all.find('\n', start)) != std::string::npos; start = nl + 1) {
        lines.push_back(all.substr(start, nl - start));
    }
    return lines;
}

testing::AssertionResult wait_for_lines(const std::string& path, std::size_t count,
                                        std::chrono::milliseconds deadline = 10s) {
    auto r = wait_until([&] { return read_lines(path).size() >= count; }, deadline,
                        std::to_string(count) + " lines in " + path);
    if (!r) {
        r << " (has " << read_lines(path).size() << ")";
    }
    return r;
}

class access_log_e2e : public proxy_fixture {
protected:
    std::string services() const {
        return service_yaml("shop", "blue",
                            pool_yaml("blue", {blue_.address()}, 100) +
                                pool_yaml("canary", {canary_.address()}, 0),
                            "    hosts: [\"shop.example.com\"]\n    path_prefix: /\n"
                            "    guard: { enabled: false }\n");
    }
    testing::AssertionResult start_logging() {
        log_path_ = dir().path() + "/access.log";
        options opts;
        opts.top_level = "access_log: " + log_path_ + "\n";
        return start(services(), opts);
    }
    http_response shop_get(http_client& client, const std::string& target) {
        return client.request("GET", target, {{"Host", "shop.example.com"}});
    }

    upstream blue_{"blue"};
    upstream canary_{"canary"};
    std::string log_path_;
};

TEST_F(access_log_e2e, one_json_line_per_request_with_the_spec_fields) {
    ASSERT_TRUE(start_logging());
    http_client client(port());
    for (int i = 0; i < 50; ++i) {
        const http_response r = shop_get(client, "/item/" + std::to_string(i) + "?q=a%20b");
        ASSERT_EQ(r.status, 200u);
    }
    // Answered by the proxy itself: no service matches this host.
    ASSERT_EQ(client.request("GET", "/nowhere", {{"Host", "other.test"}}).status, 404u);
    // A body, and a client's request id that needs JSON escaping.
    const std::string odd_id = "id-\"quoted\"\\slash";
    const http_response posted = client.request(
        "POST", "/orders", {{"Host", "shop.example.com"}, {"X-Request-Id", odd_id}},
        std::string(300, 'x'));
    ASSERT_EQ(posted.status, 200u);

    ASSERT_TRUE(wait_for_lines(log_path_, 52));
    const auto lines = read_lines(log_path_);
    ASSERT_EQ(lines.size(), 52u);

    int proxied = 0;
    bool saw_404 = false;
    bool saw_post = false;
    for (const auto& line : lines) {
        const json::value v = parse_json(line);
        ASSERT_TRUE(v.is_object()) << "not a JSON object: " << line;
        for (const char* key : {"time", "method", "path", "status", "service", "pool", "endpoint",
                                "upstream_ms", "total_ms", "bytes_sent", "bytes_received",
                                "request_id"}) {
            EXPECT_NE(json_at(v, {key}), nullptr) << key << " missing: " << line;
        }
        const std::string time = json_text(v, {"time"});
        EXPECT_EQ(time.size(), 24u) << line;  // 2026-11-26T13:26:10.123Z
        EXPECT_EQ(time.back(), 'Z') << line;
        EXPECT_GE(json_number(v, {"total_ms"}), 0.0) << line;
        const std::string path = json_text(v, {"path"});
        if (path.starts_with("/item/")) {
            ++proxied;
            EXPECT_EQ(json_text(v, {"method"}), "GET") << line;
            EXPECT_EQ(json_number(v, {"status"}), 200) << line;
            EXPECT_EQ(json_text(v, {"service"}), "shop") << line;
            EXPECT_EQ(json_text(v, {"pool"}), "blue") << line;
            EXPECT_EQ(json_text(v, {"endpoint"}), blue_.address()) << line;
            EXPECT_TRUE(path.ends_with("?q=a%20b")) << line;
            EXPECT_GE(json_number(v, {"upstream_ms"}), 0.0) << line;
            EXPECT_GE(json_number(v, {"total_ms"}), json_number(v, {"upstream_ms"})) << line;
            EXPECT_EQ(json_number(v, {"bytes_sent"}), 5) << line;  // "blue\n"
            EXPECT_EQ(json_number(v, {"bytes_received"}), 0) << line;
            EXPECT_EQ(json_text(v, {"request_id"}).size(), 32u) << "generated id: " << line;
        } else if (path == "/nowhere") {
            saw_404 = true;
            EXPECT_EQ(json_number(v, {"status"}), 404) << line;
            EXPECT_TRUE(json_at(v, {"service"})->is_null()) << line;
            EXPECT_TRUE(json_at(v, {"pool"})->is_null()) << line;
            EXPECT_TRUE(json_at(v, {"endpoint"})->is_null()) << line;
            EXPECT_TRUE(json_at(v, {"upstream_ms"})->is_null()) << line;
            EXPECT_GT(json_number(v, {"bytes_sent"}), 0) << line;
        } else if (path == "/orders") {
            saw_post = true;
            EXPECT_EQ(json_text(v, {"method"}), "POST") << line;
            EXPECT_EQ(json_number(v, {"bytes_received"}), 300) << line;
            EXPECT_EQ(json_text(v, {"request_id"}), odd_id) << line;
            EXPECT_EQ(json_text(v, {"pool"}), "blue") << line;
        } else {
            ADD_FAILURE() << "unexpected line: " << line;
        }
    }
    EXPECT_EQ(proxied, 50);
    EXPECT_TRUE(saw_404);
    EXPECT_TRUE(saw_post);
}

TEST_F(access_log_e2e, sigusr1_reopens_the_file_after_a_rename) {
    ASSERT_TRUE(start_logging());
    http_client client(port());
    int sent = 0;
    for (; sent < 10; ++sent) {
        ASSERT_EQ(shop_get(client, "/before/" + std::to_string(sent)).status, 200u);
    }
    ASSERT_TRUE(wait_for_lines(log_path_, 10));

    const std::string rotated = log_path_ + ".1";
    ASSERT_EQ(std::rename(log_path_.c_str(), rotated.c_str()), 0);
    ASSERT_EQ(::kill(pid(), SIGUSR1), 0);
    // Requests go on while the signal is handled; once the file at the
    // original path has a line, every later batch goes there.
    ASSERT_TRUE(wait_until(
        [&] {
            EXPECT_EQ(shop_get(client, "/during/" + std::to_string(sent)).status, 200u);
            ++sent;
            return !read_lines(log_path_).empty();
        },
        10s, "a new file at the original path"));
    const std::size_t rotated_lines = read_lines(rotated).size();
    for (int i = 0; i < 10; ++i, ++sent) {
        ASSERT_EQ(shop_get(client, "/after/" + std::to_string(i)).status, 200u);
    }
    ASSERT_TRUE(wait_until(
        [&] {
            return read_lines(rotated).size() + read_lines(log_path_).size() ==
                   static_cast<std::size_t>(sent);
        },
        10s, "every request logged in one of the two files"))
        << "rotated " << read_lines(rotated).size() << ", new " << read_lines(log_path_).size()
        << ", sent " << sent;
    EXPECT_EQ(read_lines(rotated).size(), rotated_lines) << "the renamed file stopped growing";
    int after = 0;
    for (const auto& line : read_lines(log_path_)) {
        after += json_text(parse_json(line), {"path"}).starts_with("/after/") ? 1 : 0;
    }
    EXPECT_EQ(after, 10);
}

TEST_F(access_log_e2e, sigterm_flushes_the_last_lines) {
    ASSERT_TRUE(start_logging());
    {
        http_client client(port());
        for (int i = 0; i < 3; ++i) {
            ASSERT_EQ(shop_get(client, "/last/" + std::to_string(i)).status, 200u);
        }
    }
    ASSERT_EQ(stop(), 0);
    const auto lines = read_lines(log_path_);
    ASSERT_EQ(lines.size(), 3u);
    for (const auto& line : lines) {
        EXPECT_TRUE(json_text(parse_json(line), {"path"}).starts_with("/last/")) << line;
    }
}

TEST_F(access_log_e2e, a_log_file_that_cannot_be_opened_fails_startup) {
    const std::string bad = dir().path() + "/no/such/dir/access.log";
    const std::string config =
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n"
        "admin:\n  address: 127.0.0.1:0\n"
        "access_log: " +
        bad + "\nservices:\n" + services();
    const std::string path = dir().write("bad.yaml", config);
    process p = process::switchyard({"run", "--config", path, "--workers", "1"});
    EXPECT_EQ(p.wait(30s), 1) << p.errors();
    EXPECT_NE(p.errors().find(bad), std::string::npos) << p.errors();
}

}  // namespace
}  // namespace switchyard::test
