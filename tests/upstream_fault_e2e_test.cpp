// Faulty upstream responses through the real switchyard binary (SPEC §4,
// "Upstream failures"): malformed responses are 502 and their connection
// discarded, bytes beyond a response's length never reach the client, a
// response cut short aborts the client's connection, a response without a
// length is read to the close, HEAD responses carry no body, interim 1xx
// responses are relayed, and a stale pooled connection is retried once.
// (Refused connections, 504 and an idle pooled connection closed in advance
// are in proxy_test.)
//
// The upstream is a scripted_upstream: its answers are exact bytes, chosen
// per connection and per request.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_http.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;
using reply = scripted_upstream::reply;
using then = scripted_upstream::then;
using upstream_request = scripted_upstream::request;

std::string single_pool(const std::string& endpoint) {
    return service_yaml("app", "main", pool_yaml("main", {endpoint}, 100));
}

const proxy_options fault_options{
    .workers = 1,
    .top_level = "upstream_defaults:\n  response_timeout: 3s\n  read_timeout: 2s\n  retries: 1\n"};

// "200 ok\n" with the request line in a header, so a test can tell answers apart.
reply echo_line(const upstream_request& r) {
    const std::string body = "ok\n";
    return {"HTTP/1.1 200 OK\r\nX-Request-Line: " + r.line() +
            "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body};
}

// All bytes a client gets for one GET on a new connection.
struct client_view {
    std::optional<http_response> response;
    std::string rest;  // unparsed bytes, until close or the deadline
    std::string error;
    bool closed = false;

    std::string describe() const {
        std::string out = response ? "status " + std::to_string(response->status) + " body " +
                                         printable(response->body, 200)
                                   : std::string("no complete response");
        if (!error.empty()) {
            out += " (" + error + ")";
        }
        return out + (closed ? "; closed" : "; open") + "; rest " + printable(rest, 300);
    }
};

client_view get_raw(std::uint16_t port, const std::string& request, bool head = false,
                    bool read_to_close = true) {
    client_view v;
    raw_connection conn(port);
    conn.send(request);
    try {
        v.response = conn.read_response(8s, head);
    } catch (const std::exception& e) {
        v.error = e.what();
    }
    v.rest = read_to_close ? conn.read_until_close(3s) : conn.read_some(0ms);
    v.closed = conn.closed();
    return v;
}

class upstream_fault : public proxy_fixture {};

// ---------------------------------------------------------------------------
// Malformed responses: 502, and the connection is not pooled

struct malformed_case {
    std::string name;
    std::string response;
};

void PrintTo(const malformed_case& c, std::ostream* os) {
    *os << c.name;
}

class malformed_response : public upstream_fault,
                           public ::testing::WithParamInterface<malformed_case> {};

TEST_P(malformed_response, is_502_and_its_connection_discarded) {
    const std::string bad = GetParam().response;
    scripted_upstream app(
        [bad](const upstream_request& r) { return r.connection == 0 ? reply{bad} : echo_line(r); });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    http_client client(port());
    auto first = client.request("GET", "/first");
    EXPECT_EQ(first.status, 502u) << printable(first.body);
    EXPECT_NE(first.body.find("switchyard"), std::string::npos) << printable(first.body);
    EXPECT_FALSE(icontains(first.body, "smuggled")) << printable(first.body);
    if (!client.connected()) {
        client.close();
    }
    auto second = client.request("GET", "/second");
    EXPECT_EQ(second.status, 200u) << printable(second.body);
    EXPECT_EQ(second.header("X-Request-Line"), "GET /second HTTP/1.1");
    EXPECT_EQ(app.request_count(), 2u) << printable(app.received());
    EXPECT_EQ(app.connection_count(), 2u) << "the malformed response's connection was reused";
}

INSTANTIATE_TEST_SUITE_P(
    spec4, malformed_response,
    ::testing::Values(
        malformed_case{"status_code_letters", "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"},
        malformed_case{"status_line_garbage", "garbage\r\nContent-Length: 2\r\n\r\nok"},
        malformed_case{"status_line_without_version", "200 OK\r\nContent-Length: 2\r\n\r\nok"},
        malformed_case{"status_code_four_digits",
                       "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"},
        malformed_case{"content_length_and_chunked",
                       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n0\r\n\r\n"},
        malformed_case{"chunked_and_content_length",
                       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
                       "0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"},
        malformed_case{"differing_content_lengths",
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok\n"},
        malformed_case{"content_length_not_a_number",
                       "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok"}),
    [](const ::testing::TestParamInfo<malformed_case>& info) { return info.param.name; });

// A bad chunk found after the response header may already be on its way:
// then the client's connection is aborted, never given a complete message.
TEST_F(upstream_fault, bad_chunk_in_a_response_is_502_or_an_aborted_response) {
    scripted_upstream app([](const upstream_request& r) {
        return r.connection == 0
                   ? reply{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\nzz\r\nmore\r\n0\r\n\r\n"}
                   : echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    const client_view v = get_raw(port(), "GET /bad-chunk HTTP/1.1\r\nHost: a\r\n\r\n");
    if (v.response) {
        EXPECT_EQ(v.response->status, 502u) << v.describe();
    }
    EXPECT_TRUE(v.closed) << v.describe();
    EXPECT_EQ(http_get(port(), "/after").header("X-Request-Line"), "GET /after HTTP/1.1");
    EXPECT_EQ(app.connection_count(), 2u) << "the bad response's connection was reused";
}

// ---------------------------------------------------------------------------
// Lengths

// The upstream sends a whole second response after a 5-byte body, in the
// same write: the client must get "hello", and its next request must never
// be answered with the stray bytes.
TEST_F(upstream_fault, bytes_beyond_content_length_are_discarded_with_the_connection) {
    scripted_upstream app([](const upstream_request& r) {
        return r.connection == 0 && r.index == 0
                   ? reply{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                           "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"}
                   : echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("GET /first HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto first = conn.read_response(8s);
    ASSERT_TRUE(first.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(first->status, 200u);
    EXPECT_EQ(first->body, "hello");
    EXPECT_EQ(first->header("Content-Length"), "5");
    std::string later;
    if (conn.closed()) {
        later = conn.read_until_close(0ms);
    } else {
        conn.send("GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
        auto second = conn.read_response(8s);
        if (second) {
            EXPECT_EQ(second->status, 200u);
            EXPECT_EQ(second->header("X-Request-Line"), "GET /second HTTP/1.1")
                << "the second request got someone else's answer: " << printable(second->body);
            later = second->body;
        }
        later += conn.read_some(200ms);
    }
    EXPECT_FALSE(icontains(later, "smuggled")) << printable(later);
    EXPECT_GE(app.connection_count(), 2u) << "the connection with stray bytes was pooled";
    EXPECT_EQ(http_get(port(), "/third").header("X-Request-Line"), "GET /third HTTP/1.1");
}

// Later, unasked: the upstream sends a whole response into a connection that
// sits idle in the proxy's pool. The proxy closes that connection (the
// worker's sweep, every 2 s, peeks at idle connections; a lease peeks too),
// and the next request gets its own answer on a new one.
TEST_F(upstream_fault, a_response_sent_into_an_idle_pooled_connection_spoils_it) {
    scripted_upstream app([](const upstream_request& r) {
        reply answer = echo_line(r);
        if (r.connection == 0 && r.index == 0) {
            answer.later = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
        }
        return answer;
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("GET /first HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto first = conn.read_response(8s);
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->header("X-Request-Line"), "GET /first HTTP/1.1");
    ASSERT_EQ(app.open_connections(), 1u);

    app.release_later();
    ASSERT_TRUE(wait_until([&] { return app.later_sent() == 1; }, 10s, "the unasked response sent"));
    ASSERT_TRUE(wait_until([&] { return app.open_connections() == 0; }, 10s,
                           "the proxy to close the spoiled connection"));

    ASSERT_TRUE(conn.send("GET /second HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto second = conn.read_response(8s);
    ASSERT_TRUE(second.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(second->status, 200u);
    EXPECT_EQ(second->header("X-Request-Line"), "GET /second HTTP/1.1")
        << "the second request got someone else's answer: " << printable(second->body);
    EXPECT_FALSE(icontains(second->body + conn.read_some(200ms), "smuggled"));
    EXPECT_EQ(app.connection_count(), 2u);
    EXPECT_EQ(app.request_count(), 2u);
}

// A response that arrives in two pieces, held apart until the proxy has read
// the first: the header split mid-field, or the body split after its first
// bytes. The client gets it whole and the connection goes on.
class response_in_pieces : public upstream_fault,
                           public ::testing::WithParamInterface<std::size_t> {};

TEST_P(response_in_pieces, is_relayed_whole) {
    const std::string body = "hello, in two pieces\n";
    const std::string response = "HTTP/1.1 200 OK\r\nX-Piece: one\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body;
    const std::size_t split = GetParam() < response.size() ? GetParam() : response.size() - 5;
    scripted_upstream app([&](const upstream_request& r) {
        if (r.index == 0) {
            return reply{response.substr(0, split), then::keep_open, response.substr(split)};
        }
        return echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("GET /pieces HTTP/1.1\r\nHost: a\r\n\r\n"));
    ASSERT_TRUE(wait_until([&] { return app.request_count() == 1; }, 10s, "the request upstream"));
    // The first piece is upstream and read by the proxy within this window;
    // the client gets nothing of it: a header cut short is not relayed, nor
    // part of a body this small (it goes out with the header in one write).
    EXPECT_EQ(conn.read_some(200ms), "");
    app.release_later();
    auto whole = conn.read_response(8s);
    ASSERT_TRUE(whole.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(whole->status, 200u);
    EXPECT_EQ(whole->header("X-Piece"), "one");
    EXPECT_EQ(whole->body, body);
    ASSERT_TRUE(conn.send("GET /after HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto next = conn.read_response(8s);
    ASSERT_TRUE(next.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(next->header("X-Request-Line"), "GET /after HTTP/1.1");
}

// 20: inside the first field; 1000: a few bytes before the body ends.
INSTANTIATE_TEST_SUITE_P(spec4, response_in_pieces, ::testing::Values(std::size_t{20}, std::size_t{1000}),
                         [](const auto& info) {
                             return info.param == 20 ? std::string("split_in_header")
                                                     : std::string("split_in_body");
                         });

class close_mid_body : public upstream_fault, public ::testing::WithParamInterface<bool> {};

TEST_P(close_mid_body, aborts_the_client_connection) {
    const bool chunked = GetParam();
    const std::string cut =
        chunked ? "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort\r\n"
                : "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
    scripted_upstream app([cut](const upstream_request&) { return reply{cut, then::close}; });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    const client_view v = get_raw(port(), "GET /cut HTTP/1.1\r\nHost: a\r\n\r\n");
    EXPECT_FALSE(v.response.has_value()) << "a complete-looking message: " << v.describe();
    EXPECT_TRUE(v.closed) << v.describe();
    EXPECT_TRUE(v.rest.empty() || v.rest.rfind("HTTP/1.1 200", 0) == 0) << v.describe();
}

INSTANTIATE_TEST_SUITE_P(spec4, close_mid_body, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                             return info.param ? "chunked" : "content_length";
                         });

TEST_F(upstream_fault, a_response_without_length_is_read_to_the_close_and_relayed_complete) {
    const std::string body = "read until the upstream closes\n";
    scripted_upstream app([body](const upstream_request&) {
        return reply{"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body, then::close};
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    // HTTP/1.1 client: chunked (or a close-delimited body).
    client_view v11 = get_raw(port(), "GET /eof HTTP/1.1\r\nHost: a\r\n\r\n", false, false);
    ASSERT_TRUE(v11.response.has_value()) << v11.describe();
    EXPECT_EQ(v11.response->status, 200u);
    EXPECT_EQ(v11.response->body, body) << v11.describe();
    EXPECT_TRUE(icontains(v11.response->header("Transfer-Encoding"), "chunked"))
        << "framing to a 1.1 client: Transfer-Encoding '"
        << v11.response->header("Transfer-Encoding") << "', Content-Length '"
        << v11.response->header("Content-Length") << "', Connection '"
        << v11.response->header("Connection") << "'";
    // HTTP/1.0 client: the body, then the close.
    client_view v10 = get_raw(port(), "GET /eof HTTP/1.0\r\n\r\n");
    ASSERT_TRUE(v10.response.has_value()) << v10.describe();
    EXPECT_EQ(v10.response->status, 200u);
    EXPECT_EQ(v10.response->body, body) << v10.describe();
    EXPECT_TRUE(v10.closed) << v10.describe();
}

TEST_F(upstream_fault, head_response_with_content_length_has_no_body) {
    scripted_upstream app([](const upstream_request& r) {
        return r.line().starts_with("HEAD ")
                   ? reply{"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"}
                   : echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto head = conn.read_response(8s, true);
    ASSERT_TRUE(head.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(head->status, 200u);
    EXPECT_EQ(head->header("Content-Length"), "1234");
    // The same connection goes on: nothing was waited for or sent as a body.
    ASSERT_TRUE(conn.send("GET /after-head HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto next = conn.read_response(8s);
    ASSERT_TRUE(next.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(next->status, 200u) << printable(next->body);
    EXPECT_EQ(next->header("X-Request-Line"), "GET /after-head HTTP/1.1");
}

TEST_F(upstream_fault, interim_103_is_relayed_before_the_final_response) {
    scripted_upstream app([](const upstream_request& r) {
        return reply{"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" +
                     echo_line(r).bytes};
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("GET /hints HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto interim = conn.read_response(8s);
    ASSERT_TRUE(interim.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(interim->status, 103u);
    EXPECT_EQ(interim->header("Link"), "</style.css>; rel=preload");
    if (interim->status == 103) {
        auto final_response = conn.read_response(8s);
        ASSERT_TRUE(final_response.has_value()) << printable(conn.read_until_close(1s));
        EXPECT_EQ(final_response->status, 200u);
        EXPECT_EQ(final_response->body, "ok\n");
    }
    // No desync on the connection.
    ASSERT_TRUE(conn.send("GET /after-hints HTTP/1.1\r\nHost: a\r\n\r\n"));
    std::optional<http_response> next = conn.read_response(8s);
    if (next && next->status == 103) {
        next = conn.read_response(8s);
    }
    ASSERT_TRUE(next.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(next->header("X-Request-Line"), "GET /after-hints HTTP/1.1");
}

// ---------------------------------------------------------------------------
// Stale pooled connections (SPEC §2 `retries`)

// The pooled connection dies when the next request arrives on it, before
// any response byte: a GET is retried once on a new connection.
class stale_pooled : public upstream_fault, public ::testing::WithParamInterface<then> {};

TEST_P(stale_pooled, connection_is_retried_once_for_a_get) {
    const then how = GetParam();
    scripted_upstream app([how](const upstream_request& r) {
        return r.connection == 0 && r.index == 1 ? reply{"", how} : echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    http_client client(port());
    ASSERT_EQ(client.request("GET", "/one").status, 200u);
    auto r = client.request("GET", "/two");
    EXPECT_EQ(r.status, 200u) << printable(r.body);
    EXPECT_EQ(r.header("X-Request-Line"), "GET /two HTTP/1.1");
    const auto got = app.requests();
    ASSERT_EQ(got.size(), 3u) << printable(app.received());
    EXPECT_EQ(got[2].connection, 1u);
    EXPECT_EQ(got[2].line(), "GET /two HTTP/1.1");
    EXPECT_EQ(client.connections_made(), 1u);
}

INSTANTIATE_TEST_SUITE_P(spec4, stale_pooled, ::testing::Values(then::close, then::reset),
                         [](const ::testing::TestParamInfo<then>& info) {
                             return info.param == then::close ? "fin" : "rst";
                         });

// Bounded: the stale pooled connection gets one free retry on a fresh
// connection (it says nothing about the endpoint, README "Spec readings"),
// then `retries: 1` allows one more; when every one fails -> 502 after
// exactly three attempts.
TEST_F(upstream_fault, stale_pooled_connection_retry_is_free_and_bounded) {
    scripted_upstream app([](const upstream_request& r) {
        if ((r.connection == 0 && r.index == 1) || r.connection == 1 || r.connection == 2) {
            return reply{"", then::close};
        }
        return echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    http_client client(port());
    ASSERT_EQ(client.request("GET", "/one").status, 200u);
    auto r = client.request("GET", "/two");
    EXPECT_EQ(r.status, 502u) << printable(r.body);
    int attempts = 0;
    for (const auto& q : app.requests()) {
        attempts += q.line() == "GET /two HTTP/1.1" ? 1 : 0;
    }
    EXPECT_EQ(attempts, 3) << printable(app.received());
    if (!client.connected()) {
        client.close();
    }
    EXPECT_EQ(client.request("GET", "/three").header("X-Request-Line"), "GET /three HTTP/1.1");
}

// SPEC §2: after the request was sent, only idempotent requests are retried.
TEST_F(upstream_fault, stale_pooled_connection_is_not_retried_for_a_post) {
    scripted_upstream app([](const upstream_request& r) {
        return r.connection == 0 && r.index == 1 ? reply{"", then::close} : echo_line(r);
    });
    ASSERT_TRUE(start(single_pool(app.address()), fault_options));
    http_client client(port());
    ASSERT_EQ(client.request("GET", "/one").status, 200u);
    auto r = client.request("POST", "/post", {}, "payload");
    EXPECT_EQ(r.status, 502u) << printable(r.body);
    int attempts = 0;
    for (const auto& q : app.requests()) {
        attempts += q.line() == "POST /post HTTP/1.1" ? 1 : 0;
    }
    EXPECT_EQ(attempts, 1) << printable(app.received());
}

}  // namespace
}  // namespace switchyard::test
