#pragma once
// The downstream request parser: Beast's basic_parser with our own callbacks
// instead of http::parser's, because http::parser (Boost 1.81)
//  - merges trailer fields into the header (a trailer "Host: evil" would
//    become a second Host after the request was routed),
//  - inserts any field into basic_fields, which throws std::length_error for
//    a value over 65,535 bytes, and
//  - accepts any number of fields.
// Here the header's fields are counted and bounded as they arrive, trailers
// are dropped (only their size is counted against the header limit, SPEC §2),
// and chunk extensions are checked (SPEC §4: over 4 KiB or with a bare LF is
// a 400). The body is read straight into the caller's buffer, as
// buffer_body's reader does.
//
// Thread: the owning session's. Failure: the parse fails with a Beast error
// code and fault() says which SPEC §4 rule broke.

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "proxy/field_allocator.hpp"

namespace switchyard::proxy {

namespace http = boost::beast::http;

class request_parser final : public http::basic_parser<true> {
public:
    enum class fault {
        none,
        too_many_fields,  // over max_headers -> 431
        field_too_large,  // one field over what a header can hold -> 431
        trailer_too_large,  // trailer block over the header limit -> 431
        bad_chunk_extension,  // over 4 KiB or a bare LF -> 400
    };

    static constexpr std::size_t max_chunk_extension = 4096;

    request_parser(std::size_t max_fields, std::size_t max_trailer_bytes)
        : max_fields_(max_fields), max_trailer_bytes_(max_trailer_bytes) {}

    http::request<http::buffer_body, header_fields>& get() { return m_; }
    const http::request<http::buffer_body, header_fields>& get() const { return m_; }
    fault why() const { return fault_; }
    bool saw_trailers() const { return trailer_bytes_ != 0; }

private:
    void on_request_impl(http::verb method, boost::beast::string_view method_str,
                         boost::beast::string_view target, int version,
                         boost::beast::error_code& ec) override {
        ec = {};
        m_.target(target);
        if (method != http::verb::unknown) {
            m_.method(method);
        } else {
            m_.method_string(method_str);
        }
        m_.version(static_cast<unsigned>(version));
    }

    void on_response_impl(int, boost::beast::string_view, int, boost::beast::error_code& ec) override {
        ec = http::error::bad_method;  // never a response here
    }

    void on_field_impl(http::field name, boost::beast::string_view name_string,
                       boost::beast::string_view value, boost::beast::error_code& ec) override {
        if (header_done_) {
            // A trailer: dropped (never forwarded, never merged), only counted.
            trailer_bytes_ += name_string.size() + value.size() + 4;
            if (trailer_bytes_ > max_trailer_bytes_) {
                fail(fault::trailer_too_large, http::error::header_limit, ec);
            }
            return;
        }
        if (++fields_ > max_fields_) {
            fail(fault::too_many_fields, http::error::header_limit, ec);
            return;
        }
        // basic_fields stores sizes in 16 bits and throws beyond them.
        constexpr std::size_t field_max = std::numeric_limits<std::uint16_t>::max() - 2;
        if (name_string.size() > field_max || value.size() > field_max) {
            fail(fault::field_too_large, http::error::header_limit, ec);
            return;
        }
        m_.insert(name, name_string, value);
    }

    void on_header_impl(boost::beast::error_code& ec) override {
        ec = {};
        header_done_ = true;
    }

    void on_body_init_impl(const boost::optional<std::uint64_t>&,
                           boost::beast::error_code& ec) override {
        ec = {};
    }

    std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code& ec) override {
        return put_body(body, ec);
    }

    void on_chunk_header_impl(std::uint64_t, boost::beast::string_view extensions,
                              boost::beast::error_code& ec) override {
        if (extensions.size() > max_chunk_extension ||
            extensions.find('\n') != boost::beast::string_view::npos) {
            fail(fault::bad_chunk_extension, http::error::bad_chunk_extension, ec);
            return;
        }
        ec = {};
    }

    std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                   boost::beast::error_code& ec) override {
        return put_body(body, ec);
    }

    void on_finish_impl(boost::beast::error_code& ec) override { ec = {}; }

    // As buffer_body::reader::put: copy into the caller's buffer, need_buffer
    // when it is full.
    std::size_t put_body(boost::beast::string_view body, boost::beast::error_code& ec) {
        auto& b = m_.body();
        if (b.data == nullptr) {
            ec = http::error::need_buffer;
            return 0;
        }
        const std::size_t n = std::min(body.size(), b.size);
        std::memcpy(b.data, body.data(), n);
        b.data = static_cast<char*>(b.data) + n;
        b.size -= n;
        if (n == body.size()) {
            ec = {};
        } else {
            ec = http::error::need_buffer;
        }
        return n;
    }

    void fail(fault f, http::error e, boost::beast::error_code& ec) {
        fault_ = f;
        ec = e;
    }

    http::request<http::buffer_body, header_fields> m_;
    std::size_t max_fields_;
    std::size_t max_trailer_bytes_;
    std::size_t fields_ = 0;
    std::size_t trailer_bytes_ = 0;
    bool header_done_ = false;
    fault fault_ = fault::none;
};

}  // namespace switchyard::proxy
