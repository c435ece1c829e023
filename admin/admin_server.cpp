// The admin HTTP server: accept loop, one coroutine per connection, routing,
// authentication and the JSON API.

#include "admin/admin_server.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <map>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <list>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

namespace switchyard::admin {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string trim_trailing(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ' ||
                             text.back() == '\t')) {
        text.pop_back();
    }
    return text;
}

// Reads a token file; false and `error` when it cannot be read or is empty.
bool read_token_file(const std::string& path, const char* what, std::string& out,
                     std::string& error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        error = std::string("cannot read ") + what + " " + path;
        return false;
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) {
        error = std::string("cannot read ") + what + " " + path;
        return false;
    }
    out = trim_trailing(text.str());
    if (out.empty()) {
        error = std::string(what) + " " + path + " is empty";
        return false;
    }
    return true;
}

bool ascii_iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

// The credentials of "Authorization: Bearer TOKEN" (scheme case-insensitive,
// RFC 9110 §11.1); empty when the header is absent or of another scheme.
std::string_view bearer_token(std::string_view header) {
    constexpr std::string_view scheme = "bearer";
    if (header.size() <= scheme.size() || !ascii_iequals(header.substr(0, scheme.size()), scheme) ||
        (header[scheme.size()] != ' ' && header[scheme.size()] != '\t')) {
        return {};
    }
    std::string_view token = header.substr(scheme.size());
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
        token.remove_prefix(1);
    }
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
        token.remove_suffix(1);
    }
    return token;
}

bool is_loopback(const net::ip::address& address) {
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
        return net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6()).is_loopback();
    }
    return address.is_loopback();
}

// --- responses ---

