// End-to-end proxying through the real switchyard binary (SPEC §1, §4):
// header rewriting, keep-alive reuse, pipelining, streaming in both
// directions with bounded memory, upstream failures, and the command line's
// exit codes. Upstreams are in-process servers (tests/support/upstream.hpp).

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t mib = 1024 * 1024;

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

// The same FNV-1a 64 the upstream records as body_hash.
struct fnv1a {
    std::uint64_t value = 14695981039346656037ull;
    void add(std::string_view data) {
        for (const char c : data) {
            value ^= static_cast<unsigned char>(c);
            value *= 1099511628211ull;
        }
    }
};

// One service "app" whose only pool "main" is `endpoints`.
std::string single_pool(const std::vector<std::string>& endpoints, const std::string& extra = {}) {
    return service_yaml("app", "main", pool_yaml("main", endpoints, 100), extra);
}

// An address where nothing listens (connections are refused).
std::string dead_address() {
    return "127.0.0.1:" + std::to_string(free_port());
}

class proxy_e2e : public proxy_fixture {};

// ---------------------------------------------------------------------------
// Headers (SPEC §4: hop-by-hop removed, X-Forwarded-*, X-Request-Id)

TEST_F(proxy_e2e, request_hop_by_hop_headers_are_removed_and_forwarding_headers_set) {
    upstream app("app");
    ASSERT_TRUE(start(single_pool({app.address()})));
    http_client client(port());

    auto r1 = client.request("GET", "/path/a?q=1&r=%20x",
                             {{"Host", "shop.example.test"},
                              {"Connection", "keep-alive, X-Secret"},
                              {"Keep-Alive", "timeout=5"},
                              {"TE", "trailers"},
                              {"Upgrade", "example/1"},
                              {"Proxy-Connection", "keep-alive"},
                              {"X-Secret", "s3cret"},
                              {"X-End-To-End", "kept"},
                              {"X-Forwarded-For", "1.2.3.4"},
                              {"X-Forwarded-Proto", "https"},
                              {"X-Request-Id", "req-abc-123"}});
    ASSERT_EQ(r1.status, 200u) << r1.body;
    // The brief's example: Connection: close naming a header.
    auto r2 = client.request("GET", "/path/b",
                             {{"Host", "shop.example.test:8080"},
                              {"Connection", "close, X-Secret"},
                              {"X-Secret", "s3cret"}});
    ASSERT_EQ(r2.status, 200u) << r2.body;
    auto r3 = client.request("GET", "/path/c");
    ASSERT_EQ(r3.status, 200u) << r3.body;

    const auto got = app.requests();
    ASSERT_EQ(got.size(), 3u);
    const auto& a = got[0];
    const auto& b = got[1];
    const auto& c = got[2];

    EXPECT_EQ(a.method, "GET");
    EXPECT_EQ(a.target, "/path/a?q=1&r=%20x") << "the target passes unchanged";
    for (const auto* req : {&a, &b}) {
        for (const char* name : {"Keep-Alive", "TE", "Upgrade", "Proxy-Connection", "X-Secret"}) {
            EXPECT_EQ(req->header_count(name), 0)
                << req->target << ": hop-by-hop " << name << " reached the upstream: "
                << req->header(name);
        }
        // The proxy may speak for its own hop, never relay the client's list.
        const std::string connection = lower(req->header("Connection"));
        EXPECT_EQ(connection.find("x-secret"), std::string::npos) << connection;
        EXPECT_TRUE(connection.empty() || connection == "keep-alive" || connection == "close")
            << req->target << ": Connection: " << connection;
    }
    EXPECT_EQ(a.header("X-End-To-End"), "kept");

    EXPECT_EQ(a.header_count("X-Forwarded-For"), 1);
    EXPECT_EQ(a.header("X-Forwarded-For"), "1.2.3.4, 127.0.0.1");
    EXPECT_EQ(b.header("X-Forwarded-For"), "127.0.0.1");
    EXPECT_EQ(a.header_count("X-Forwarded-Proto"), 1);
    EXPECT_EQ(a.header("X-Forwarded-Proto"), "http") << "set by the proxy, not the client";
    EXPECT_EQ(b.header("X-Forwarded-Proto"), "http");
    EXPECT_EQ(a.header("X-Forwarded-Host"), "shop.example.test");
    EXPECT_EQ(b.header("X-Forwarded-Host"), "shop.example.test:8080");
    EXPECT_EQ(c.header("X-Forwarded-Host"), "localhost");

    EXPECT_EQ(a.header_count("X-Request-Id"), 1);
    EXPECT_EQ(a.header("X-Request-Id"), "req-abc-123") << "a client's request id is kept";
    const auto hex32 = [](const std::string& id) {
        return id.size() == 32 && std::all_of(id.begin(), id.end(), [](unsigned char ch) {
                   return std::isxdigit(ch) != 0;
               });
    };
    EXPECT_TRUE(hex32(b.header("X-Request-Id"))) << b.header("X-Request-Id");
    EXPECT_TRUE(hex32(c.header("X-Request-Id"))) << c.header("X-Request-Id");
    EXPECT_NE(b.header("X-Request-Id"), c.header("X-Request-Id")) << "generated ids differ";
}

