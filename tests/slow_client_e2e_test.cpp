// Slow and idle clients through the real switchyard binary (SPEC §2 `limits`,
// §4): header_timeout (slowloris) and body_timeout answer 408 and close,
// idle_timeout closes silently, send_timeout drops a client that never reads,
// max_connections stops accepting at the cap and resumes, and hundreds of
// idle connections do not keep a normal request from being served.
//
// Timeouts in the configs are short (hundreds of milliseconds); the tests
// only assert that things happen within generous deadlines.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_http.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t mib = 1024 * 1024;

std::string single_pool(const std::string& endpoint) {
    return service_yaml("app", "main", pool_yaml("main", {endpoint}, 100));
}

std::string limits(const std::string& keys) {
    return "limits:\n" + keys;
}

class slow_client : public proxy_fixture {};

// A client that sends its header one byte every ~100 ms never finishes it:
// header_timeout runs from the first byte, activity does not extend it.
TEST_F(slow_client, slowloris_header_gets_408_and_the_connection_closed) {
    scripted_upstream app;
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.top_level = limits("  header_timeout: 500ms\n  idle_timeout: 30s\n")}));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("GET /slowloris HTTP/1.1\r\nHost: a\r\n"));
    const std::string drip = "X-Drip-Header: dripping-slowly-one-byte-at-a-time\r\n";
    std::string got;
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    for (std::size_t i = 0;
         got.empty() && !conn.closed() && std::chrono::steady_clock::now() < give_up; ++i) {
        if (!conn.send(drip.substr(i % drip.size(), 1))) {
            break;
        }
        got = conn.read_some(100ms);  // the pacing: waits for an answer
    }
    got += conn.read_until_close(5s);
    EXPECT_EQ(got.rfind("HTTP/1.1 408 ", 0), 0u) << printable(got);
    EXPECT_TRUE(conn.closed()) << printable(got);
    EXPECT_EQ(app.received(), "") << printable(app.received());
    EXPECT_EQ(http_get(port(), "/after").status, 200u);
}

// A body that stops arriving: 408 (no response has started) and the
// upstream request, if one was started, aborted rather than completed.
TEST_F(slow_client, stalled_body_gets_408_and_the_upstream_request_is_aborted) {
    scripted_upstream app;
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.top_level = limits("  body_timeout: 500ms\n  idle_timeout: 30s\n")}));
    raw_connection conn(port());
    ASSERT_TRUE(
        conn.send("POST /stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
                  "only-ten.."));
    auto r = conn.read_response(10s);
    const std::string rest = conn.read_until_close(5s);
    EXPECT_TRUE(conn.closed()) << printable(rest);
    EXPECT_EQ(app.request_count(), 0u) << printable(app.received());
    EXPECT_TRUE(wait_until([&] { return app.open_with_partial_request() == 0; }, 5s,
                           "the partial upstream request's connection to close"))
        << printable(app.received());
    ASSERT_TRUE(r.has_value()) << "no response; got " << printable(rest);
    EXPECT_EQ(r->status, 408u) << printable(r->body);
}

TEST_F(slow_client, idle_connections_are_closed_silently) {
    scripted_upstream app;
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.top_level = limits("  idle_timeout: 500ms\n  header_timeout: 30s\n")}));
    // After a request, keep-alive.
    raw_connection used(port());
    // Never a byte.
    raw_connection fresh(port());
    ASSERT_TRUE(used.send("GET /once HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto r = used.read_response(5s);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200u);
    EXPECT_TRUE(r->keep_alive);
    const std::string after_used = used.read_until_close(10s);
    EXPECT_TRUE(used.closed()) << "a keep-alive connection idle for 10 s is still open";
    EXPECT_EQ(after_used, "") << "closed with bytes (not silently): " << printable(after_used);
    const std::string after_fresh = fresh.read_until_close(10s);
    EXPECT_TRUE(fresh.closed()) << "a connection without a byte for 10 s is still open";
    EXPECT_EQ(after_fresh, "") << "closed with bytes (not silently): " << printable(after_fresh);
}

// The client asks for a large body and never reads: once its socket buffers
// are full, send_timeout ends the connection and the upstream exchange.
TEST_F(slow_client, a_client_that_never_reads_is_dropped_after_send_timeout) {
    upstream app("app");
    app.set_response_size(256 * mib);
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.workers = 1, .top_level = limits("  send_timeout: 500ms\n")}));
    raw_connection conn(port());
    int small = 64 * 1024;
    ::setsockopt(conn.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    ASSERT_TRUE(conn.send("GET /huge HTTP/1.1\r\nHost: a\r\n\r\n"));
    ASSERT_TRUE(wait_until([&] { return app.request_count() == 1; }, 10s, "the upstream request"));
    // Nothing is read here until the proxy gave up on the upstream side.
    EXPECT_TRUE(wait_until([&] { return app.open_connections() == 0; }, 20s,
                           "the proxy to drop the upstream exchange of the stuck client"));
    std::uint64_t drained = 0;
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (!conn.closed() && std::chrono::steady_clock::now() < give_up) {
        drained += conn.read_some(1s).size();
    }
    EXPECT_TRUE(conn.closed()) << "the stuck client's connection is still open after draining "
                               << drained << " bytes";
    EXPECT_LT(drained, 256 * mib) << "the whole body was delivered";
    std::cout << "[note] the stuck client had " << drained << " bytes buffered\n";
    app.set_response_size(0);
    app.set_body("small\n");
    EXPECT_EQ(http_get(port(), "/after").status, 200u);
}

