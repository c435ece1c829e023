// Self-test of the test-support library: the in-process upstreams, the
// clients and the process helpers the integration tests stand on.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view simple_get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

std::uint64_t content_length_of(const std::string& raw) {
    const auto pos = raw.find("Content-Length: ");
    if (pos == std::string::npos) {
        return 0;
    }
    return std::stoull(raw.substr(pos + 16));
}

TEST(Upstream, AnswersWithKeepAliveOnOneConnection) {
    upstream up("blue");
    http_client client(up.port());

    auto first = client.request("GET", "/a");
    auto second = client.request("GET", "/b");

    EXPECT_EQ(first.status, 200u);
    EXPECT_EQ(first.body, "blue\n");
    EXPECT_EQ(first.header("x-upstream"), "blue");
    EXPECT_TRUE(first.keep_alive);
    EXPECT_EQ(second.status, 200u);
    EXPECT_EQ(client.connections_made(), 1u);
    EXPECT_EQ(up.connection_count(), 1u);
    ASSERT_EQ(up.request_count(), 2u);
    auto seen = up.requests();
    EXPECT_EQ(seen[0].target, "/a");
    EXPECT_EQ(seen[1].target, "/b");
    EXPECT_EQ(seen[0].connection, seen[1].connection);
    EXPECT_EQ(up.address(), "127.0.0.1:" + std::to_string(up.port()));
}

TEST(Upstream, RecordsMethodHeadersAndBody) {
    upstream up;
    http_client client(up.port());

    auto res = client.request("POST", "/submit?x=1",
                              {{"Host", "app.example"}, {"X-Dup", "a"}, {"x-dup", "b"}}, "hello");

    EXPECT_EQ(res.status, 200u);
    ASSERT_EQ(up.request_count(), 1u);
    const auto req = up.requests().front();
    EXPECT_EQ(req.method, "POST");
    EXPECT_EQ(req.target, "/submit?x=1");
    EXPECT_EQ(req.version, 11u);
    EXPECT_EQ(req.header("HOST"), "app.example");
    EXPECT_EQ(req.header_count("X-DUP"), 2);
    EXPECT_EQ(req.header("x-dup"), "a");
    EXPECT_EQ(req.header("absent"), "");
    EXPECT_EQ(req.body_bytes, 5u);
    EXPECT_EQ(req.body_prefix, "hello");

    up.clear();
    EXPECT_EQ(up.request_count(), 0u);
    EXPECT_EQ(up.connection_count(), 0u);
}

TEST(Upstream, EchoesTheRequestAsReceived) {
    upstream up;
    up.set_echo(true);
    http_client client(up.port());

    auto res = client.request("PUT", "/echo", {{"X-Foo", "bar"}}, "payload");

    EXPECT_EQ(res.status, 200u);
    EXPECT_EQ(res.body.rfind("PUT /echo HTTP/1.1\r\n", 0), 0u) << res.body;
    EXPECT_NE(res.body.find("\r\nX-Foo: bar\r\n"), std::string::npos) << res.body;
    EXPECT_NE(res.body.find("\r\nContent-Length: 7\r\n"), std::string::npos) << res.body;
    EXPECT_TRUE(res.body.ends_with("\r\n\r\npayload")) << res.body;
}

TEST(Upstream, StatusHealthAndErrorRate) {
    upstream up;
    http_client client(up.port());

    up.set_status(503);
    up.set_body("down");
    auto res = client.request("GET", "/");
    EXPECT_EQ(res.status, 503u);
    EXPECT_EQ(res.body, "down");

    up.set_health_status(500);
    EXPECT_EQ(client.request("GET", "/healthz").status, 500u);
    up.set_health_status(200);
    EXPECT_EQ(client.request("GET", "/healthz").status, 200u);
    EXPECT_EQ(up.health_check_count(), 2u);
    EXPECT_EQ(up.request_count(), 1u);

    up.set_status(204);
    res = client.request("GET", "/");
    EXPECT_EQ(res.status, 204u);
    EXPECT_EQ(res.body, "");

    up.set_status(200);
    up.set_error_rate(0.5, 502, 7);
    int errors = 0;
    for (int i = 0; i < 200; ++i) {
        auto r = client.request("GET", "/");
        if (r.status == 502u) {
            ++errors;
        } else {
            EXPECT_EQ(r.status, 200u);
        }
    }
    EXPECT_GT(errors, 60);
    EXPECT_LT(errors, 140);
    EXPECT_EQ(client.connections_made(), 1u);
}