TEST_F(proxy_e2e, response_hop_by_hop_headers_are_removed) {
    upstream app("app");
    app.set_response_headers({{"Connection", "X-Internal"},
                              {"X-Internal", "secret"},
                              {"Keep-Alive", "timeout=5, max=100"},
                              {"Proxy-Connection", "keep-alive"},
                              {"Upgrade", "example/1"},
                              {"X-Visible", "yes"}});
    ASSERT_TRUE(start(single_pool({app.address()})));
    http_client client(port());
    for (int i = 0; i < 2; ++i) {
        auto r = client.request("GET", "/h");
        ASSERT_EQ(r.status, 200u);
        for (const char* name : {"X-Internal", "Keep-Alive", "Proxy-Connection", "Upgrade"}) {
            EXPECT_EQ(r.header_count(name), 0)
                << "upstream hop-by-hop " << name << " reached the client: " << r.header(name);
        }
        EXPECT_EQ(lower(r.header("Connection")).find("x-internal"), std::string::npos)
            << r.header("Connection");
        EXPECT_EQ(r.header("X-Visible"), "yes");
        EXPECT_EQ(r.body, "app\n");
        EXPECT_TRUE(r.keep_alive);
    }
    EXPECT_EQ(client.connections_made(), 1u);
}

// ---------------------------------------------------------------------------
// Connections

TEST_F(proxy_e2e, one_keep_alive_connection_reuses_one_upstream_connection) {
    upstream app("app");
    ASSERT_TRUE(start(single_pool({app.address()}), {.workers = 1}));
    http_client client(port());
    for (int i = 0; i < 200; ++i) {
        auto r = client.request("GET", "/k/" + std::to_string(i));
        ASSERT_EQ(r.status, 200u) << "request " << i;
        ASSERT_TRUE(r.keep_alive) << "request " << i;
    }
    EXPECT_EQ(client.connections_made(), 1u);
    EXPECT_EQ(app.request_count(), 200u);
    EXPECT_EQ(app.connection_count(), 1u) << "every request must reuse the pooled connection";
    std::set<std::size_t> connections;
    for (const auto& r : app.requests()) {
        connections.insert(r.connection);
    }
    EXPECT_EQ(connections.size(), 1u);
}

TEST_F(proxy_e2e, pipelined_requests_are_answered_in_order) {
    upstream app("app");
    app.set_echo(true);
    ASSERT_TRUE(start(single_pool({app.address()})));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n"
                          "POST /second HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
                          "GET /third?n=3 HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    const std::vector<std::string> expected = {"GET /first HTTP/1.1\r\n",
                                               "POST /second HTTP/1.1\r\n",
                                               "GET /third?n=3 HTTP/1.1\r\n"};
    for (std::size_t i = 0; i < expected.size(); ++i) {
        auto r = conn.read_response(10s);
        ASSERT_TRUE(r.has_value()) << "response " << i + 1 << " missing; got: "
                                   << conn.read_until_close(1s);
        EXPECT_EQ(r->status, 200u);
        EXPECT_EQ(r->body.rfind(expected[i], 0), 0u) << "response " << i + 1 << ": " << r->body;
        if (i == 1) {
            EXPECT_TRUE(r->body.ends_with("\r\n\r\nhello")) << r->body;
        }
    }
    EXPECT_EQ(app.request_count(), 3u);
}

// ---------------------------------------------------------------------------
// Streaming (SPEC §4: bodies stream both ways; memory per request bounded)