response make_response(http::status status, unsigned version, std::string body,
                       std::string_view content_type) {
    response res{status, version};
    res.set(http::field::server, "switchyard");
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-store");
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

response json_response(http::status status, unsigned version, const json::value& body) {
    return make_response(status, version, to_text(body) + "\n", "application/json");
}

response error_response(http::status status, unsigned version, std::string message) {
    return json_response(status, version, json::object{{"error", std::move(message)}});
}

response service_response(unsigned version, const json::object& service) {
    response res = json_response(http::status::ok, version, service);
    // The generation doubles as the entity tag, so that If-Match reads naturally.
    if (const auto* generation = service.if_contains("generation")) {
        res.set(http::field::etag, "\"" + json::serialize(*generation) + "\"");
    }
    return res;
}

response method_not_allowed(unsigned version, std::string_view allow) {
    response res = error_response(http::status::method_not_allowed, version,
                                  "method not allowed; this path accepts " + std::string(allow));
    res.set(http::field::allow, allow);
    return res;
}

// --- request helpers ---

enum class access { none, read, full };

// If-Match: `"N"` (or W/"N", or *). nullopt in `generation` means no
// constraint; false when the header is malformed.
bool parse_if_match(std::string_view header, std::optional<std::uint64_t>& generation) {
    generation.reset();
    while (!header.empty() && (header.front() == ' ' || header.front() == '\t')) {
        header.remove_prefix(1);
    }
    while (!header.empty() && (header.back() == ' ' || header.back() == '\t')) {
        header.remove_suffix(1);
    }
    if (header.empty() || header == "*") {
        return true;
    }
    if (header.starts_with("W/")) {
        header.remove_prefix(2);
    }
    if (header.size() >= 2 && header.front() == '"' && header.back() == '"') {
        header = header.substr(1, header.size() - 2);
    }
    if (header.empty() || header.size() > 19) {
        return false;
    }
    std::uint64_t value = 0;
    for (const char c : header) {
        if (c < '0' || c > '9') {
            return false;
        }
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    generation = value;
    return true;
}

}  // namespace

// ---------------------------------------------------------------------------

std::optional<admin_tokens> load_tokens(const config::admin& cfg, std::string& error) {
    admin_tokens tokens;
    if (!cfg.token_file.empty()) {
        if (!read_token_file(cfg.token_file, "admin token file", tokens.full, error)) {
            return std::nullopt;
        }
    } else if (const char* env = std::getenv("SWITCHYARD_ADMIN_TOKEN"); env != nullptr) {
        tokens.full = trim_trailing(env);
    }
    if (!cfg.read_token_file.empty() &&
        !read_token_file(cfg.read_token_file, "admin read token file", tokens.read, error)) {
        return std::nullopt;
    }
    return tokens;
}

bool token_equals(std::string_view presented, std::string_view expected) {
    // A length mismatch still runs the full comparison (against the expected
    // token itself), so that the time never depends on the contents.
    const bool same_length = presented.size() == expected.size();
    const char* left = same_length ? presented.data() : expected.data();
    const int differs = CRYPTO_memcmp(left, expected.data(), expected.size());
    return same_length & (differs == 0) & !expected.empty();
}

struct admin_server::impl {
    impl(control_plane& c, admin_tokens t, admin_server_options o, std::string a)
        : control(c),
          tokens(std::move(t)),
          options(std::move(o)),
          address(std::move(a)),
          acceptor(c.get_executor()) {}

    control_plane& control;
    admin_tokens tokens;
    admin_server_options options;
    std::string address;  // as configured, for messages
    tcp::acceptor acceptor;
    std::atomic<bool> ready{false};
    bool stopped = false;
    std::list<beast::tcp_stream*> open;  // control thread only

    access authenticate(const request& req) const {
        if (tokens.full.empty()) {
            return access::full;  // no token configured: loopback only, open
        }
        const std::string_view token = bearer_token(req[http::field::authorization]);
        // Both comparisons always run: which token matched must not show in
        // the timing either.
        const bool full = token_equals(token, tokens.full);
        const bool read = !tokens.read.empty() && token_equals(token, tokens.read);
        if (full) {
            return access::full;
        }
        return read ? access::read : access::none;
    }
};

namespace {

using impl_ptr = std::shared_ptr<admin_server::impl>;

// Keeps a connection listed while its coroutine lives, so stop() can close it.
class open_registration {
public:
    open_registration(admin_server::impl& server, beast::tcp_stream& stream)
        : server_(server), it_(server.open.insert(server.open.end(), &stream)) {}
    ~open_registration() { server_.open.erase(it_); }
    open_registration(const open_registration&) = delete;
    open_registration& operator=(const open_registration&) = delete;

private:
    admin_server::impl& server_;
    std::list<beast::tcp_stream*>::iterator it_;
};

// PUT /api/v1/services/{svc}/weights. Body: {"weights":{POOL:N,..},"reason":".."}.
net::awaitable<response> put_weights(impl_ptr self, request req, std::string service) {
    const unsigned version = req.version();
    weights_request change;
    change.service = std::move(service);
    if (!parse_if_match(req[http::field::if_match], change.if_match)) {
        co_return error_response(http::status::bad_request, version,
                                 "If-Match must name one generation in quotes, like \"7\"");
    }
    json::error_code ec;
    const json::value body = json::parse(req.body(), ec);
    if (ec || !body.is_object()) {
        co_return error_response(http::status::bad_request, version,
                                 "the request body must be a JSON object like "
                                 "{\"weights\":{\"blue\":90,\"canary\":10}}");
    }
    for (const auto& [key, value] : body.get_object()) {
        if (key == "reason") {
            if (!value.is_string()) {
                co_return error_response(http::status::bad_request, version,
                                         "\"reason\" must be a string");
            }
            change.reason = std::string(value.get_string());
        } else if (key != "weights") {
            co_return error_response(
                http::status::bad_request, version,
                "unknown field \"" + std::string(key) + "\" in the request body");
        }
    }
    const json::value* weights = body.get_object().if_contains("weights");
    if (weights == nullptr || !weights->is_object()) {
        co_return error_response(http::status::bad_request, version,
                                 "the request body needs a \"weights\" object, like "
                                 "{\"weights\":{\"blue\":90,\"canary\":10}}");
    }
    for (const auto& [pool, value] : weights->get_object()) {
        std::int64_t weight = 0;
        if (value.is_int64()) {
            weight = value.get_int64();
        } else if (value.is_uint64()) {
            // Beyond int64 is beyond max_weight too; the control plane says so.
            weight = std::numeric_limits<std::int64_t>::max();
        } else {
            co_return error_response(
                http::status::bad_request, version,
                "the weight of pool \"" + std::string(pool) + "\" must be a non-negative integer");
        }
        change.weights[std::string(pool)] = weight;
    }
    change_result result =
        co_await self->control.async_set_weights(std::move(change), net::use_awaitable);
    if (result.error) {
        co_return error_response(static_cast<http::status>(http_status(result.error)), version,
                                 std::move(result.message));
    }
    co_return service_response(version, result.service);
}

// The answer to a change: the SERVICE, or {"error":..} (with "details").
response change_response(unsigned version, change_result result) {
    if (result.error) {
        json::object body{{"error", std::move(result.message)}};
        if (result.details) {
            body["details"] = std::move(*result.details);
        }
        if (!result.errors.empty()) {
            json::array errors;
            for (auto& e : result.errors) {
                errors.push_back(json::string(std::move(e)));
            }
            body["errors"] = std::move(errors);
        }
        return json_response(static_cast<http::status>(http_status(result.error)), version,
                             body);
    }
    return service_response(version, result.service);
}

// The body of a POST: a JSON object whose members are all strings and named
// in `allowed`; an empty body is an empty object. nullopt and `error` set
// otherwise.
std::optional<std::map<std::string, std::string, std::less<>>> string_fields(
    const std::string& text, std::initializer_list<std::string_view> allowed, std::string& error) {
    std::map<std::string, std::string, std::less<>> out;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
        return out;
    }
    json::error_code ec;
    const json::value body = json::parse(text, ec);
    if (ec || !body.is_object()) {
        error = "the request body must be a JSON object";
        return std::nullopt;
    }
    for (const auto& [key, value] : body.get_object()) {
        if (std::find(allowed.begin(), allowed.end(), std::string_view(key)) == allowed.end()) {
            error = "unknown field \"" + std::string(key) + "\" in the request body";
            return std::nullopt;
        }
        if (!value.is_string()) {
            error = "\"" + std::string(key) + "\" must be a string";
            return std::nullopt;
        }
        out[std::string(key)] = std::string(value.get_string());
    }
    return out;
}

// POST /api/v1/services/{svc}/{switch|promote|rollback|rollout}.
net::awaitable<response> post_action(impl_ptr self, request req, std::string service,
                                     std::string action) {
    const unsigned version = req.version();
    std::optional<std::uint64_t> if_match;
    if (!parse_if_match(req[http::field::if_match], if_match)) {
        co_return error_response(http::status::bad_request, version,
                                 "If-Match must name one generation in quotes, like \"7\"");
    }
    std::string error;
    const auto field = [](const auto& fields, std::string_view name) {
        const auto it = fields.find(name);
        return it == fields.end() ? std::string() : it->second;
    };
    if (action == "switch") {
        const auto fields = string_fields(req.body(), {"to", "reason"}, error);
        if (!fields) {
            co_return error_response(http::status::bad_request, version, error);
        }
        if (field(*fields, "to").empty()) {
            co_return error_response(http::status::bad_request, version,
                                     "the request body needs \"to\", like {\"to\":\"green\"}");
        }
        switch_request change{std::move(service), field(*fields, "to"), if_match, "admin",
                              field(*fields, "reason")};
        co_return change_response(
            version, co_await self->control.async_switch(std::move(change), net::use_awaitable));
    }
    if (action == "promote") {
        const auto fields = string_fields(req.body(), {"pool", "reason"}, error);
        if (!fields) {
            co_return error_response(http::status::bad_request, version, error);
        }
        promote_request change{std::move(service), field(*fields, "pool"), if_match, "admin",
                               field(*fields, "reason")};
        co_return change_response(
            version, co_await self->control.async_promote(std::move(change), net::use_awaitable));
    }
    if (action == "rollback") {
        const auto fields = string_fields(req.body(), {"reason"}, error);
        if (!fields) {
            co_return error_response(http::status::bad_request, version, error);
        }
        rollback_request change{std::move(service), if_match, "admin", field(*fields, "reason")};
        co_return change_response(
            version, co_await self->control.async_rollback(std::move(change), net::use_awaitable));
    }
    const auto fields = string_fields(req.body(), {"action", "pool"}, error);
    if (!fields) {
        co_return error_response(http::status::bad_request, version, error);
    }
    const auto parsed = parse_rollout_action(field(*fields, "action"));
    if (!parsed) {
        co_return error_response(http::status::bad_request, version,
                                 "\"action\" must be one of start, pause, resume, abort");
    }
    rollout_request change{std::move(service), *parsed, field(*fields, "pool"), if_match, "admin"};
    co_return change_response(
        version, co_await self->control.async_rollout(std::move(change), net::use_awaitable));
}

// GET /api/v1/events?since=ID.
response get_events(impl_ptr self, const boost::urls::url_view& target, unsigned version) {
    std::uint64_t since = 0;
    const auto params = target.params();
    if (const auto it = params.find("since"); it != params.end()) {
        const std::string text = (*it).has_value ? std::string((*it).value) : std::string();
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), since);
        if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
            return error_response(http::status::bad_request, version,
                                  "since must be an event id (a non-negative integer)");
        }
    }
    json::array events;
    for (const auto& e : self->control.events_since(since)) {
        events.push_back(to_json(e));
    }
    return json_response(http::status::ok, version, json::object{{"events", std::move(events)}});
}

