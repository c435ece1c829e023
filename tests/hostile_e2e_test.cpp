// Hostile request input through the real switchyard binary (SPEC §4, "Bad
// input gets a clear status and the connection closed"): request smuggling
// framings, bad chunks, bad header syntax, limits, early responses, Expect
// and pipelining. Each case sends raw bytes on a fresh connection, checks
// the status, that the proxy then closes the connection, what a scripted
// upstream received (nothing, or no complete request for faults found
// mid-body), and that a normal request on a new connection still gets 200.
//
// The table cases share one proxy (started on first use, SIGTERM-ed at the
// end) to keep the run short; a case that kills the proxy fails, and the
// next case starts a new one.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_http.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;
using namespace std::string_literals;

// The limits of the shared proxy (SPEC §2 `limits`).
const std::string small_limits =
    "limits:\n"
    "  max_request_line_bytes: 1KiB\n"
    "  max_request_header_bytes: 8KiB\n"
    "  max_headers: 20\n"
    "  max_request_body_bytes: 1MiB\n"
    "  header_timeout: 2s\n"
    "  body_timeout: 2s\n"
    "upstream_defaults:\n"
    "  response_timeout: 3s\n";

std::string single_pool(const std::string& endpoint) {
    return service_yaml("app", "main", pool_yaml("main", {endpoint}, 100));
}

// A switchyard process outliving single tests: started on demand, restarted
// when a case killed it.
class shared_proxy {
  public:
    shared_proxy(std::string top_level, std::string services)
        : top_level_(std::move(top_level)), services_(std::move(services)) {}

    // Starts the proxy unless it runs. A proxy that died since the last
    // call is reported as a failure (with its stderr) and started again.
    testing::AssertionResult ensure_running() {
        if (proc_ && proc_->running()) {
            return testing::AssertionSuccess();
        }
        if (proc_) {
            const int code = proc_->wait(0ms);
            std::string err = proc_->errors();
            proc_.reset();
            if (err.size() > 8192) {
                err = "[...]" + err.substr(err.size() - 8192);
            }
            auto failure = testing::AssertionFailure()
                           << "switchyard died (exit code " << code << "); stderr:\n"
                           << err;
            start();
            return failure;
        }
        return start();
    }

    bool running() { return proc_ && proc_->running(); }
    std::uint16_t port() const { return port_; }
    std::string errors() const { return proc_ ? proc_->errors() : std::string(); }

    // SIGTERM and the exit code; 0 when never started.
    int stop() {
        if (!proc_) {
            return 0;
        }
        proc_->signal(SIGTERM);
        const int code = proc_->wait(30s);
        proc_.reset();
        return code;
    }

  private:
    // free_port() can lose its port to a test running in parallel before
    // switchyard binds it: "port in use" is retried on fresh ports.
    testing::AssertionResult start() {
        testing::AssertionResult result = testing::AssertionSuccess();
        for (int attempt = 0; attempt < 5; ++attempt) {
            result = start_once();
            if (result || !proc_ || proc_->running() ||
                proc_->errors().find("port in use") == std::string::npos) {
                return result;
            }
            proc_->wait(5s);
            proc_.reset();
        }
        return result;
    }

    testing::AssertionResult start_once() {
        port_ = free_port();
        do {
            admin_port_ = free_port();
        } while (admin_port_ == port_);
        const std::string config =
            "listeners:\n  - name: public\n    address: 127.0.0.1:" + std::to_string(port_) +
            "\nadmin:\n  address: 127.0.0.1:" + std::to_string(admin_port_) +
            "\ndrain_timeout: 5s\n" + top_level_ + "services:\n" + services_;
        const std::string path = dir_.write("switchyard.yaml", config);
        proc_.emplace(process::switchyard(
            {"run", "--config", path, "--workers", "2", "--log-level", "warn"}));
        auto ready = wait_until(
            [&] {
                if (!proc_->running()) {
                    return true;
                }
                if (!wait_for_port(port_, 0ms)) {
                    return false;
                }
                try {
                    return http_get(admin_port_, "/readyz").status == 200;
                } catch (const std::exception&) {
                    return false;
                }
            },
            30s, "switchyard to get ready");
        if (!ready || !proc_->running()) {
            return testing::AssertionFailure() << "switchyard did not start; config:\n"
                                               << config << "stderr:\n"
                                               << proc_->errors();
        }
        return testing::AssertionSuccess();
    }

