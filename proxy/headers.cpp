#include "proxy/headers.hpp"

#include <boost/beast/http/rfc7230.hpp>

#include <array>
#include <charconv>
#include <cstring>
#include <iterator>

namespace switchyard::proxy {

http::status status_of(request_error e) {
    switch (e) {
        case request_error::ok:
            return http::status::ok;
        case request_error::te_not_chunked:
            return http::status::not_implemented;
        case request_error::method_not_allowed:
            return http::status::method_not_allowed;
        case request_error::line_too_long:
            return http::status::uri_too_long;
        case request_error::too_many_headers:
        case request_error::header_too_large:
            return http::status::request_header_fields_too_large;
        case request_error::body_too_large:
            return http::status::payload_too_large;
        default:
            return http::status::bad_request;
    }
}

const char* describe(request_error e) {
    switch (e) {
        case request_error::ok: return "ok";
        case request_error::missing_host: return "missing Host header";
        case request_error::repeated_host: return "repeated Host header";
        case request_error::fragment_in_target: return "fragment in request target";
        case request_error::bad_target: return "invalid request target";
        case request_error::bad_field_value: return "invalid character in a header value";
        case request_error::bad_field_name: return "invalid header field name";
        case request_error::te_on_http10: return "Transfer-Encoding on an HTTP/1.0 request";
        case request_error::te_and_length: return "both Transfer-Encoding and Content-Length";
        case request_error::te_not_chunked: return "unsupported Transfer-Encoding";
        case request_error::bad_content_length: return "invalid Content-Length";
        case request_error::method_not_allowed: return "method not allowed";
        case request_error::line_too_long: return "request line too long";
        case request_error::too_many_headers: return "too many header fields";
        case request_error::header_too_large: return "header block too large";
        case request_error::body_too_large: return "request body too large";
    }
    return "bad request";
}

namespace {

bool value_is_clean(std::string_view v) {
    for (const char c : v) {
        const auto u = static_cast<unsigned char>(c);
        // HTAB is allowed; every other control character (NUL, CR, LF...) is not.
        if ((u < 0x20 && u != '\t') || u == 0x7f) {
            return false;
        }
    }
    return true;
}

// RFC 9110 §5.6.2 tchar, as a table: std::isalnum per character was a
// call into the C locale for every byte of every field name.
constexpr std::array<bool, 256> tchar_table = [] {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c) {
        t[static_cast<std::size_t>(c)] = true;
    }
    for (int c = 'a'; c <= 'z'; ++c) {
        t[static_cast<std::size_t>(c)] = true;
        t[static_cast<std::size_t>(c - 'a' + 'A')] = true;
    }
    for (const char c : std::string_view("!#$%&'*+-.^_`|~")) {
        t[static_cast<unsigned char>(c)] = true;
    }
    return t;
}();

bool is_tchar(char c) { return tchar_table[static_cast<unsigned char>(c)]; }

}  // namespace