TEST_F(slow_client, max_connections_stops_accepting_at_the_cap_and_resumes) {
    scripted_upstream app;
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.workers = 1, .top_level = limits("  max_connections: 4\n")}));
    std::vector<std::unique_ptr<raw_connection>> held;
    for (int i = 0; i < 4; ++i) {
        held.push_back(std::make_unique<raw_connection>(port()));
        ASSERT_TRUE(held.back()->send("GET /held HTTP/1.1\r\nHost: a\r\n\r\n"));
        auto r = held.back()->read_response(5s);
        ASSERT_TRUE(r.has_value()) << "held connection " << i;
        ASSERT_EQ(r->status, 200u);
    }
    // The kernel completes the handshake; the proxy must not serve it yet.
    raw_connection waiting(port());
    ASSERT_TRUE(waiting.send("GET /waiting HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto early = waiting.read_response(500ms);
    EXPECT_FALSE(early.has_value())
        << "a fifth connection was served at max_connections 4 (status " << early->status << ")";
    EXPECT_FALSE(waiting.closed()) << "at the cap the proxy closed a new connection instead of "
                                      "leaving it unaccepted";
    held.front()->close();
    if (!early) {
        auto r = waiting.read_response(10s);
        ASSERT_TRUE(r.has_value()) << "the waiting connection was not served after one closed; got "
                                   << printable(waiting.read_until_close(0ms));
        EXPECT_EQ(r->status, 200u);
    }
    held.clear();
    // Every slot comes back: more new connections than the cap, one by one.
    for (int i = 0; i < 10; ++i) {
        auto r = http_get(port(), "/again");
        ASSERT_EQ(r.status, 200u) << "request " << i;
    }
}

TEST_F(slow_client, five_hundred_idle_connections_do_not_stop_a_normal_request) {
    scripted_upstream app;
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.top_level = limits("  idle_timeout: 60s\n  header_timeout: 60s\n")}));
    ASSERT_EQ(http_get(port(), "/warm-up").status, 200u);
    const std::uint64_t rss_before = rss_kib(pid());
    std::vector<std::unique_ptr<raw_connection>> idle;
    for (int i = 0; i < 500; ++i) {
        idle.push_back(std::make_unique<raw_connection>(port()));
        if (i % 5 == 0) {
            // Some of them with half a header.
            ASSERT_TRUE(idle.back()->send("GET /partial HTTP/1.1\r\nHost: a\r\nX-Half"));
        }
    }
    http_client client(port());
    for (int i = 0; i < 5; ++i) {
        auto r = client.request("GET", "/normal", {}, {}, 10s);
        EXPECT_EQ(r.status, 200u);
    }
    EXPECT_EQ(http_get(port(), "/fresh").status, 200u);
    const std::uint64_t rss_after = rss_kib(pid());
    std::cout << "[note] 500 idle connections: proxy RSS " << rss_before / 1024 << " -> "
              << rss_after / 1024 << " MiB ("
              << (rss_after > rss_before ? (rss_after - rss_before) * 1024 / 500 : 0)
              << " bytes per connection)\n";
    for (const auto& c : idle) {
        EXPECT_FALSE(c->closed());
    }
}

}  // namespace
}  // namespace switchyard::test
