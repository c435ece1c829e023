#pragma once
// Header rules of SPEC §4: request validation after the header is parsed,
// hop-by-hop removal, X-Forwarded-* and X-Request-Id. Decisions compare
// http::field enums and parse Connection with token_list (STYLE rule 8).

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>

#include <cstdint>
#include <string_view>

#include "config/config.hpp"
#include "proxy/field_allocator.hpp"

namespace switchyard::proxy {

namespace http = boost::beast::http;

// The data path's message headers (fields from field_allocator.hpp).
using request_header = http::request_header<header_fields>;
using response_header = http::response_header<header_fields>;

// What is wrong with a parsed request header, if anything. `ok` = forward it.
enum class request_error {
    ok,
    missing_host,        // HTTP/1.1 without Host -> 400
    repeated_host,       // more than one Host -> 400
    fragment_in_target,  // '#' in the target -> 400
    bad_target,          // not origin-form, absolute-form or "*" -> 400
    bad_field_value,     // NUL, bare CR or LF in a value -> 400
    bad_field_name,      // empty name, or an underscore when rejected -> 400
    te_on_http10,        // Transfer-Encoding on HTTP/1.0 -> 400
    te_and_length,       // both Transfer-Encoding and Content-Length -> 400
    te_not_chunked,      // a Transfer-Encoding other than exactly "chunked" -> 501
    bad_content_length,  // differing or malformed Content-Length -> 400
    method_not_allowed,  // TRACE, CONNECT -> 405
    line_too_long,       // request line over max_request_line_bytes -> 414
    too_many_headers,    // over max_headers -> 431
    header_too_large,    // header block over max_request_header_bytes -> 431
    body_too_large,      // Content-Length over max_request_body_bytes -> 413
};

http::status status_of(request_error e);
const char* describe(request_error e);

// Checks a request whose header Beast has parsed. `header_bytes` is the size
// of the whole header block including the request line. Drops header fields
// with an underscore in the name unless limits say to reject them.
request_error validate_request(request_header& req, std::size_t header_bytes,
                               const config::limits& limits);

// Removes hop-by-hop fields (RFC 9110 §7.6.1) and every field named in
// Connection. Transfer-Encoding is kept: the caller decides framing.
void strip_hop_by_hop(header_fields& fields);

// Appends the client address to X-Forwarded-For, sets X-Forwarded-Proto and
// X-Forwarded-Host, and makes sure X-Request-Id exists (generating one from
// `random_bits` when absent). Returns the request id in effect.
std::string_view add_forwarding(request_header& req, std::string_view client_ip, bool tls,
                                std::uint64_t random_hi, std::uint64_t random_lo);

// True when "websocket" is among the Upgrade tokens and "upgrade" among the
// Connection tokens: a WebSocket opening handshake (RFC 6455 §4.1) in a GET
// over HTTP/1.1, or its acceptance in a 101. Other upgrades (h2c...) are not
// forwarded (SPEC §4).
bool names_websocket_upgrade(const header_fields& fields);

// The header as wire text (start line, fields in order, empty line) into
// out[0, cap): the bytes Beast's serializer writes, without its buffer
// sequences. Returns the size, or 0 when it does not fit in `cap`.
std::size_t format_header(const request_header& h, char* out, std::size_t cap);
std::size_t format_header(const response_header& h, char* out, std::size_t cap);

// ASCII case-insensitive equality (field values, tokens).
bool iequals(std::string_view a, std::string_view b);

// True for methods whose retry is safe (RFC 9110 §9.2.2).
bool is_idempotent(http::verb method);

}  // namespace switchyard::proxy