request_error validate_request(request_header& req, std::size_t header_bytes,
                               const config::limits& limits) {
    const auto method = req.method();
    if (method == http::verb::trace || method == http::verb::connect) {
        return request_error::method_not_allowed;
    }
    const std::string_view target = req.target();
    const std::size_t line_bytes = req.method_string().size() + 1 + target.size() + 1 + 8;
    if (line_bytes > limits.max_request_line_bytes) {
        return request_error::line_too_long;
    }
    if (header_bytes - line_bytes > limits.max_request_header_bytes) {
        return request_error::header_too_large;
    }
    if (target.find('#') != std::string_view::npos) {
        return request_error::fragment_in_target;
    }
    if (target.empty() ||
        (target.front() != '/' && target != "*" && !target.starts_with("http://") &&
         !target.starts_with("https://"))) {
        return request_error::bad_target;
    }
    // The asterisk form is for OPTIONS only (RFC 9112 §3.2.4).
    if (target == "*" && method != http::verb::options) {
        return request_error::bad_target;
    }

    std::size_t count = 0;
    int hosts = 0;
    int lengths = 0;
    bool has_te = false;
    std::string_view first_length;
    bool underscore = false;
    for (const auto& f : req) {
        ++count;
        const std::string_view name = f.name_string();
        const std::string_view value = f.value();
        if (name.empty()) {
            return request_error::bad_field_name;
        }
        for (const char c : name) {
            if (!is_tchar(c)) {
                return request_error::bad_field_name;
            }
            if (c == '_') {
                underscore = true;
            }
        }
        if (!value_is_clean(value)) {
            return request_error::bad_field_value;
        }
        switch (f.name()) {
            case http::field::host:
                ++hosts;
                break;
            case http::field::content_length:
                // A repeated Content-Length is refused even when equal
                // (nginx does too): forwarding both is ambiguous downstream.
                if (lengths++ == 0) {
                    first_length = value;
                } else {
                    return request_error::bad_content_length;
                }
                break;
            case http::field::transfer_encoding:
                has_te = true;
                break;
            default:
                break;
        }
    }
    if (count > limits.max_headers) {
        return request_error::too_many_headers;
    }
    if (hosts > 1) {
        return request_error::repeated_host;
    }
    if (hosts == 0 && req.version() >= 11) {
        return request_error::missing_host;
    }
    if (has_te) {
        if (req.version() < 11) {
            return request_error::te_on_http10;
        }
        if (lengths > 0) {
            return request_error::te_and_length;
        }
        // Exactly one Transfer-Encoding field whose value is exactly
        // "chunked": anything else would be framed differently by someone.
        if (req.count(http::field::transfer_encoding) != 1 ||
            !iequals(req[http::field::transfer_encoding], "chunked")) {
            return request_error::te_not_chunked;
        }
    }
    if (lengths > 0) {
        std::uint64_t length = 0;
        const auto* b = first_length.data();
        const auto* e = b + first_length.size();
        const auto [p, ec] = std::from_chars(b, e, length);
        if (ec != std::errc{} || p != e || first_length.empty()) {
            return request_error::bad_content_length;
        }
        if (limits.max_request_body_bytes != 0 && length > limits.max_request_body_bytes) {
            return request_error::body_too_large;
        }
        if (first_length.size() > 1 && first_length.front() == '0') {
            // Leading zeros are valid (1*DIGIT) but not every upstream reads
            // a long run of them (found by the fuzzer: 119 zeros): the
            // upstream gets the plain decimal.
            char digits[24];
            const auto [end, tec] = std::to_chars(digits, digits + sizeof digits, length);
            req.set(http::field::content_length,
                    std::string_view(digits, static_cast<std::size_t>(end - digits)));
        }
    }
    if (underscore) {
        if (limits.reject_underscore_headers) {
            return request_error::bad_field_name;
        }
        // nginx's default: silently drop fields whose name has an underscore,
        // because some upstreams map '-' and '_' to the same variable.
        for (auto it = req.begin(); it != req.end();) {
            if (it->name_string().find('_') != std::string_view::npos) {
                it = req.erase(it);
            } else {
                ++it;
            }
        }
    }
    return request_error::ok;
}