    std::string top_level_;
    std::string services_;
    temp_dir dir_;
    std::uint16_t port_ = 0;
    std::uint16_t admin_port_ = 0;
    std::optional<process> proc_;
};

// The upstream and proxy every test of this file shares; SIGTERM-ed (exit 0
// expected) when the program ends.
struct shared_world {
    scripted_upstream app;
    shared_proxy proxy{small_limits, single_pool(app.address())};
};

shared_world* world_ = nullptr;

class world_environment : public ::testing::Environment {
  public:
    void TearDown() override {
        if (world_ != nullptr) {
            EXPECT_EQ(world_->proxy.stop(), 0) << "switchyard did not exit 0 on SIGTERM";
            delete world_;
            world_ = nullptr;
        }
    }
};
[[maybe_unused]] auto* const environment =
    ::testing::AddGlobalTestEnvironment(new world_environment);

// What an upstream may have seen of a rejected request.
enum class upstream_may_see {
    nothing,              // found before anything was forwarded
    no_complete_request,  // found mid-body: a partial request, its connection closed
};

// The proxy's answer to one raw request on a fresh connection.
struct exchange {
    std::optional<http_response> response;
    std::string error;  // unparsable response, or a send that stalled
    std::string rest;   // bytes after the response, until close or the deadline
    bool closed = false;

    std::string describe() const {
        std::string out;
        if (response) {
            out += "status " + std::to_string(response->status) + ", body " +
                   printable(response->body, 200);
        } else {
            out += "no complete response";
        }
        if (!error.empty()) {
            out += " (" + error + ")";
        }
        out += closed ? "; connection closed" : "; connection still open";
        out += "; after it: " + printable(rest, 300);
        return out;
    }
};

// `rejected`: the proxy is expected to close, so wait for that; otherwise
// only the bytes already there after the response are taken.
exchange send_raw(std::uint16_t port, const std::string& bytes, bool rejected = true,
                  std::chrono::milliseconds deadline = 5s) {
    exchange ex;
    raw_connection conn(port);
    try {
        conn.send(bytes, deadline);  // false: the proxy closed first, which is allowed
    } catch (const std::exception& e) {
        ex.error = e.what();
    }
    try {
        ex.response = conn.read_response(deadline);
    } catch (const std::exception& e) {
        ex.error = e.what();
    }
    ex.rest = rejected ? conn.read_until_close(deadline) : conn.read_some(0ms);
    ex.closed = conn.closed();
    return ex;
}

class hostile_base : public ::testing::Test {
  protected:
    void SetUp() override {
        if (world_ == nullptr) {
            world_ = new shared_world;
        }
        ASSERT_TRUE(world_->proxy.ensure_running());
        world_->app.set_script(
            [](const scripted_upstream::request&) { return scripted_upstream::ok(); });
        world_->app.clear();
    }

    void TearDown() override {
        // A proxy killed by this test is reported here, not by the next one.
        if (world_ != nullptr && !world_->proxy.running()) {
            EXPECT_TRUE(world_->proxy.ensure_running()) << "(killed by this test)";
            return;
        }
        if (HasFailure() && world_ != nullptr && world_->proxy.running()) {
            std::string err = world_->proxy.errors();
            if (err.size() > 4096) {
                err = "[...]" + err.substr(err.size() - 4096);
            }
            std::cerr << "--- switchyard stderr (shared, whole run so far) ---\n"
                      << err << "--- end ---\n";
        }
    }

    std::uint16_t port() const { return world_->proxy.port(); }
    scripted_upstream& app() { return world_->app; }

    // What the upstream recorded, for messages.
    std::string upstream_saw() {
        return printable(app().received(), 800) + " (" + std::to_string(app().request_count()) +
               " complete requests)";
    }

    // The proxy is alive and a normal GET on a new connection gets 200
    // from the upstream, which then holds exactly that one request since
    // the last clear() (plus `earlier` requests the test expected).
    void expect_still_serving(std::size_t earlier = 0) {
        ASSERT_TRUE(world_->proxy.running()) << "switchyard died; stderr:\n"
                                             << world_->proxy.errors();
        http_response r;
        try {
            r = http_get(port(), "/followup");
        } catch (const std::exception& e) {
            FAIL() << "follow-up GET failed: " << e.what();
        }
        EXPECT_EQ(r.status, 200u) << "follow-up GET: " << printable(r.body);
        const auto got = app().requests();
        ASSERT_EQ(got.size(), earlier + 1) << "upstream saw: " << upstream_saw();
        EXPECT_EQ(got.back().line(), "GET /followup HTTP/1.1");
        EXPECT_FALSE(icontains(app().received(), "smuggled")) << "upstream saw: " << upstream_saw();
    }
};