TEST(Upstream, StreamsA64MiBDownloadByteForByte) {
    constexpr std::uint64_t size = 64ull * 1024 * 1024;
    upstream up;
    up.set_response_size(size, false);
    http_client client(up.port());

    std::uint64_t offset = 0;
    bool intact = true;
    auto res = client.stream("GET", "/big", [&](std::string_view piece) {
        intact = intact && matches_generated_body(piece, offset);
        offset += piece.size();
    });

    EXPECT_EQ(res.status, 200u);
    EXPECT_EQ(res.header("content-length"), std::to_string(size));
    EXPECT_EQ(res.body_bytes, size);
    EXPECT_EQ(offset, size);
    EXPECT_TRUE(intact);
    EXPECT_TRUE(res.body.empty());
}

TEST(Upstream, StreamsChunkedAndAnswersHead) {
    constexpr std::uint64_t size = 3 * 1024 * 1024 + 17;
    upstream up;
    up.set_response_size(size, true);
    http_client client(up.port());

    auto res = client.request("GET", "/chunked");
    EXPECT_EQ(res.header("transfer-encoding"), "chunked");
    EXPECT_EQ(res.body.size(), size);
    EXPECT_TRUE(matches_generated_body(res.body, 0));

    up.set_response_size(1000, false);
    auto head = client.request("HEAD", "/");
    EXPECT_EQ(head.header("content-length"), "1000");
    EXPECT_EQ(head.body, "");
    // The connection is still in sync after a HEAD.
    EXPECT_EQ(client.request("GET", "/").body.size(), 1000u);
    EXPECT_EQ(client.connections_made(), 1u);
}

TEST(Upstream, CountsStreamedUploadWithoutKeepingIt) {
    constexpr std::uint64_t size = 16ull * 1024 * 1024 + 5;
    upstream up;
    http_client client(up.port());

    auto res = client.upload("POST", "/upload", size, true);
    EXPECT_EQ(res.status, 200u);
    auto fixed = client.upload("PUT", "/upload", 100000, false);
    EXPECT_EQ(fixed.status, 200u);

    ASSERT_EQ(up.request_count(), 2u);
    const auto seen = up.requests();
    EXPECT_EQ(seen[0].header("transfer-encoding"), "chunked");
    EXPECT_EQ(seen[0].body_bytes, size);
    EXPECT_EQ(seen[0].body_prefix.size(), 4096u);
    EXPECT_TRUE(matches_generated_body(seen[0].body_prefix, 0));
    EXPECT_EQ(seen[1].body_bytes, 100000u);
    EXPECT_EQ(seen[0].body_hash == seen[1].body_hash, false);
}