// Answers one request. Reads happen inline; changes wait for the control
// plane, which waits for the workers.
net::awaitable<response> handle(impl_ptr self, request req) {
    const unsigned version = req.version();
    const auto method = req.method();
    const bool reading = method == http::verb::get || method == http::verb::head;

    const auto target = boost::urls::parse_origin_form(req.target());
    if (!target) {
        co_return error_response(http::status::bad_request, version,
                                 "the request target is not a valid path");
    }
    std::vector<std::string> segments;
    for (auto segment : target->segments()) {
        segments.push_back(std::string(segment));
    }
    const auto is = [&segments](std::initializer_list<std::string_view> expected) {
        return std::equal(segments.begin(), segments.end(), expected.begin(), expected.end());
    };

    if (is({"healthz"})) {
        if (!reading) {
            co_return method_not_allowed(version, "GET, HEAD");
        }
        co_return make_response(http::status::ok, version, "ok\n", "text/plain; charset=utf-8");
    }
    if (is({"readyz"})) {
        if (!reading) {
            co_return method_not_allowed(version, "GET, HEAD");
        }
        if (!self->ready.load(std::memory_order_relaxed)) {
            co_return error_response(http::status::service_unavailable, version,
                                     "switchyard is not ready (starting or draining)");
        }
        co_return make_response(http::status::ok, version, "ready\n", "text/plain; charset=utf-8");
    }
    if (is({"metrics"})) {
        if (!reading) {
            co_return method_not_allowed(version, "GET, HEAD");
        }
        if (!self->options.metrics_text) {
            co_return error_response(http::status::not_found, version,
                                     "metrics are not served by this process");
        }
        co_return make_response(http::status::ok, version, self->options.metrics_text(),
                                "text/plain; version=0.0.4; charset=utf-8");
    }
    if (segments.empty() || segments.front() != "api") {
        co_return error_response(http::status::not_found, version,
                                 "no such endpoint: " + std::string(target->path()));
    }

    // Authentication comes before routing, so that the API's shape is not
    // revealed to a caller without a token.
    const access granted = self->authenticate(req);
    if (granted == access::none) {
        response res = error_response(http::status::unauthorized, version,
                                      req[http::field::authorization].empty()
                                          ? "this endpoint needs an Authorization: Bearer token"
                                          : "the bearer token is not valid");
        res.set(http::field::www_authenticate, "Bearer");
        co_return res;
    }
    const auto forbidden_change = [&]() {
        return error_response(http::status::forbidden, version,
                              "this token may only read; a change needs the admin token");
    };

    if (is({"api", "v1", "services"})) {
        if (!reading) {
            co_return method_not_allowed(version, "GET, HEAD");
        }
        co_return json_response(http::status::ok, version, self->control.services_json());
    }
    if (segments.size() == 4 && is({"api", "v1", "services", segments[3]})) {
        if (!reading) {
            co_return method_not_allowed(version, "GET, HEAD");
        }
        auto service = self->control.service_json(segments[3]);
        if (!service) {
            co_return error_response(http::status::not_found, version,
                                     "unknown service \"" + segments[3] + "\"");
        }
        co_return service_response(version, *service);
    }
    if (segments.size() == 5 && is({"api", "v1", "services", segments[3], "weights"})) {
        if (method != http::verb::put) {
            co_return method_not_allowed(version, "PUT");
        }
        if (granted != access::full) {
            co_return forbidden_change();
        }
        co_return co_await put_weights(self, std::move(req), segments[3]);
    }
    if (segments.size() == 5 && (segments[4] == "switch" || segments[4] == "promote" ||
                                 segments[4] == "rollback" || segments[4] == "rollout") &&
        is({"api", "v1", "services", segments[3], segments[4]})) {
        if (method != http::verb::post) {
            co_return method_not_allowed(version, "POST");
        }
        if (granted != access::full) {
            co_return forbidden_change();
        }
        if (!self->control.service_json(segments[3])) {
            co_return error_response(http::status::not_found, version,
                                     "unknown service \"" + segments[3] + "\"");
        }
        co_return co_await post_action(self, std::move(req), segments[3], segments[4]);
    }
    if (is({"api", "v1", "reload"})) {
        if (method != http::verb::post) {
            co_return method_not_allowed(version, "POST");
        }
        if (granted != access::full) {
            co_return forbidden_change();
        }
        change_result result = co_await self->control.async_reload("admin", net::use_awaitable);
        if (result.error) {
            co_return change_response(version, std::move(result));
        }
        result.service["reloaded"] = true;
        co_return json_response(http::status::ok, version, result.service);
    }
    if (is({"api", "v1", "events"})) {
        if (!reading) {
            co_return method_not_allowed(version, "GET, HEAD");
        }
        co_return get_events(self, *target, version);
    }
    co_return error_response(http::status::not_found, version,
                             "no such endpoint: " + std::string(target->path()));
}