void strip_hop_by_hop(header_fields& fields) {
    // Fields named in Connection are hop-by-hop too. Only tokens other than
    // "close" and "keep-alive" name fields, so the common request pays for
    // none of this (a fixed array: a request naming more than 16 is unusual
    // and the rest are still covered by the fixed list below).
    std::array<std::string_view, 16> named{};
    std::size_t n = 0;
    std::string connection_value;
    for (auto it = fields.find(http::field::connection); it != fields.end() &&
                                                         it->name() == http::field::connection;
         ++it) {
        for (const auto& token : http::token_list{it->value()}) {
            const std::string_view t(token.data(), token.size());
            if (!iequals(t, "close") && !iequals(t, "keep-alive")) {
                if (!connection_value.empty()) {
                    connection_value += ',';
                }
                connection_value.append(t);
            }
        }
    }
    if (!connection_value.empty()) {
        for (const auto& token : http::token_list{connection_value}) {
            if (n < named.size()) {
                named[n++] = std::string_view(token.data(), token.size());
            }
        }
        for (std::size_t i = 0; i < n; ++i) {
            const auto field = http::string_to_field(named[i]);
            // Never let Connection strip the framing or the routing keys.
            if (field == http::field::host || field == http::field::content_length ||
                field == http::field::transfer_encoding) {
                continue;
            }
            fields.erase(named[i]);
        }
    }
    // One pass over the fields rather than one lookup per name.
    for (auto it = fields.begin(); it != fields.end();) {
        switch (it->name()) {
            case http::field::connection:
            case http::field::keep_alive:
            case http::field::proxy_connection:
            case http::field::te:
            case http::field::trailer:
            case http::field::upgrade:
            case http::field::proxy_authorization:
            case http::field::proxy_authenticate:
                it = fields.erase(it);
                break;
            default:
                ++it;
                break;
        }
    }
}

std::string_view add_forwarding(request_header& req, std::string_view client_ip, bool tls,
                                std::uint64_t random_hi, std::uint64_t random_lo) {
    static constexpr std::string_view xff_name = "X-Forwarded-For";
    static constexpr std::string_view proto_name = "X-Forwarded-Proto";
    static constexpr std::string_view forwarded_host_name = "X-Forwarded-Host";
    static constexpr std::string_view id_name = "X-Request-Id";
    // One pass over the field list finds all five names: each lookup by name
    // is a case-insensitive search of the fields' tree, and `set` is one more
    // before its insert (nine of them were ~2 k instructions per request).
    // The common request has none of the X- fields: four plain inserts, each
    // told its name is not one of Beast's (no lookup of the name's enum).
    const auto end = req.end();
    auto host = end;
    auto xff = end;
    auto id = end;
    bool has_proto = false;
    bool has_forwarded_host = false;
    for (auto it = req.begin(); it != end; ++it) {
        if (it->name() == http::field::host) {
            if (host == end) {
                host = it;
            }
        } else if (it->name() == http::field::unknown) {
            const std::string_view name = it->name_string();
            if (iequals(name, xff_name)) {
                if (xff == end) {
                    xff = it;
                }
            } else if (iequals(name, proto_name)) {
                has_proto = true;
            } else if (iequals(name, forwarded_host_name)) {
                has_forwarded_host = true;
            } else if (id == end && iequals(name, id_name)) {
                id = it;
            }
        }
    }
    if (xff == end) {
        req.insert(http::field::unknown, xff_name, client_ip);
    } else {
        // The joined value outgrows the small-string buffer (a proxy's
        // address and ours): built in the worker thread's scratch string,
        // whose capacity stays, so the join allocates only while it grows.
        static thread_local std::string joined;
        joined.clear();
        // Several X-Forwarded-For fields are one list (RFC 9110 §5.3); Beast
        // keeps fields of one name adjacent (insert places a field after the
        // last of its name), so the run from the first covers all of them.
        for (auto it = xff; it != end && iequals(it->name_string(), xff_name); ++it) {
            if (!joined.empty()) {
                joined += ", ";
            }
            joined.append(it->value().data(), it->value().size());
        }
        joined += ", ";
        joined.append(client_ip);
        req.set(xff_name, joined);
    }
    const std::string_view proto = tls ? "https" : "http";
    if (has_proto) {
        req.set(proto_name, proto);
    } else {
        req.insert(http::field::unknown, proto_name, proto);
    }
    if (host != end) {
        // (Fields are list nodes: inserting others leaves host's value where it is.)
        if (has_forwarded_host) {
            req.set(forwarded_host_name, host->value());
        } else {
            req.insert(http::field::unknown, forwarded_host_name, host->value());
        }
    }
    if (id != end && !id->value().empty()) {
        return id->value();
    }
    static constexpr char hex[] = "0123456789abcdef";
    char buf[32];
    for (int i = 0; i < 16; ++i) {
        buf[i] = hex[(random_hi >> (i * 4)) & 0xf];
        buf[16 + i] = hex[(random_lo >> (i * 4)) & 0xf];
    }
    const std::string_view generated(buf, sizeof buf);
    if (id == end) {
        req.insert(http::field::unknown, id_name, generated);
        // A field whose name is new goes to the end of the list.
        const auto last = std::prev(req.end());
        if (iequals(last->name_string(), id_name)) {
            return last->value();
        }
    } else {
        req.set(id_name, generated);  // the client's was empty
    }
    return req[id_name];
}