TEST(Upstream, DelaysAndClientTimesOut) {
    upstream up;
    up.set_delay(milliseconds(300));
    http_client client(up.port());

    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(client.request("GET", "/").status, 200u);
    EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));

    try {
        client.request("GET", "/slow", {}, {}, milliseconds(50));
        ADD_FAILURE() << "expected a timeout";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("timed out after 50 ms"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("GET /slow"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(client.connected());
    up.set_delay(milliseconds(0));
    EXPECT_EQ(client.request("GET", "/").status, 200u);
    EXPECT_EQ(client.connections_made(), 2u);
}

TEST(Upstream, CloseMidBodyTruncates) {
    upstream up;
    up.set_body(std::string(1000, 'b'));
    up.set_fault(upstream::fault::close_mid_body);
    raw_connection conn(up.port());
    ASSERT_TRUE(conn.send(simple_get));

    EXPECT_FALSE(conn.read_response(seconds(5)).has_value());
    const std::string raw = conn.read_until_close(seconds(5));
    EXPECT_TRUE(conn.closed());
    const auto header_end = raw.find("\r\n\r\n");
    ASSERT_NE(header_end, std::string::npos) << raw;
    const auto declared = content_length_of(raw);
    EXPECT_EQ(declared, 1000u);
    EXPECT_LT(raw.size() - header_end - 4, declared);
}

TEST(Upstream, ResetAndCloseBeforeResponse) {
    upstream up;
    for (auto f :
         {upstream::fault::reset_before_response, upstream::fault::close_before_response}) {
        up.set_fault(f);
        raw_connection conn(up.port());
        ASSERT_TRUE(conn.send(simple_get));
        EXPECT_EQ(conn.read_until_close(seconds(5)), "");
        EXPECT_TRUE(conn.closed());
    }
    EXPECT_EQ(up.request_count(), 2u);
}

TEST(Upstream, MalformedAndExtraBytes) {
    upstream up("u");
    up.set_fault(upstream::fault::bad_status_line);
    {
        raw_connection conn(up.port());
        ASSERT_TRUE(conn.send(simple_get));
        EXPECT_EQ(conn.read_until_close(seconds(5)).rfind("HTTP/1.1 2OO OK\r\n", 0), 0u);
    }
    up.set_fault(upstream::fault::extra_bytes_after_body);
    raw_connection conn(up.port());
    ASSERT_TRUE(conn.send(simple_get));
    auto res = conn.read_response(seconds(5));
    ASSERT_TRUE(res.has_value());
    EXPECT_EQ(res->status, 200u);
    EXPECT_EQ(res->body, "u\n");
    std::string extra;
    EXPECT_TRUE(wait_until(
        [&] {
            extra += conn.read_some(milliseconds(50));
            return extra.find("EXTRA-BYTES-AFTER-BODY") != std::string::npos;
        },
        seconds(5), "the extra bytes"));
}

TEST(Upstream, StallNeverAnswersAndStillShutsDown) {
    std::optional<upstream> up(std::in_place);
    up->set_fault(upstream::fault::stall);
    raw_connection conn(up->port());
    ASSERT_TRUE(conn.send(simple_get));
    EXPECT_EQ(conn.read_some(milliseconds(200)), "");
    EXPECT_FALSE(conn.closed());
    EXPECT_EQ(up->open_connections(), 1u);

    const auto start = std::chrono::steady_clock::now();
    up.reset();
    EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(2));
    conn.read_until_close(seconds(5));
    EXPECT_TRUE(conn.closed());
}

TEST(Upstream, ClosesIdleConnections) {
    upstream up;
    up.set_delay(milliseconds(500));
    http_client idle(up.port());
    EXPECT_EQ(idle.request("GET", "/").status, 200u);
    raw_connection busy(up.port());
    ASSERT_TRUE(busy.send(simple_get));
    ASSERT_TRUE(wait_until([&] { return up.request_count() == 2; }, seconds(5), "2 requests"));
    EXPECT_EQ(up.open_connections(), 2u);

    up.close_idle_connections();

    EXPECT_TRUE(wait_until([&] { return !idle.connected(); }, seconds(5), "idle closed"));
    EXPECT_TRUE(wait_until([&] { return up.open_connections() == 1; }, seconds(5), "1 open"));
    auto res = busy.read_response(seconds(5));  // the in-flight request still completes
    ASSERT_TRUE(res.has_value());
    EXPECT_EQ(res->status, 200u);
}

TEST(Upstream, ConnectionCloseEndsTheConnection) {
    upstream up;
    http_client client(up.port());
    auto res = client.request("GET", "/", {{"Connection", "close"}});
    EXPECT_FALSE(res.keep_alive);
    EXPECT_FALSE(client.connected());
    EXPECT_TRUE(wait_until([&] { return up.open_connections() == 0; }, seconds(5), "closed"));
    EXPECT_EQ(client.request("GET", "/").status, 200u);
    EXPECT_EQ(client.connections_made(), 2u);
    EXPECT_EQ(up.connection_count(), 2u);
    const auto seen = up.requests();
    EXPECT_NE(seen[0].connection, seen[1].connection);
}

TEST(RawUpstream, RecordsBytesAndAnswersCanned) {
    raw_upstream up;
    up.set_reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    up.set_close_after_reply(true);

    raw_connection conn(up.port());
    ASSERT_TRUE(conn.send("GET /x HTTP/1.1\r\nHo"));
    EXPECT_EQ(conn.read_some(milliseconds(100)), "");  // no full header block yet
    ASSERT_TRUE(conn.send("st: a\r\n\r\n"));
    auto res = conn.read_response(seconds(5));
    ASSERT_TRUE(res.has_value());
    EXPECT_EQ(res->status, 200u);
    EXPECT_EQ(res->body, "ok");
    conn.read_until_close(seconds(5));
    EXPECT_TRUE(conn.closed());
    EXPECT_EQ(up.received(), "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");

    raw_connection silent(up.port());
    ASSERT_TRUE(silent.send("\x16\x03\x01garbage"));
    EXPECT_TRUE(wait_until([&] { return up.received(1) == "\x16\x03\x01garbage"; }, seconds(5),
                           "the second connection's bytes"));
    EXPECT_EQ(up.connection_count(), 2u);
}

TEST(Client, FailsClearlyWhenNothingListens) {
    const auto port = free_port();
    http_client client(port);
    try {
        client.request("GET", "/");
        ADD_FAILURE() << "expected a connect error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(port)),
                  std::string::npos)
            << e.what();
    }
    EXPECT_THROW(raw_connection{port}, std::runtime_error);
    EXPECT_FALSE(wait_for_port(port, milliseconds(50)));
}