// Best effort: tells a client why its connection is about to close.
net::awaitable<void> reject(beast::tcp_stream& stream, http::status status, std::string message) {
    response res = error_response(status, 11, std::move(message));
    res.keep_alive(false);
    co_await http::async_write(stream, res, use_tuple);
}

// One connection: read a request, answer it, repeat while keep-alive.
net::awaitable<void> serve(impl_ptr self, tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    open_registration registration(*self, stream);
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(self->options.header_limit));
        parser.body_limit(self->options.body_limit);

        stream.expires_after(self->options.idle_timeout);
        auto [header_error, header_bytes] =
            co_await http::async_read_header(stream, buffer, parser, use_tuple);
        (void)header_bytes;
        if (header_error == http::error::body_limit) {
            co_await reject(stream, http::status::payload_too_large,
                            "the request body is too large");
            break;
        }
        if (header_error == http::error::header_limit) {
            co_await reject(stream, http::status::request_header_fields_too_large,
                            "the request header is too large");
            break;
        }
        if (header_error) {
            if (header_error.category() ==
                    http::make_error_code(http::error::end_of_stream).category() &&
                header_error != http::error::end_of_stream &&
                header_error != http::error::partial_message) {
                co_await reject(stream, http::status::bad_request, "malformed request");
            }
            break;  // closed, timed out, or stopped
        }

        stream.expires_after(self->options.request_timeout);
        if (!parser.is_done()) {
            if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
                http::response<http::empty_body> go_on{http::status::continue_, 11};
                auto [continue_error, continue_bytes] =
                    co_await http::async_write(stream, go_on, use_tuple);
                (void)continue_bytes;
                if (continue_error) {
                    break;
                }
            }
            auto [body_error, body_bytes] =
                co_await http::async_read(stream, buffer, parser, use_tuple);
            (void)body_bytes;
            if (body_error == http::error::body_limit) {
                co_await reject(stream, http::status::payload_too_large,
                                "the request body is too large");
                break;
            }
            if (body_error) {
                break;
            }
        }

        request req = parser.release();
        const bool keep_alive = req.keep_alive();
        const bool head = req.method() == http::verb::head;
        response res;
        try {
            res = co_await handle(self, std::move(req));
        } catch (const std::exception& e) {
            res = error_response(http::status::internal_server_error, 11,
                                 std::string("internal error: ") + e.what());
        }
        res.keep_alive(keep_alive && !self->stopped);
        if (head) {
            // HEAD: the headers of the GET, Content-Length included, no body.
            const auto length = res.body().size();
            res.body().clear();
            res.content_length(length);
        }
        stream.expires_after(self->options.request_timeout);
        auto [write_error, write_bytes] = co_await http::async_write(stream, res, use_tuple);
        (void)write_bytes;
        if (write_error || !res.keep_alive()) {
            break;
        }
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

