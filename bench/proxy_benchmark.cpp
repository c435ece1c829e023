// Per-request costs of the proxying path outside the sockets (STYLE rule 12):
// the header rules of SPEC §4 on a typical browser request, and a whole
// parse -> validate -> rewrite -> serialise pass in memory, as
// proxy/session.cpp does it for every request and every response.
//
// allocs_per_op counts every call of the global operator new. basic_fields
// allocates one element per field (name and value inline) and one for the
// method/target or reason string; the data path's fields use
// proxy::field_allocator, whose per-thread free lists recycle those blocks, so
// after the first messages a header costs no allocation (what the cache does
// not hold, over 512 bytes or beyond its bound per size, still counts).

#include <benchmark/benchmark.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/alloc_counter.hpp"
#include "config/config.hpp"
#include "proxy/field_allocator.hpp"
#include "proxy/headers.hpp"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using switchyard::proxy::add_forwarding;
using switchyard::proxy::header_fields;
using switchyard::proxy::request_header;
using field_alloc = switchyard::proxy::field_allocator<char>;
using switchyard::proxy::request_error;
using switchyard::proxy::strip_hop_by_hop;
using switchyard::proxy::validate_request;

// A Chrome navigation as a browser sends it: 13 fields, ~700 bytes.
constexpr std::string_view browser_get =
    "GET /api/v2/users/42?expand=orders HTTP/1.1\r\n"
    "Host: app.example.com\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: max-age=0\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8\r\n"
    "Sec-Fetch-Site: none\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "Sec-Fetch-User: ?1\r\n"
    "Sec-Fetch-Dest: document\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Accept-Language: en-US,en;q=0.9\r\n"
    "Cookie: theme=dark; _ga=GA1.2.1234567890.1700000000; sy_uid=3f2a9c1e77b04d8e; lang=en\r\n"
    "\r\n";

// What a typical upstream answers (the response half of the path).
constexpr std::string_view upstream_response =
    "HTTP/1.1 200 OK\r\n"
    "Server: upstream\r\n"
    "Date: Mon, 02 Nov 2026 10:00:00 GMT\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 27\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: no-store\r\n"
    "Vary: Accept-Encoding\r\n"
    "\r\n"
    "{\"id\":42,\"name\":\"someone\"}\n";

constexpr std::string_view client_ip = "192.168.10.23";

void report_allocs(benchmark::State& state, std::uint64_t allocs) {
    state.counters["allocs_per_op"] =
        benchmark::Counter(static_cast<double>(allocs) / static_cast<double>(state.iterations()));
}

// Parses `text` into a fresh header (setup for the rewrite benchmark).
request_header parse_header(std::string_view text) {
    http::request_parser<http::empty_body, field_alloc> p;
    boost::system::error_code ec;
    p.put(boost::asio::buffer(text.data(), text.size()), ec);
    if (ec || !p.is_header_done()) {
        std::abort();
    }
    return std::move(p.release().base());
}

// Writes a header-only message produced by `sr` into `out` (reused: its
// capacity survives, so after the first pass no allocation is made here).
template <class Serializer>
void serialise_into(Serializer& sr, std::string& out) {
    out.clear();
    boost::system::error_code ec;
    while (!sr.is_done()) {
        sr.next(ec, [&](boost::system::error_code&, const auto& buffers) {
            std::size_t n = 0;
            for (const auto b : beast::buffers_range_ref(buffers)) {
                out.append(static_cast<const char*>(b.data()), b.size());
                n += b.size();
            }
            sr.consume(n);
        });
        if (ec == http::error::need_buffer) {
            break;
        }
        if (ec) {
            std::abort();
        }
    }
}

// validate_request + strip_hop_by_hop + add_forwarding on a parsed 13-field
// request. Each header can be rewritten once only, so a batch of parsed copies
// is prepared with the timer paused; only the rewrite is timed and counted.
// The batch is small, as a worker's churn is: the fields of the batch it
// replaces go back to the field cache and the new batch takes them again, so
// the cache neither overflows nor drains (with 256 live headers it did both,
// and the rewrite's inserts counted allocations the proxy does not make).
constexpr std::size_t rewrite_batch = 4;

void BM_header_rewrite_browser(benchmark::State& state) {
    constexpr std::size_t batch = rewrite_batch;
    const switchyard::config::limits limits;
    std::vector<request_header> headers;
    headers.reserve(batch);
    std::size_t next = batch;
    std::uint64_t allocs = 0;
    std::uint64_t seq = 0;
    for (auto _ : state) {
        if (next == batch) {
            state.PauseTiming();
            headers.clear();
            for (std::size_t i = 0; i < batch; ++i) {
                headers.push_back(parse_header(browser_get));
            }
            next = 0;
            state.ResumeTiming();
        }
        auto& req = headers[next++];
        const std::uint64_t before = switchyard::bench::allocations();
        const auto verdict = validate_request(req, browser_get.size(), limits);
        strip_hop_by_hop(req);
        ++seq;
        auto id = add_forwarding(req, client_ip, false, seq, seq * 31);
        req.version(11);
        allocs += switchyard::bench::allocations() - before;
        benchmark::DoNotOptimize(verdict);
        benchmark::DoNotOptimize(id);
    }
    report_allocs(state, allocs);
}
BENCHMARK(BM_header_rewrite_browser);

