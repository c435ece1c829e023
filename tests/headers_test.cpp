// proxy::format_header writes a header exactly as Beast's serializer does
// (the data path uses it instead of the serializer for bodiless requests and
// whole small responses), and refuses a header that does not fit.

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

template <bool isRequest>
std::string beast_wire(const http::message<isRequest, http::empty_body>& m) {
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
    http::request<http::empty_body> req{http::verb::get, "/a/b?c=d%20e", 11};
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
    http::request<http::empty_body> req;
    req.method_string("PURGE");
    req.target("*");
    req.version(10);
    EXPECT_EQ(formatted(req.base()), beast_wire(req));
    EXPECT_EQ(formatted(req.base()), "PURGE * HTTP/1.0\r\n\r\n");
}

TEST(FormatHeader, ResponseReasonsMatchBeast) {
    http::response<http::empty_body> ok{http::status::ok, 11};
    ok.set(http::field::content_length, "13");
    ok.set(http::field::server, "upstream");
    EXPECT_EQ(formatted(ok.base()), beast_wire(ok));

    http::response<http::empty_body> own{http::status::not_found, 10};
    own.reason("Nothing Here");
    EXPECT_EQ(formatted(own.base()), beast_wire(own));
    EXPECT_EQ(formatted(own.base()), "HTTP/1.0 404 Nothing Here\r\n\r\n");

    http::response<http::empty_body> odd;
    odd.version(11);
    odd.result(599);  // no standard reason
    EXPECT_EQ(formatted(odd.base()), beast_wire(odd));
}

TEST(FormatHeader, ReturnsZeroWhenItDoesNotFit) {
    http::request<http::empty_body> req{http::verb::get, "/", 11};
    req.set(http::field::host, "h");
    const std::string wire = beast_wire(req);
    EXPECT_EQ(formatted(req.base(), wire.size()), wire);
    EXPECT_EQ(formatted(req.base(), wire.size() - 1), "");
    EXPECT_EQ(formatted(req.base(), 0), "");
}

}  // namespace
}  // namespace switchyard::proxy