// ---------------------------------------------------------------------------
// The table

struct hostile_case {
    std::string name;
    std::string request;
    std::set<unsigned> statuses;
    upstream_may_see upstream = upstream_may_see::nothing;
};

void PrintTo(const hostile_case& c, std::ostream* os) {
    *os << c.name << ": " << printable(c.request, 300);
}

const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
const std::string chunked_hello = "5\r\nhello\r\n0\r\n\r\n";

std::string post(const std::string& fields, const std::string& body = {}) {
    return "POST /hostile HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n" + body;
}
std::string post_chunked(const std::string& body) {
    return post("Transfer-Encoding: chunked\r\n", body);
}
std::string get_with(const std::string& fields) {
    return "GET /hostile HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n";
}

std::vector<hostile_case> hostile_cases() {
    const std::set<unsigned> bad = {400};
    const std::set<unsigned> bad_te = {400, 501};
    const auto mid = upstream_may_see::no_complete_request;
    std::string pads;
    for (int i = 0; i < 10; ++i) {
        pads += "X-Pad-" + std::to_string(i) + ": " + std::string(1000, 'p') + "\r\n";
    }
    std::string many;
    for (int i = 0; i < 25; ++i) {
        many += "X-Many-" + std::to_string(i) + ": m\r\n";
    }
    return {
        // Transfer-Encoding other than exactly "chunked"
        {"te_gzip", post("Transfer-Encoding: gzip\r\n", chunked_hello), bad_te},
        {"te_chunked_gzip", post("Transfer-Encoding: chunked, gzip\r\n", chunked_hello), bad_te},
        {"te_gzip_chunked", post("Transfer-Encoding: gzip, chunked\r\n", chunked_hello), bad_te},
        {"te_xchunked", post("Transfer-Encoding: xchunked\r\n", chunked_hello), bad_te},
        {"te_chunked_chunked", post("Transfer-Encoding: chunked, chunked\r\n", chunked_hello),
         bad_te},
        {"te_two_fields_chunked",
         post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked_hello),
         bad_te},
        {"te_two_fields_gzip_chunked",
         post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", chunked_hello), bad_te},
        {"te_identity", post("Transfer-Encoding: identity\r\n", chunked_hello), bad_te},
        {"te_empty", post("Transfer-Encoding: \r\n", chunked_hello), bad_te},
        {"te_gzip_body_is_a_request", post("Transfer-Encoding: gzip\r\n", smuggled), bad_te},
        {"te_xchunked_body_is_a_request", post("Transfer-Encoding: xchunked\r\n", smuggled),
         bad_te},
        {"te_chunked_gzip_body_is_a_request",
         post("Transfer-Encoding: chunked, gzip\r\n", smuggled), bad_te},
        // Both framings
        {"te_gzip_and_content_length",
         post("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", "hello"), bad},
        {"content_length_and_chunked",
         post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + smuggled), bad},
        {"chunked_and_content_length",
         post("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", "0\r\n\r\n" + smuggled), bad},
        {"te_on_http10",
         "POST /hostile HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked_hello,
         bad},
        // Chunks
        {"chunk_extension_over_4k",
         post_chunked("5;ext=" + std::string(5000, 'x') + "\r\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_extension_bare_lf_in_quoted_string",
         post_chunked("5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_size_line_ends_in_bare_lf", post_chunked("5;a=b\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_size_not_hex", post_chunked("zz\r\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_size_negative", post_chunked("-5\r\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_size_overflow", post_chunked("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_size_empty", post_chunked("\r\nhello\r\n0\r\n\r\n"), bad},
        {"chunk_data_overrun", post_chunked("5\r\nhello123\r\n0\r\n\r\n"), bad, mid},
        {"bad_later_chunk", post_chunked("5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n"), bad, mid},
        // Host and target
        {"missing_host_http11", "GET /hostile HTTP/1.1\r\n\r\n", bad},
        {"missing_host_then_pipelined", "GET /hostile HTTP/1.1\r\n\r\n" + smuggled, bad},
        {"duplicate_host", "GET /hostile HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", bad},
        {"duplicate_identical_host", "GET /hostile HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", bad},
        {"hash_in_target", "GET /hostile#frag HTTP/1.1\r\nHost: a\r\n\r\n", bad},
        // Found by the fuzzer: the asterisk form is for OPTIONS only.
        {"asterisk_target_with_get", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", bad},
        {"garbage_request_line", "GARBAGE\r\n\r\n", bad},
        // Header syntax
        {"nul_in_value", get_with("X-A: a\0b\r\n"s), bad},
        {"bare_cr_in_value", get_with("X-A: a\rb\r\n"), bad},
        {"ctl_in_value", get_with("X-A: a\x01z\r\n"), bad},
        {"del_in_value", get_with("X-A: a\x7fz\r\n"), bad},
        {"space_before_colon_host", "GET /hostile HTTP/1.1\r\nHost : a\r\n\r\n", bad},
        {"space_before_colon", get_with("X-A : b\r\n"), bad},
        {"tab_before_colon", get_with("X-A\t: b\r\n"), bad},
        {"obs_fold_space", get_with("X-A: a\r\n b\r\n"), bad},
        {"obs_fold_tab", get_with("X-A: a\r\n\tb\r\n"), bad},
        {"obs_fold_after_request_line", "GET /hostile HTTP/1.1\r\n X-A: a\r\nHost: a\r\n\r\n", bad},
        {"invalid_field_name", get_with("Fo(o: x\r\n"), bad},
        {"empty_field_name", get_with(": x\r\n"), bad},
        // Content-Length
        {"content_length_differing_duplicates",
         post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), bad},
        {"content_length_differing_list", post("Content-Length: 5, 6\r\n", "hello!"), bad},
        {"content_length_abc", post("Content-Length: abc\r\n", "hello"), bad},
        {"content_length_minus_one", post("Content-Length: -1\r\n", "hello"), bad},
        {"content_length_two_numbers", post("Content-Length: 1 2\r\n", "hello"), bad},
        {"content_length_plus_sign", post("Content-Length: +5\r\n", "hello"), bad},
        {"content_length_empty", post("Content-Length: \r\n", "hello"), bad},
        // Methods
        {"trace", "TRACE /hostile HTTP/1.1\r\nHost: a\r\n\r\n", {405}},
        {"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", {405}},
        {"trace_then_pipelined", "TRACE /hostile HTTP/1.1\r\nHost: a\r\n\r\n" + smuggled, {405}},
        // Limits
        {"request_line_over_limit",
         "GET /" + std::string(2000, 'l') + " HTTP/1.1\r\nHost: a\r\n\r\n",
         {414}},
        {"header_block_over_limit", get_with(pads), {431}},
        {"too_many_headers", get_with(many), {431}},
        {"content_length_over_limit_header_only", post("Content-Length: 2000000\r\n"), {413}},
        {"content_length_over_limit_then_pipelined",
         post("Content-Length: 2000000\r\n", smuggled),
         {413}},
    };
}

class hostile_table : public hostile_base, public ::testing::WithParamInterface<hostile_case> {};

TEST_P(hostile_table, is_rejected_and_the_connection_closed) {
    const hostile_case& c = GetParam();
    const exchange ex = send_raw(port(), c.request);
    ASSERT_TRUE(ex.response.has_value()) << ex.describe() << "\nupstream saw: " << upstream_saw();
    EXPECT_TRUE(c.statuses.contains(ex.response->status)) << ex.describe();
    EXPECT_TRUE(ex.closed) << ex.describe();
    EXPECT_EQ(ex.rest, "") << "bytes after the error response: " << ex.describe();
    if (c.upstream == upstream_may_see::nothing) {
        EXPECT_EQ(app().received(), "") << "upstream saw: " << upstream_saw();
    } else {
        EXPECT_EQ(app().request_count(), 0u) << "upstream saw: " << upstream_saw();
        EXPECT_TRUE(wait_until([&] { return app().open_with_partial_request() == 0; }, 5s,
                               "the partial upstream request's connection to be closed"))
            << "upstream saw: " << upstream_saw();
    }
    app().clear();
    expect_still_serving();
}

INSTANTIATE_TEST_SUITE_P(spec4, hostile_table, ::testing::ValuesIn(hostile_cases()),
                         [](const ::testing::TestParamInfo<hostile_case>& info) {
                             return info.param.name;
                         });

// ---------------------------------------------------------------------------
// Requests that are proxied, with something removed

class hostile : public hostile_base {};

TEST_F(hostile, http10_without_host_is_proxied) {
    const exchange ex = send_raw(port(), "GET /ten HTTP/1.0\r\n\r\n", false);
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    EXPECT_EQ(ex.response->status, 200u) << ex.describe();
    ASSERT_EQ(app().request_count(), 1u) << upstream_saw();
    EXPECT_EQ(app().requests()[0].line().rfind("GET /ten HTTP/1.", 0), 0u) << upstream_saw();
}

// A Content-Length with leading zeros is valid; the upstream gets the plain
// decimal (found by the fuzzer: 119 zeros went through as they came).
TEST_F(hostile, content_length_with_leading_zeros_is_forwarded_as_plain_decimal) {
    const exchange ex = send_raw(port(),
                                 "POST /zeros HTTP/1.1\r\nHost: a\r\nContent-Length: " +
                                     std::string(119, '0') + "5\r\n\r\nhello",
                                 false);
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    EXPECT_EQ(ex.response->status, 200u) << ex.describe();
    const auto got = app().requests();
    ASSERT_EQ(got.size(), 1u) << upstream_saw();
    const std::string& bytes = got[0].bytes;
    EXPECT_TRUE(icontains(bytes, "\r\nContent-Length: 5\r\n")) << printable(bytes);
    EXPECT_FALSE(icontains(bytes, "Content-Length: 0")) << printable(bytes);
    EXPECT_EQ(bytes.substr(bytes.find("\r\n\r\n") + 4), "hello") << printable(bytes);
}

// SPEC §4: request trailers are dropped, never forwarded and never merged.
class hostile_trailer : public hostile_base, public ::testing::WithParamInterface<const char*> {};

TEST_P(hostile_trailer, is_dropped_from_a_forwarded_chunked_request) {
    const std::string field = GetParam();
    const exchange ex = send_raw(port(),
                                 "POST /trailer HTTP/1.1\r\nHost: a\r\n"
                                 "Transfer-Encoding: chunked\r\n\r\n"
                                 "5\r\nhello\r\n6\r\n world\r\n0\r\n" +
                                     field + "\r\n\r\n",
                                 false);
    ASSERT_TRUE(ex.response.has_value()) << ex.describe() << "\nupstream saw: " << upstream_saw();
    EXPECT_EQ(ex.response->status, 200u) << ex.describe();
    const auto got = app().requests();
    ASSERT_EQ(got.size(), 1u) << upstream_saw();
    const std::string& bytes = got[0].bytes;
    const std::string name = field.substr(0, field.find(':'));
    const std::string value = field.substr(field.find(':') + 2);
    // Anywhere: in the header (merged) or after the body (forwarded).
    EXPECT_FALSE(icontains(bytes, field))
        << "the trailer reached the upstream: " << printable(bytes);
    if (name != "Host") {
        EXPECT_FALSE(icontains(bytes, name + ":")) << printable(bytes);
    }
    EXPECT_FALSE(icontains(bytes, value)) << printable(bytes);
    // The body arrived whole.
    const std::string body = bytes.substr(bytes.find("\r\n\r\n") + 4);
    EXPECT_TRUE(body.find("hello") != std::string::npos && body.find(" world") != std::string::npos)
        << printable(bytes);
}

INSTANTIATE_TEST_SUITE_P(spec4, hostile_trailer,
                         ::testing::Values("Host: evil.example", "X-Trailer: trailer-value"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                             return std::string(info.param).starts_with("Host") ? "host"
                                                                                : "x_trailer";
                         });

TEST_F(hostile, underscore_header_is_dropped_by_default) {
    const exchange ex = send_raw(port(), get_with("X_Evil: 1\r\nX-Fine: 2\r\n"), false);
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    EXPECT_EQ(ex.response->status, 200u) << ex.describe();
    const auto got = app().requests();
    ASSERT_EQ(got.size(), 1u) << upstream_saw();
    EXPECT_FALSE(icontains(got[0].bytes, "X_Evil")) << printable(got[0].bytes);
    EXPECT_TRUE(icontains(got[0].bytes, "X-Fine: 2")) << printable(got[0].bytes);
}

// Not a SPEC case: recorded so the behaviour is known (either answer is fine,
// but a forwarded request must carry one Content-Length).
TEST_F(hostile, identical_duplicate_content_length_is_rejected_or_forwarded_once) {
    const exchange ex =
        send_raw(port(), post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), false);
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    std::cout << "[note] identical duplicate Content-Length: " << ex.describe() << "\n";
    if (ex.response->status == 200) {
        const auto got = app().requests();
        ASSERT_EQ(got.size(), 1u) << upstream_saw();
        const std::string head = got[0].head();
        EXPECT_EQ(head.find("Content-Length"), head.rfind("Content-Length")) << printable(head);
    } else {
        EXPECT_EQ(ex.response->status, 400u) << ex.describe();
        EXPECT_EQ(app().received(), "") << upstream_saw();
    }
    app().clear();
    expect_still_serving();
}

// ---------------------------------------------------------------------------
// Bodies over the limit, Expect, pipelining

TEST_F(hostile, chunked_body_growing_past_the_limit_is_413_and_never_completed_upstream) {
    raw_connection conn(port());
    ASSERT_TRUE(conn.send("POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"));
    const std::string chunk = "10000\r\n" + std::string(0x10000, 'b') + "\r\n";
    std::string error;
    bool refused = false;
    try {
        for (int i = 0; i < 32 && !refused; ++i) {  // 2 MiB against a 1 MiB limit
            refused = !conn.send(chunk, 5s);
        }
        if (!refused) {
            conn.send("0\r\n\r\n", 5s);
        }
    } catch (const std::exception& e) {
        error = e.what();  // the proxy stopped reading: fine if it answers
    }
    std::optional<http_response> r;
    try {
        r = conn.read_response(5s);
    } catch (const std::exception& e) {
        error += e.what();
    }
    const std::string rest = conn.read_until_close(5s);
    if (r) {
        EXPECT_EQ(r->status, 413u) << printable(r->body) << " " << error;
    }
    EXPECT_TRUE(conn.closed()) << "status " << (r ? r->status : 0) << "; " << printable(rest);
    EXPECT_EQ(app().request_count(), 0u) << "a complete request reached the upstream";
    EXPECT_TRUE(wait_until([&] { return app().open_with_partial_request() == 0; }, 5s,
                           "the upstream request to be aborted"))
        << printable(app().received(), 300);
    app().clear();
    expect_still_serving();
}

TEST_F(hostile, expect_100_continue_then_body_then_a_pipelined_request) {
    raw_connection conn(port());
    ASSERT_TRUE(conn.send(
        "POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
    auto interim = conn.read_response(5s);
    ASSERT_TRUE(interim.has_value()) << "no 100 Continue; got " << printable(conn.read_some(0ms));
    EXPECT_EQ(interim->status, 100u);
    ASSERT_TRUE(
        conn.send("hello"
                  "GET /second HTTP/1.1\r\nHost: a\r\n\r\n"));
    auto first = conn.read_response(5s);
    ASSERT_TRUE(first.has_value()) << printable(conn.read_until_close(1s));
    EXPECT_EQ(first->status, 200u) << printable(first->body);
    auto second = conn.read_response(5s);
    ASSERT_TRUE(second.has_value())
        << "the pipelined request got no answer: " << printable(conn.read_until_close(1s));
    EXPECT_EQ(second->status, 200u) << printable(second->body);

    const auto got = app().requests();
    ASSERT_EQ(got.size(), 2u) << upstream_saw();
    EXPECT_EQ(got[0].line(), "POST /expect HTTP/1.1");
    EXPECT_EQ(got[0].bytes.substr(got[0].bytes.find("\r\n\r\n") + 4), "hello");
    EXPECT_EQ(got[1].line(), "GET /second HTTP/1.1");
    EXPECT_FALSE(icontains(got[0].head(), "100-continue"))
        << "note: Expect forwarded to the upstream: " << printable(got[0].head());
}

TEST_F(hostile, expect_100_continue_over_the_body_limit_gets_413_and_no_100) {
    const exchange ex = send_raw(port(),
                                 "POST /expect HTTP/1.1\r\nHost: a\r\n"
                                 "Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n");
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    EXPECT_EQ(ex.response->status, 413u) << ex.describe();
    EXPECT_TRUE(ex.closed) << ex.describe();
    EXPECT_EQ(app().received(), "") << upstream_saw();
    app().clear();
    expect_still_serving();
}

TEST_F(hostile, pipelined_valid_request_then_smuggling_attempt) {
    const exchange ex = [&] {
        exchange out;
        raw_connection conn(port());
        conn.send("GET /first HTTP/1.1\r\nHost: a\r\n\r\n" +
                  post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n") +
                  smuggled);
        try {
            out.response = conn.read_response(5s);
            auto second = conn.read_response(5s);
            out.rest = second ? "second status " + std::to_string(second->status) + " " +
                                    printable(second->body, 100)
                              : "no second response";
        } catch (const std::exception& e) {
            out.error = e.what();
        }
        out.rest += " | then: " + printable(conn.read_until_close(5s));
        out.closed = conn.closed();
        return out;
    }();
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    EXPECT_EQ(ex.response->status, 200u) << ex.describe();
    EXPECT_EQ(ex.rest.rfind("second status 400 ", 0), 0u) << ex.describe();
    EXPECT_TRUE(ex.closed) << ex.describe();
    const auto got = app().requests();
    ASSERT_EQ(got.size(), 1u) << upstream_saw();
    EXPECT_EQ(got[0].line(), "GET /first HTTP/1.1");
    EXPECT_EQ(app().received(), got[0].bytes) << upstream_saw();
    expect_still_serving(1);
}

// ---------------------------------------------------------------------------
// Own configurations

class hostile_config : public proxy_fixture {};

// Beast's basic_fields stores a field's name and value lengths in 16 bits and
// throws std::length_error past 65,535: the proxy must answer, not crash.
TEST_F(hostile_config, a_header_field_over_64_kib_is_answered_and_the_proxy_lives) {
    scripted_upstream app;
    // One worker: a worker that died cannot hide behind the other.
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.workers = 1,
                       .top_level = "limits:\n  max_request_header_bytes: 1MiB\n"
                                    "  max_request_line_bytes: 1MiB\n"
                                    "  header_timeout: 2s\n"}));
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"value", get_with("X-Big: " + std::string(70000, 'v') + "\r\n")},
        {"name", get_with("X-" + std::string(70000, 'n') + ": 1\r\n")},
        {"target", "GET /" + std::string(70000, 't') + " HTTP/1.1\r\nHost: a\r\n\r\n"},
    };
    for (const auto& [what, request] : cases) {
        SCOPED_TRACE("field " + what + " over 65,535 bytes");
        const exchange ex = send_raw(port(), request, what != "target");
        ASSERT_TRUE(proxy().running()) << "switchyard died: " << ex.describe() << "\nstderr:\n"
                                       << proxy().errors();
        EXPECT_TRUE(ex.response.has_value()) << ex.describe();
        if (ex.response && what == "target") {
            // A long target is not a field: 200 (proxied) or 414 are both sane.
            std::cout << "[note] 70,000-byte target: " << ex.describe() << "\n";
        } else if (ex.response) {
            EXPECT_TRUE(ex.response->status == 431 || ex.response->status == 400) << ex.describe();
            EXPECT_TRUE(ex.closed) << ex.describe();
            EXPECT_EQ(app.received(), "") << printable(app.received());
        }
        try {
            EXPECT_EQ(http_get(port(), "/after").status, 200u);
        } catch (const std::exception& e) {
            ADD_FAILURE() << "the request after it failed: " << e.what();
        }
        app.clear();
    }
}

TEST_F(hostile_config, reject_underscore_headers_answers_400) {
    scripted_upstream app;
    ASSERT_TRUE(start(single_pool(app.address()),
                      {.top_level = "limits:\n  reject_underscore_headers: true\n"}));
    const exchange ex = send_raw(port(), get_with("X_Evil: 1\r\n"));
    ASSERT_TRUE(ex.response.has_value()) << ex.describe();
    EXPECT_EQ(ex.response->status, 400u) << ex.describe();
    EXPECT_TRUE(ex.closed) << ex.describe();
    EXPECT_EQ(app.received(), "") << printable(app.received());
    EXPECT_EQ(http_get(port(), "/after").status, 200u);
}

}  // namespace
}  // namespace switchyard::test