// The same with a client that already sends X-Forwarded-For and X-Request-Id
// (a proxy in front of us): the join path of add_forwarding.
void BM_header_rewrite_behind_proxy(benchmark::State& state) {
    constexpr std::size_t batch = rewrite_batch;
    const switchyard::config::limits limits;
    std::string text(browser_get.substr(0, browser_get.size() - 2));
    text += "X-Forwarded-For: 203.0.113.7, 10.1.2.3\r\n";
    text += "X-Request-Id: 5d1c2e7a9b3f4c60a1b2c3d4e5f60718\r\n\r\n";
    std::vector<request_header> headers;
    headers.reserve(batch);
    std::size_t next = batch;
    std::uint64_t allocs = 0;
    for (auto _ : state) {
        if (next == batch) {
            state.PauseTiming();
            headers.clear();
            for (std::size_t i = 0; i < batch; ++i) {
                headers.push_back(parse_header(text));
            }
            next = 0;
            state.ResumeTiming();
        }
        auto& req = headers[next++];
        const std::uint64_t before = switchyard::bench::allocations();
        const auto verdict = validate_request(req, text.size(), limits);
        strip_hop_by_hop(req);
        auto id = add_forwarding(req, client_ip, false, 1, 2);
        allocs += switchyard::bench::allocations() - before;
        benchmark::DoNotOptimize(verdict);
        benchmark::DoNotOptimize(id);
    }
    report_allocs(state, allocs);
}
BENCHMARK(BM_header_rewrite_behind_proxy);

// Parsing alone, with the parser re-emplaced per message as session.cpp does:
// the baseline the two benchmarks below add to.
void BM_parse_browser_get(benchmark::State& state) {
    std::optional<http::request_parser<http::buffer_body, field_alloc>> parser;
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        auto& p = parser.emplace();
        p.header_limit(72 * 1024);
        p.body_limit(boost::none);
        boost::system::error_code ec;
        const auto n = p.put(boost::asio::buffer(browser_get.data(), browser_get.size()), ec);
        benchmark::DoNotOptimize(n);
        if (ec || !p.is_header_done()) {
            state.SkipWithError("parse failed");
            break;
        }
    }
    report_allocs(state, switchyard::bench::allocations() - before);
}
BENCHMARK(BM_parse_browser_get);

// The request half of one proxied request, in memory: bytes as read from the
// client -> request_parser<buffer_body> (re-emplaced) -> validate -> strip
// hop-by-hop -> X-Forwarded-* and X-Request-Id -> request_serializer into a
// reused buffer (what async_write_header would hand to the socket).
void BM_parse_and_forward_browser_get(benchmark::State& state) {
    const switchyard::config::limits limits;
    std::optional<http::request_parser<http::buffer_body, field_alloc>> parser;
    std::string out;
    out.reserve(4096);
    std::uint64_t seq = 0;
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        auto& p = parser.emplace();
        p.header_limit(72 * 1024);
        p.body_limit(boost::none);
        boost::system::error_code ec;
        const auto n = p.put(boost::asio::buffer(browser_get.data(), browser_get.size()), ec);
        if (ec || !p.is_header_done()) {
            state.SkipWithError("parse failed");
            break;
        }
        auto& req = p.get();
        if (validate_request(req, n, limits) != request_error::ok) {
            state.SkipWithError("rejected");
            break;
        }
        req.erase(http::field::expect);
        strip_hop_by_hop(req);
        ++seq;
        add_forwarding(req, client_ip, false, seq, seq ^ 0x9E3779B97F4A7C15ULL);
        req.version(11);
        req.body().data = nullptr;
        req.body().size = 0;
        req.body().more = !p.is_done();
        http::request_serializer<http::buffer_body, header_fields> sr{req};
        serialise_into(sr, out);
        benchmark::DoNotOptimize(out.data());
    }
    report_allocs(state, switchyard::bench::allocations() - before);
    state.counters["bytes_out"] = static_cast<double>(out.size());
}
BENCHMARK(BM_parse_and_forward_browser_get);

// The response half: upstream bytes -> response_parser<buffer_body> (emplaced
// per response, as session.cpp's arm_parser does) -> strip hop-by-hop ->
// response_serializer of the header into a reused buffer, and the small body
// copied through the fixed relay buffer.
void BM_parse_and_forward_response(benchmark::State& state) {
    std::optional<http::response_parser<http::buffer_body, field_alloc>> parser;
    std::string out;
    out.reserve(4096);
    char relay[16 * 1024];
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        auto& p = parser.emplace();
        p.body_limit(boost::none);
        p.header_limit(64 * 1024);
        boost::system::error_code ec;
        const auto* data = upstream_response.data();
        std::size_t left = upstream_response.size();
        const auto n = p.put(boost::asio::buffer(data, left), ec);
        if (ec || !p.is_header_done()) {
            state.SkipWithError("parse failed");
            break;
        }
        data += n;
        left -= n;
        auto& res = p.get();
        strip_hop_by_hop(res);
        res.body().data = nullptr;
        res.body().size = 0;
        res.body().more = !p.is_done();
        http::response_serializer<http::buffer_body, header_fields> sr{res};
        serialise_into(sr, out);
        // Body: the parser writes into the relay buffer.
        res.body().data = relay;
        res.body().size = sizeof relay;
        const auto m = p.put(boost::asio::buffer(data, left), ec);
        benchmark::DoNotOptimize(m);
        benchmark::DoNotOptimize(relay[0]);
        if (ec && ec != http::error::need_buffer) {
            state.SkipWithError("body parse failed");
            break;
        }
        benchmark::DoNotOptimize(out.data());
    }
    report_allocs(state, switchyard::bench::allocations() - before);
}
BENCHMARK(BM_parse_and_forward_response);

}  // namespace