net::awaitable<void> accept_loop(impl_ptr self) {
    for (;;) {
        auto [ec, socket] = co_await self->acceptor.async_accept(use_tuple);
        if (self->stopped || ec == net::error::operation_aborted) {
            co_return;
        }
        if (ec) {
            // Out of descriptors or a transient network error: pause instead
            // of spinning, then try again.
            net::steady_timer pause(self->acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await pause.async_wait(use_tuple);
            continue;
        }
        if (self->open.size() >= self->options.max_connections) {
            beast::error_code ignored;
            socket.close(ignored);
            continue;
        }
        net::co_spawn(self->acceptor.get_executor(), serve(self, std::move(socket)), net::detached);
    }
}

}  // namespace

// ---------------------------------------------------------------------------

admin_server::admin_server(control_plane& control, const config::admin& cfg, admin_tokens tokens,
                           admin_server_options options) {
    if (!tokens.read.empty() && tokens.full.empty()) {
        throw config_error(
            "admin.read_token_file is set but no admin token is configured (admin.token_file "
            "or SWITCHYARD_ADMIN_TOKEN); a read-only token needs a full token beside it");
    }
    impl_ = std::make_shared<impl>(control, std::move(tokens), std::move(options), cfg.address);

    // The address: a literal, or a name resolved now (the admin listener
    // binds once; "localhost" is the usual case).
    std::vector<net::ip::address> candidates;
    beast::error_code ec;
    const auto literal = net::ip::make_address(cfg.host, ec);
    if (!ec) {
        candidates.push_back(literal);
    } else {
        tcp::resolver resolver(control.get_executor());
        const auto results = resolver.resolve(cfg.host, std::to_string(cfg.port), ec);
        if (ec || results.empty()) {
            throw config_error("admin address " + cfg.address + " cannot be resolved: " +
                               (ec ? ec.message() : std::string("no address")));
        }
        for (const auto& entry : results) {
            candidates.push_back(entry.endpoint().address());
        }
    }
    if (impl_->tokens.full.empty()) {
        for (const auto& address : candidates) {
            if (!is_loopback(address)) {
                throw config_error("admin address " + cfg.address +
                                   " is not loopback and no admin token is configured");
            }
        }
    }

    const tcp::endpoint endpoint(candidates.front(), cfg.port);
    auto& acceptor = impl_->acceptor;
    const auto fail = [&](const beast::error_code& why) {
        if (why == net::error::address_in_use) {
            throw startup_error("admin address " + cfg.address + ": port in use");
        }
        throw startup_error("cannot listen on admin address " + cfg.address + ": " + why.message());
    };
    acceptor.open(endpoint.protocol(), ec);
    if (ec) {
        fail(ec);
    }
    // SO_REUSEADDR lets a restart bind while old connections sit in
    // TIME_WAIT; on Linux it never lets two live listeners share a port.
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    acceptor.bind(endpoint, ec);
    if (ec) {
        fail(ec);
    }
    acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
        fail(ec);
    }
}

admin_server::~admin_server() {
    stop();
}

void admin_server::start() {
    net::co_spawn(impl_->acceptor.get_executor(), accept_loop(impl_), net::detached);
}

void admin_server::stop() {
    if (impl_->stopped) {
        return;
    }
    impl_->stopped = true;
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    for (beast::tcp_stream* stream : impl_->open) {
        stream->socket().close(ignored);
    }
}

void admin_server::set_ready(bool ready) {
    impl_->ready.store(ready, std::memory_order_relaxed);
}

bool admin_server::ready() const {
    return impl_->ready.load(std::memory_order_relaxed);
}

std::uint16_t admin_server::port() const {
    beast::error_code ec;
    const auto endpoint = impl_->acceptor.local_endpoint(ec);
    return ec ? 0 : endpoint.port();
}

}  // namespace switchyard::admin