TEST_F(proxy_e2e, chunked_upload_of_64_mib_arrives_complete_with_bounded_memory) {
    upstream app("app");
    ASSERT_TRUE(start(single_pool({app.address()}), {.workers = 1}));
    ASSERT_EQ(http_get(port(), "/warm-up").status, 200u);
    app.clear();
    const std::uint64_t rss_before = rss_kib(pid());

    constexpr std::uint64_t total = 64 * mib;
    // Chunks of uneven sizes, cut from the generated pattern at the running offset.
    const std::vector<std::size_t> sizes = {65536, 1, 4093, 131072, 777, 32768, 100000};
    std::string pattern;
    while (pattern.size() < 131072 + 2 * generated_body_pattern.size()) {
        pattern += generated_body_pattern;
    }
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                          "Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n"));
    fnv1a hash;
    std::uint64_t sent = 0;
    std::string batch;
    for (std::size_t i = 0; sent < total; ++i) {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(sizes[i % sizes.size()], total - sent));
        const std::string_view data(pattern.data() + sent % generated_body_pattern.size(), n);
        char size_line[32];
        std::snprintf(size_line, sizeof size_line, "%zx\r\n", n);
        batch += size_line;
        batch += data;
        batch += "\r\n";
        hash.add(data);
        sent += n;
        if (batch.size() >= mib || sent == total) {
            ASSERT_TRUE(conn.send(batch, 60s)) << "the proxy closed the upload after " << sent;
            batch.clear();
        }
    }
    ASSERT_TRUE(conn.send("0\r\n\r\n"));
    auto r = conn.read_response(60s);
    ASSERT_TRUE(r.has_value()) << conn.read_until_close(1s);
    EXPECT_EQ(r->status, 200u) << r->body;

    const auto got = app.requests();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].body_bytes, total);
    EXPECT_EQ(got[0].body_hash, hash.value) << "the body arrived altered";
    EXPECT_EQ(got[0].header_count("Transfer-Encoding") + got[0].header_count("Content-Length"), 1);

    const std::uint64_t peak = peak_rss_kib(pid());
    const std::uint64_t growth = peak > rss_before ? peak - rss_before : 0;
    std::cout << "[stream] 64 MiB chunked upload: proxy RSS before " << rss_before / 1024
              << " MiB, peak " << peak / 1024 << " MiB, growth " << growth / 1024 << " MiB\n";
    EXPECT_LT(growth, 64 * 1024u) << "KiB of peak RSS growth";
}

TEST_F(proxy_e2e, download_of_256_mib_streams_with_bounded_memory) {
    upstream app("app");
    ASSERT_TRUE(start(single_pool({app.address()}), {.workers = 1}));
    ASSERT_EQ(http_get(port(), "/warm-up").status, 200u);
    const std::uint64_t rss_before = rss_kib(pid());
    const std::uint64_t peak_before = peak_rss_kib(pid());

    constexpr std::uint64_t total = 256 * mib;
    http_client client(port());
    for (const bool chunked : {false, true}) {
        app.set_response_size(total, chunked);
        std::uint64_t received = 0;
        bool intact = true;
        auto r = client.stream(
            "GET", chunked ? "/download/chunked" : "/download/length",
            [&](std::string_view piece) {
                if (intact && !matches_generated_body(piece, received)) {
                    intact = false;
                    ADD_FAILURE() << "body differs near offset " << received;
                }
                received += piece.size();
            },
            {}, 120s);
        const char* kind = chunked ? "chunked" : "Content-Length";
        EXPECT_EQ(r.status, 200u) << kind;
        EXPECT_EQ(received, total) << kind;
        EXPECT_EQ(r.body_bytes, total) << kind;
        EXPECT_TRUE(intact) << kind;
        if (!chunked) {
            EXPECT_EQ(r.header("Content-Length"), std::to_string(total));
        }
    }

    const std::uint64_t peak = peak_rss_kib(pid());
    const std::uint64_t growth = peak > rss_before ? peak - rss_before : 0;
    std::cout << "[stream] 256 MiB download (Content-Length, then chunked): proxy RSS before "
              << rss_before / 1024 << " MiB (peak so far " << peak_before / 1024
              << " MiB), peak after " << peak / 1024 << " MiB, growth " << growth / 1024
              << " MiB\n";
    EXPECT_LT(growth, 64 * 1024u) << "KiB of peak RSS growth";
}

