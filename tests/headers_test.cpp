// proxy::format_header writes a header exactly as Beast's serializer does
// (the data path uses it instead of the serializer for bodiless requests and
// whole small responses), and refuses a header that does not fit.
// proxy::add_forwarding, field by field (the end-to-end view is in
// proxy_test): what it inserts, replaces, joins and keeps.

#include <gtest/gtest.h>

#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "proxy/headers.hpp"

namespace switchyard::proxy {
namespace {

namespace http = boost::beast::http;

template <bool isRequest, class Fields>
std::string beast_wire(const http::message<isRequest, http::empty_body, Fields>& m) {
    std::ostringstream out;
    out << m.base();
    return out.str();
}

template <class Header>
std::string formatted(const Header& h, std::size_t cap = 16 * 1024) {
    std::vector<char> out(cap);
    const std::size_t n = format_header(h, out.data(), out.size());
    return std::string(out.data(), n);
}

TEST(FormatHeader, RequestMatchesBeast) {
    http::request<http::empty_body, header_fields> req{http::verb::get, "/a/b?c=d%20e", 11};
    req.set(http::field::host, "app.example:8080");
    req.insert("X-Forwarded-For", "10.0.0.1");
    req.insert("x-custom", "");
    req.insert(http::field::cookie, "a=1");
    req.insert(http::field::cookie, "b=2");
    const std::string wire = beast_wire(req);
    EXPECT_EQ(formatted(req.base()), wire);
    EXPECT_EQ(wire.rfind("GET /a/b?c=d%20e HTTP/1.1\r\nHost: app.example:8080\r\n", 0), 0u);
}

TEST(FormatHeader, UnknownMethodAndHttp10MatchBeast) {
    http::request<http::empty_body, header_fields> req;
    req.method_string("PURGE");
    req.target("*");
    req.version(10);
    EXPECT_EQ(formatted(req.base()), beast_wire(req));
    EXPECT_EQ(formatted(req.base()), "PURGE * HTTP/1.0\r\n\r\n");
}

TEST(FormatHeader, ResponseReasonsMatchBeast) {
    http::response<http::empty_body, header_fields> ok{http::status::ok, 11};
    ok.set(http::field::content_length, "13");
    ok.set(http::field::server, "upstream");
    EXPECT_EQ(formatted(ok.base()), beast_wire(ok));

    http::response<http::empty_body, header_fields> own{http::status::not_found, 10};
    own.reason("Nothing Here");
    EXPECT_EQ(formatted(own.base()), beast_wire(own));
    EXPECT_EQ(formatted(own.base()), "HTTP/1.0 404 Nothing Here\r\n\r\n");

    http::response<http::empty_body, header_fields> odd;
    odd.version(11);
    odd.result(599);  // no standard reason
    EXPECT_EQ(formatted(odd.base()), beast_wire(odd));
}

TEST(FormatHeader, ReturnsZeroWhenItDoesNotFit) {
    http::request<http::empty_body, header_fields> req{http::verb::get, "/", 11};
    req.set(http::field::host, "h");
    const std::string wire = beast_wire(req);
    EXPECT_EQ(formatted(req.base(), wire.size()), wire);
    EXPECT_EQ(formatted(req.base(), wire.size() - 1), "");
    EXPECT_EQ(formatted(req.base(), 0), "");
}

// Every value of `name`, in order.
std::vector<std::string> values(const request_header& h, std::string_view name) {
    std::vector<std::string> out;
    for (const auto& f : h) {
        if (iequals(f.name_string(), name)) {
            out.emplace_back(f.value());
        }
    }
    return out;
}

TEST(AddForwarding, InsertsAllFourOnARequestWithoutThem) {
    request_header req;
    req.method(http::verb::get);
    req.target("/");
    req.set(http::field::host, "shop.example");
    const std::string id(add_forwarding(req, "10.0.0.7", true, 0x0123456789abcdefULL, 0xfedcba9876543210ULL));
    EXPECT_EQ(values(req, "x-forwarded-for"), std::vector<std::string>{"10.0.0.7"});
    EXPECT_EQ(values(req, "x-forwarded-proto"), std::vector<std::string>{"https"});
    EXPECT_EQ(values(req, "x-forwarded-host"), std::vector<std::string>{"shop.example"});
    EXPECT_EQ(values(req, "x-request-id"), std::vector<std::string>{id});
    EXPECT_EQ(id, "fedcba98765432100123456789abcdef");
    // Found by name afterwards like any parsed field (the fields' index holds them).
    EXPECT_EQ(req["X-Forwarded-Proto"], "https");
    EXPECT_EQ(req["x-request-id"], id);
}

TEST(AddForwarding, ReplacesTheClientsValuesJoinsItsForwardedForAndKeepsItsId) {
    request_header req;
    req.method(http::verb::get);
    req.target("/");
    req.insert("x-forwarded-for", "1.1.1.1");
    req.insert(http::field::host, "a.example");
    req.insert("X-Forwarded-Proto", "https");
    req.insert("X-FORWARDED-PROTO", "gopher");
    req.insert("X-Forwarded-Host", "evil.example");
    req.insert("X-Forwarded-For", "2.2.2.2, 3.3.3.3");
    req.insert("x-request-id", "client-id-1");
    const std::string id(add_forwarding(req, "10.0.0.7", false, 1, 2));
    EXPECT_EQ(values(req, "x-forwarded-for"),
              std::vector<std::string>{"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7"});
    EXPECT_EQ(values(req, "x-forwarded-proto"), std::vector<std::string>{"http"});
    EXPECT_EQ(values(req, "x-forwarded-host"), std::vector<std::string>{"a.example"});
    EXPECT_EQ(id, "client-id-1");
    EXPECT_EQ(values(req, "x-request-id"), std::vector<std::string>{"client-id-1"});
}

TEST(AddForwarding, AnEmptyClientIdIsReplacedAndNoHostMeansNoForwardedHost) {
    request_header req;
    req.method(http::verb::get);
    req.target("/");
    req.version(10);
    req.insert("X-Request-Id", "");
    req.insert("X-Other", "kept");
    const std::string id(add_forwarding(req, "::1", false, 0, 0));
    EXPECT_EQ(id, std::string(32, '0'));
    EXPECT_EQ(values(req, "x-request-id"), std::vector<std::string>{id});
    EXPECT_TRUE(values(req, "x-forwarded-host").empty());
    EXPECT_EQ(values(req, "x-other"), std::vector<std::string>{"kept"});
}

}  // namespace
}  // namespace switchyard::proxy