namespace {

// Appends to out[0, cap) at `at`; false (nothing written) when it does not fit.
class wire_writer {
public:
    wire_writer(char* out, std::size_t cap) : out_(out), cap_(cap) {}
    void put(std::string_view s) {
        if (s.size() > cap_ - at_) {
            overflow_ = true;
            return;
        }
        std::memcpy(out_ + at_, s.data(), s.size());
        at_ += s.size();
    }
    void version(unsigned v) {
        const char text[] = {'H', 'T', 'T', 'P', '/', static_cast<char>('0' + v / 10), '.',
                             static_cast<char>('0' + v % 10)};
        put(std::string_view(text, sizeof text));
    }
    void fields_and_end(const header_fields& fields) {
        for (const auto& f : fields) {
            put(f.name_string());
            put(": ");
            put(f.value());
            put("\r\n");
        }
        put("\r\n");
    }
    std::size_t size() const { return overflow_ ? 0 : at_; }

private:
    char* out_;
    std::size_t cap_;
    std::size_t at_ = 0;
    bool overflow_ = false;
};

}  // namespace

std::size_t format_header(const request_header& h, char* out, std::size_t cap) {
    wire_writer w(out, cap);
    w.put(h.method_string());
    w.put(" ");
    w.put(h.target());
    w.put(" ");
    w.version(h.version());
    w.put("\r\n");
    w.fields_and_end(h);
    return w.size();
}

std::size_t format_header(const response_header& h, char* out, std::size_t cap) {
    wire_writer w(out, cap);
    w.version(h.version());
    const unsigned code = h.result_int();
    const char status[] = {' ', static_cast<char>('0' + code / 100 % 10),
                           static_cast<char>('0' + code / 10 % 10),
                           static_cast<char>('0' + code % 10), ' '};
    w.put(std::string_view(status, sizeof status));
    // As Beast: the reason phrase received, else the standard one.
    const auto reason = h.reason();
    w.put(reason.empty() ? http::obsolete_reason(static_cast<http::status>(code)) : reason);
    w.put("\r\n");
    w.fields_and_end(h);
    return w.size();
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    // ASCII only, without std::tolower's locale lookup per character.
    const auto lower = [](char c) {
        return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    };
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

bool names_websocket_upgrade(const header_fields& req) {
    const auto has_token = [&](http::field name, std::string_view token) {
        for (auto it = req.find(name); it != req.end() && it->name() == name; ++it) {
            for (const auto& t : http::token_list{it->value()}) {
                if (iequals(std::string_view(t.data(), t.size()), token)) {
                    return true;
                }
            }
        }
        return false;
    };
    return has_token(http::field::upgrade, "websocket") && has_token(http::field::connection, "upgrade");
}

bool is_idempotent(http::verb method) {
    switch (method) {
        case http::verb::get:
        case http::verb::head:
        case http::verb::options:
        case http::verb::put:
        case http::verb::delete_:
            return true;
        default:
            return false;
    }
}

}  // namespace switchyard::proxy