// ---------------------------------------------------------------------------
// Upstream failures (SPEC §4)

TEST_F(proxy_e2e, refused_connections_are_502_from_the_proxy) {
    ASSERT_TRUE(start(
        service_yaml("one", "main", pool_yaml("main", {dead_address()}, 100),
                     "    path_prefix: /one\n") +
        service_yaml("two", "main", pool_yaml("main", {dead_address(), dead_address()}, 100),
                     "    path_prefix: /two\n")));
    for (const char* target : {"/one", "/two"}) {
        auto r = http_get(port(), target);
        EXPECT_EQ(r.status, 502u) << target;
        EXPECT_NE(r.body.find("switchyard"), std::string::npos)
            << target << ": the proxy's own error says so: " << r.body;
        EXPECT_EQ(r.header("X-Upstream"), "");
    }
    // 503 with Retry-After (SPEC §3.4, no pool can serve) is not covered here:
    // it needs health checks or ejection to leave a weighted pool without a
    // healthy endpoint (a later issue).
}

TEST_F(proxy_e2e, slow_upstream_is_504_and_its_connection_is_not_reused) {
    upstream app("app");
    app.set_echo(true);
    app.set_delay(2s);
    ASSERT_TRUE(start(single_pool({app.address()}),
                      {.workers = 1, .top_level = "upstream_defaults:\n  response_timeout: 300ms\n"}));
    http_client client(port());
    auto slow = client.request("GET", "/slow");
    EXPECT_EQ(slow.status, 504u) << slow.body;
    EXPECT_NE(slow.body.find("switchyard"), std::string::npos) << slow.body;

    // The timed-out exchange's late answer must never be taken for the next one.
    app.set_delay(0ms);
    auto next = client.request("GET", "/after");
    EXPECT_EQ(next.status, 200u) << next.body;
    EXPECT_EQ(next.body.rfind("GET /after HTTP/1.1\r\n", 0), 0u) << next.body;
}

TEST_F(proxy_e2e, a_refusing_endpoint_is_retried_on_the_other) {
    upstream live("live");
    ASSERT_TRUE(start(single_pool({dead_address(), live.address()},
                                  "    balance: round_robin\n"),
                      {.workers = 1, .top_level = "upstream_defaults:\n  retries: 1\n"}));
    http_client client(port());
    int failures = 0;
    for (int i = 0; i < 20; ++i) {
        auto r = client.request("GET", "/r/" + std::to_string(i));
        if (r.status != 200) {
            ++failures;
            ADD_FAILURE() << "GET /r/" << i << ": " << r.status << " " << r.body;
            client.close();
        }
    }
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(live.request_count(), 20u);
}

TEST_F(proxy_e2e, an_idle_upstream_connection_closed_by_the_upstream_is_not_used) {
    upstream app("app");
    app.set_echo(true);
    ASSERT_TRUE(start(single_pool({app.address()}), {.workers = 1}));
    http_client client(port());
    ASSERT_EQ(client.request("GET", "/first").status, 200u);
    ASSERT_TRUE(wait_until([&] { return app.open_connections() == 1; }, 10s, "one pooled connection"));

    for (int round = 0; round < 3; ++round) {
        app.close_idle_connections();
        ASSERT_TRUE(wait_until([&] { return app.open_connections() == 0; }, 10s,
                               "the upstream to close its idle connection"));
        const std::string target = "/round/" + std::to_string(round);
        auto r = client.request("GET", target);
        EXPECT_EQ(r.status, 200u) << target << ": " << r.body;
        EXPECT_EQ(r.body.rfind("GET " + target + " HTTP/1.1\r\n", 0), 0u) << r.body;
    }
    EXPECT_EQ(client.connections_made(), 1u) << "the client's connection survives";
    EXPECT_EQ(app.request_count(), 4u);
    EXPECT_EQ(app.connection_count(), 4u);
}

// ---------------------------------------------------------------------------
// Command line (SPEC §1 exit codes)

class cli_e2e : public proxy_fixture {};

TEST_F(cli_e2e, check_accepts_a_valid_file) {
    const std::string good = dir().write("good.yaml",
                                         "listeners:\n"
                                         "  - name: public\n"
                                         "    address: 127.0.0.1:18080\n"
                                         "admin:\n"
                                         "  address: 127.0.0.1:19901\n"
                                         "services:\n" +
                                             single_pool({"127.0.0.1:5000", "127.0.0.1:5001"}));
    auto ok = process::switchyard({"check", "--config", good});
    EXPECT_EQ(ok.wait(30s), 0) << ok.errors();
    EXPECT_NE(ok.output().find("OK"), std::string::npos) << ok.output();
}