TEST(Client, HttpGetAndWaitForPort) {
    upstream up("green");
    EXPECT_TRUE(wait_for_port(up.port(), seconds(1)));
    auto res = http_get(up.port(), "/", {{"X-A", "1"}});
    EXPECT_EQ(res.body, "green\n");
    EXPECT_EQ(up.requests().front().header("host"), "localhost");
}

TEST(WaitUntil, FailsWithMessageAtDeadline) {
    const auto start = std::chrono::steady_clock::now();
    auto result = wait_until([] { return false; }, milliseconds(50), "the impossible");
    EXPECT_FALSE(result);
    EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(50));
    EXPECT_NE(std::string(result.message()).find("the impossible"), std::string::npos)
        << result.message();
    EXPECT_TRUE(wait_until([] { return true; }));
}

TEST(Process, CapturesOutputAndExitCode) {
    auto echo = process("/bin/echo", {"hello", "world"});
    EXPECT_EQ(echo.wait(seconds(5)), 0);
    EXPECT_EQ(echo.output(), "hello world\n");
    EXPECT_FALSE(echo.running());

    auto sh = process("sh", {"-c", "echo $SY_TEST_VAR; echo oops >&2; exit 3"},
                      {{"SY_TEST_VAR", "from-env"}});
    EXPECT_EQ(sh.wait(seconds(5)), 3);
    EXPECT_EQ(sh.output(), "from-env\n");
    EXPECT_EQ(sh.errors(), "oops\n");
}

TEST(Process, SignalsAndTimeouts) {
    auto sleeper = process("/bin/sleep", {"30"});
    EXPECT_TRUE(sleeper.running());
    EXPECT_EQ(sleeper.wait(milliseconds(50)), -1);
    EXPECT_GT(rss_kib(sleeper.pid()), 0u);
    sleeper.signal(SIGTERM);
    EXPECT_EQ(sleeper.wait(seconds(5)), 128 + SIGTERM);
    // The destructor kills and reaps a process still running.
    auto forgotten = process("/bin/sleep", {"30"});
    EXPECT_TRUE(forgotten.running());
    EXPECT_THROW(process("/nonexistent/binary", {}), std::runtime_error);
}

TEST(Process, TempDirAndMemory) {
    std::string where;
    {
        temp_dir dir;
        where = dir.path();
        const auto file = dir.write("sub/config.yaml", "a: 1\n");
        EXPECT_EQ(file, where + "/sub/config.yaml");
        auto cat = process("/bin/cat", {file});
        EXPECT_EQ(cat.wait(seconds(5)), 0);
        EXPECT_EQ(cat.output(), "a: 1\n");
    }
    EXPECT_NE(::access(where.c_str(), F_OK), 0);
    EXPECT_GT(peak_rss_kib(::getpid()), 0u);
    EXPECT_GE(peak_rss_kib(::getpid()), rss_kib(::getpid()));
    EXPECT_NE(free_port(), 0u);
}

}  // namespace
}  // namespace switchyard::test