TEST_F(cli_e2e, check_and_run_reject_an_invalid_file_with_exit_2_and_its_position) {
    // Line 3: a bad duration, value at column 16.
    const std::string bad = dir().write("bad.yaml",
                                        "admin:\n"
                                        "  address: 127.0.0.1:9901\n"
                                        "drain_timeout: 5 parsecs\n"
                                        "services:\n" +
                                            single_pool({"127.0.0.1:5000"}));
    auto check = process::switchyard({"check", "--config", bad});
    EXPECT_EQ(check.wait(30s), 2);
    // The offending value (column 16) or its key (column 1).
    EXPECT_TRUE(check.errors().find(bad + ":3:16:") != std::string::npos ||
                check.errors().find(bad + ":3:1:") != std::string::npos)
        << check.errors();
    EXPECT_EQ(check.output().find("OK"), std::string::npos) << check.output();

    auto run = process::switchyard({"run", "--config", bad, "--log-level", "warn"});
    EXPECT_EQ(run.wait(30s), 2) << run.errors();
}

// SPEC §1: "every error to stderr": one error must not hide or garble the next.
TEST_F(cli_e2e, check_reports_every_error_with_its_own_position) {
    // Line 3: an unknown key at column 1; line 4: a bad duration at column 16.
    const std::string bad = dir().write("bad.yaml",
                                        "admin:\n"
                                        "  address: 127.0.0.1:9901\n"
                                        "wrkers: 2\n"
                                        "drain_timeout: 5 parsecs\n"
                                        "services:\n" +
                                            single_pool({"127.0.0.1:5000"}));
    auto check = process::switchyard({"check", "--config", bad});
    EXPECT_EQ(check.wait(30s), 2);
    const std::string errors = check.errors();
    EXPECT_NE(errors.find(bad + ":3:1:"), std::string::npos) << errors;
    EXPECT_TRUE(errors.find(bad + ":4:16:") != std::string::npos ||
                errors.find(bad + ":4:1:") != std::string::npos)
        << errors;
    // Nothing is wrong at line 6 ("  - name: app" under services).
    EXPECT_EQ(errors.find(bad + ":6:"), std::string::npos) << errors;
}

TEST_F(cli_e2e, bare_switchyard_prints_usage_and_exits_2) {
    auto bare = process::switchyard({});
    EXPECT_EQ(bare.wait(30s), 2);
    EXPECT_FALSE(bare.errors().empty()) << "bare switchyard prints its usage";
}

TEST_F(cli_e2e, a_second_switchyard_on_the_same_port_exits_1) {
    upstream app("app");
    ASSERT_TRUE(start(single_pool({app.address()})));
    // The same listener, its own admin port.
    const std::uint16_t other_admin = free_port();
    std::string second = "listeners:\n  - name: public\n    address: 127.0.0.1:" +
                         std::to_string(port()) + "\nadmin:\n  address: 127.0.0.1:" +
                         std::to_string(other_admin) + "\nservices:\n" +
                         single_pool({app.address()});
    const std::string file = dir().write("second.yaml", second);
    auto other = process::switchyard({"run", "--config", file, "--workers", "2", "--log-level", "warn"});
    // It exits, or (the failure) gets ready on its own admin port.
    bool ready = false;
    EXPECT_TRUE(wait_until(
        [&] {
            if (!other.running()) {
                return true;
            }
            try {
                ready = http_get(other_admin, "/readyz").status == 200;
            } catch (const std::exception&) {
            }
            return ready;
        },
        30s, "the second switchyard to exit"));
    EXPECT_FALSE(ready) << "a second switchyard started on a listener already served";
    const int code = other.wait(0ms);
    EXPECT_EQ(code, 1) << other.errors();
    EXPECT_NE(other.errors().find("port in use"), std::string::npos) << other.errors();
    if (code == -1) {
        other.signal(SIGTERM);
        EXPECT_EQ(other.wait(30s), 0);
    }
    // The first one still serves.
    auto r = http_get(port(), "/still-here");
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.header("X-Upstream"), "app");
}

}  // namespace
}  // namespace switchyard::test
