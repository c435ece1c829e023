#include "proxy/session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <array>
#include <chrono>
#include <cstring>
#include <string>
#include <tuple>

#include "proxy/access_log.hpp"
#include "proxy/frame_pool.hpp"
#include "proxy/headers.hpp"
#include "proxy/worker.hpp"
#include "transport/tls_client.hpp"

// session::proxy_request's frame, about 3.8 KB, comes from the worker's
// frame_cache rather than from malloc (frame_pool.hpp).
template <>
struct std::coroutine_traits<switchyard::proxy::awaitable<bool>, switchyard::proxy::session&,
                             const switchyard::proxy::route_epoch&,
                             const switchyard::routing::service&> {
    using promise_type =
        switchyard::proxy::pooled_frame<bool, switchyard::proxy::executor_type>;
};

namespace switchyard::proxy {

namespace {

using clock = std::chrono::steady_clock;

bool is_timeout(const boost::system::error_code& ec) { return ec == beast::error::timeout; }

// How a failed upstream exchange is counted (SPEC §5: 5xx, connect errors,
// timeouts and resets are errors).
health::outcome outcome_of_status(unsigned status) {
    return status >= 500 ? health::outcome::upstream_5xx : health::outcome::success;
}

void note_endpoint_result(const routing::endpoint& ep, bool failed) {
    if (ep.health == nullptr) {
        return;
    }
    // The failure counter is shared by workers (SPEC §5: "counted per endpoint
    // across all workers"), so it is touched with a read-modify-write only on
    // failure, and on success only when it is not already zero: a healthy
    // endpoint's hot path reads a line nobody writes.
    auto& counter = const_cast<routing::endpoint_health*>(ep.health)->consecutive_failures;
    if (failed) {
        counter.fetch_add(1, std::memory_order_relaxed);
    } else if (counter.load(std::memory_order_relaxed) != 0) {
        counter.store(0, std::memory_order_relaxed);
    }
}

// The upstream's response is read with the stream's own read_some and parsed
// in place: what Beast's async_read_header and async_read do, without their
// composed-operation layers. A body that came in with the header (the usual
// small response) is then parsed with no further I/O and no post (Beast posts
// the completion of a read that needed no I/O): about 2,000 instructions a
// request less (callgrind, BENCHMARKS.md session 7).
//
// parse_buffered feeds what `buffer` holds to `parser` until `enough(parser)`:
// false when it needs more bytes than that; true when it has enough or the
// parse failed (`ec`; http::error::need_buffer when a buffer_body is full).
template <class Parser, class Enough>
bool parse_buffered(Parser& parser, beast::flat_buffer& buffer, boost::system::error_code& ec,
                    Enough enough) {
    while (buffer.size() != 0 && !enough(parser)) {
        const std::size_t used = parser.put(buffer.data(), ec);
        buffer.consume(used);
        if (ec == http::error::need_more) {
            ec = {};
            return false;
        }
        if (ec) {
            return true;
        }
        if (used == 0) {
            return false;
        }
    }
    return enough(parser);
}

// Takes one read's result into `buffer`: false, with `ec` set, when it ends
// the message's read. The end of the peer's bytes means, as in Beast, the
// end of a close-delimited body, a message cut short (partial_message), or
// no message at all (end_of_stream).
template <class Parser>
bool take_read(Parser& parser, beast::flat_buffer& buffer, boost::system::error_code read_ec,
               std::size_t n, boost::system::error_code& ec) {
    buffer.commit(n);
    if (read_ec == net::error::eof) {
        if (parser.got_some()) {
            parser.put_eof(ec);
        } else {
            ec = http::error::end_of_stream;
        }
        return false;
    }
    ec = read_ec;
    return !ec;
}

// How much to read next into `buffer` (Beast's read_some_op: at least 512
// bytes of room, at most 64 KiB).
std::size_t read_size_for(const beast::flat_buffer& buffer) { return beast::read_size(buffer, 65536); }

constexpr auto header_done = [](const auto& p) { return p.is_header_done(); };
constexpr auto message_done = [](const auto& p) { return p.is_done(); };

// Pieces up to this size are copied into one contiguous buffer before they
// are written; larger ones go through Beast's gathered write.
constexpr std::size_t flat_write_limit = 16 * 1024;

struct send_result {
    boost::system::error_code ec;
    // The whole message went out in this call without the serializer, which
    // therefore never reports is_done(): the caller stops here.
    bool whole = false;
};

// A whole message not yet started (the last piece, not chunked: a bodiless
// request, a small response already read), formatted by format_header into
// `scratch` with the body behind it, to be written at once with no
// serializer: its size, or 0 when it is not that case or does not fit
// (send_ready it is). The hot call sites try this first, so that their one
// write costs no coroutine frame of its own.
template <bool isRequest>
std::size_t format_whole(http::serializer<isRequest, http::buffer_body, header_fields>& sr,
                         char* scratch, bool header_only) {
    auto& message = sr.get();
    const auto& body = message.body();
    if (header_only || sr.is_header_done() || body.more || message.chunked()) {
        return 0;
    }
    const std::size_t h = format_header(message, scratch, flat_write_limit);
    const std::size_t piece = body.data != nullptr ? body.size : 0;
    if (h == 0 || piece > flat_write_limit - h) {
        return 0;
    }
    if (piece != 0) {
        std::memcpy(scratch + h, body.data, piece);
    }
    return h + piece;
}

// Writes what `sr` holds ready, for what format_whole does not take: the
// header (alone when `header_only`, as async_write_header) and the body
// piece its buffer_body points at. Beast's own write presents the header as
// one buffer per field, re-wrapped on every write_some, which was a quarter
// of the instructions of a small proxied request (BENCHMARKS.md, profile
// item 2), so:
// - what the serializer holds, when it fits in flat_write_limit, is copied
//   into `scratch` and written as one buffer;
// - a larger piece is written by Beast, whose per-call cost is then small
//   beside the bytes.
// need_buffer (the serializer waits for the next body piece) is success.
// Callers that may hold a whole message try format_whole first.
template <bool isRequest>
awaitable<send_result> send_ready(duplex_stream& stream,
                                  http::serializer<isRequest, http::buffer_body, header_fields>& sr,
                                  char* scratch, bool header_only) {
    sr.split(header_only);
    std::size_t used = 0;
    bool fits = true;
    boost::system::error_code ec;
    while (!sr.is_done() && !(header_only && sr.is_header_done())) {
        std::size_t n = 0;
        sr.next(ec, [&](boost::system::error_code&, const auto& buffers) {
            const std::size_t size = net::buffer_size(buffers);
            if (size > flat_write_limit - used) {
                fits = false;
                return;
            }
            n = net::buffer_copy(net::buffer(scratch + used, size), buffers);
        });
        if (ec || !fits) {
            break;
        }
        sr.consume(n);
        used += n;
    }
    if (ec && ec != http::error::need_buffer) {
        co_return send_result{ec};
    }
    if (used != 0) {
        auto [wec, wn] = co_await net::async_write(stream, net::buffer(scratch, used), use_tuple);
        if (wec) {
            co_return send_result{wec};
        }
    }
    if (!fits) {
        boost::system::error_code wec;
        if (header_only) {
            std::tie(wec, std::ignore) = co_await http::async_write_header(stream, sr, use_tuple);
        } else {
            std::tie(wec, std::ignore) = co_await http::async_write(stream, sr, use_tuple);
        }
        if (wec && wec != http::error::need_buffer) {
            co_return send_result{wec};
        }
    }
    co_return send_result{};
}

}  // namespace

read_deadline::read_deadline(const executor_type& executor)
    : state_(std::make_shared<state>(executor)) {}

read_deadline::~read_deadline() {
    state_->socket = nullptr;
    ++state_->generation;
    state_->timer.cancel();
}

void read_deadline::arm(client_socket& socket, std::chrono::steady_clock::duration after) {
    auto& st = *state_;
    const auto generation = ++st.generation;
    st.socket = &socket;
    st.fired = false;
    st.timer.expires_after(after);
    // The handler owns the state (not the session): it may run after the
    // session is gone, and then does nothing.
    st.timer.async_wait([keep = state_, generation](boost::system::error_code ec) {
        if (ec || keep->generation != generation || keep->socket == nullptr) {
            return;
        }
        keep->fired = true;
        boost::system::error_code ignored;
        keep->socket->cancel(ignored);
    });
}

void read_deadline::disarm() {
    auto& st = *state_;
    ++st.generation;
    st.socket = nullptr;
    st.timer.cancel();
}

session::session(worker& owner, client_socket socket, std::size_t listener)
    : worker_(owner),
      stream_(duplex_stream::tcp_stream_type(std::move(socket))),
      deadline_(stream_.get_executor()),
      listener_(listener) {
    tls_ = worker_.listener(listener_).tls;
    boost::system::error_code ec;
    stream_.socket().set_option(net::ip::tcp::no_delay(true), ec);
    const auto remote = stream_.socket().remote_endpoint(ec);
    if (!ec) {
        const auto text = remote.address().to_string();
        client_ip_len_ = std::min(text.size(), sizeof client_ip_);
        std::memcpy(client_ip_, text.data(), client_ip_len_);
    }
    worker_.session_started(this);
}

session::~session() { worker_.session_ended(this); }

void session::drain() {
    drain_ = true;
    if (idle_) {
        // Waiting for the next request: nothing to finish, close now.
        stream_.cancel();
    }
}

void session::abort() {
    drain_ = true;
    boost::system::error_code ec;
    stream_.socket().close(ec);
    if (upstream_ != nullptr) {
        upstream_->stream.socket().close(ec);
    }
}

awaitable<void> session::run() {
    const auto& limits = worker_.config().limit;
    // Bounded: a header larger than the limits never grows the buffer, and a
    // single huge field cannot reach basic_fields' 64 KiB-per-field throw.
    buffer_.max_size(static_cast<std::size_t>(limits.max_request_line_bytes +
                                              limits.max_request_header_bytes + 4096));
    if (auto* context = worker_.listener(listener_).tls_context.get()) {
        if (!co_await handshake(*context, limits)) {
            co_return;
        }
    }
    for (;;) {
        if (!co_await serve_one()) {
            break;
        }
    }
    co_await lingering_close();
}

awaitable<bool> session::handshake(net::ssl::context& context, const config::limits& limits) {
    // The first bytes decide: a TLS record starts with 0x16 (handshake). A
    // plain HTTP request sent to the TLS port gets a plain 400 that says so,
    // as nginx does, instead of a reset the operator cannot read.
    stream_.expires_after(limits.header_timeout);
    auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), use_tuple);
    if (ec) {
        stream_.close();
        co_return false;
    }
    buffer_.commit(n);
    if (static_cast<const unsigned char*>(buffer_.data().data())[0] != 0x16) {
        co_await respond_error(400, "plain HTTP request sent to a TLS port", true);
        co_await lingering_close();
        co_return false;
    }
    stream_.start_tls(context);
    auto [hec, used] = co_await stream_.tls().async_handshake(net::ssl::stream_base::server,
                                                              buffer_.data(), use_tuple);
    if (hec) {
        // A failed handshake (bad record, no shared version or cipher, the
        // client gave up): nothing to answer in HTTP.
        stream_.close();
        co_return false;
    }
    if (used != buffer_.size()) {
        // Bytes behind the ClientHello before the server has answered: not
        // a TLS client (early data is not enabled).
        stream_.close();
        co_return false;
    }
    buffer_.consume(used);
    co_return true;
}

awaitable<void> session::lingering_close() {
    // Half-close and drain briefly, so that a response just written is not
    // destroyed by a reset caused by request bytes we never read (nginx's
    // lingering_close).
    if (stream_.is_tls()) {
        // The TLS form: close_notify, then up to a second for the peer's (or
        // its close); OpenSSL discards application data that still arrives.
        // A client can then tell a complete close from a truncation.
        stream_.expires_after(std::chrono::seconds(1));
        co_await stream_.tls().async_shutdown(use_tuple);
        stream_.close();
        co_return;
    }
    boost::system::error_code ec;
    stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
    if (ec) {
        stream_.close();
        co_return;
    }
    char scratch[4096];
    std::size_t discarded = 0;
    stream_.expires_after(std::chrono::seconds(1));
    while (discarded < 1024 * 1024) {
        auto [rec, n] = co_await stream_.async_read_some(net::buffer(scratch), use_tuple);
        if (rec) {
            break;
        }
        discarded += n;
    }
    stream_.close();
}

awaitable<void> session::respond_error(unsigned status, std::string_view why, bool close,
                                       const char* retry_after) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "switchyard");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    if (retry_after != nullptr) {
        res.set(http::field::retry_after, retry_after);
    }
    res.body().reserve(64 + why.size());
    res.body().append(std::to_string(status));
    res.body().push_back(' ');
    res.body().append(http::obsolete_reason(static_cast<http::status>(status)));
    res.body().append(": ");
    res.body().append(why);
    res.body().append(" (switchyard)\n");
    res.keep_alive(!close && !drain_);
    res.prepare_payload();
    stream_.expires_after(worker_.config().limit.send_timeout);
    log_.status = status;
    auto [ec, n] = co_await http::async_write(stream_, res, use_tuple);
    if (!ec) {
        log_.bytes_sent = res.body().size();
    }
}

void session::log_access() {
    auto& out = worker_.access_log();
    if (!out.enabled() || log_.status == 0) {
        return;
    }
    access_entry e;
    const auto& req = parser_->get();
    if (log_.parsed) {
        e.has_request = true;
        e.method = req.method_string();
        e.path = req.target();
        // The client's id, or the one add_forwarding set for the upstream.
        if (const auto it = req.find("X-Request-Id"); it != req.end()) {
            e.request_id = it->value();
        }
    }
    e.status = log_.status;
    if (log_.service != nullptr) {
        e.service = log_.service->name;
    }
    if (log_.pool != nullptr) {
        e.pool = log_.pool->name;
    }
    if (log_.endpoint != nullptr) {
        e.endpoint = log_.endpoint->address;
    }
    e.upstream_us = log_.upstream_us;
    e.total_us =
        std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - log_.started).count();
    e.bytes_sent = log_.bytes_sent;
    e.bytes_received = log_.bytes_received;
    out.append(e);
}

awaitable<session::header_outcome> session::read_header(const config::limits& limits) {
    // The parser bounds the field count and each field; the running total
    // below bounds the block; the buffer's max_size bounds what a client can
    // make us hold.
    auto& parser = parser_.emplace(limits.max_headers, limits.max_request_header_bytes);
    const std::uint64_t header_limit =
        limits.max_request_line_bytes + 2 + limits.max_request_header_bytes;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::uint64_t>(header_limit, UINT32_MAX)));
    if (limits.max_request_body_bytes != 0) {
        parser.body_limit(limits.max_request_body_bytes);
    } else {
        parser.body_limit(boost::none);
    }

    header_outcome out;
    bool line_seen = false;
    bool after_lf = false;      // the bytes consumed so far end with LF
    std::size_t consumed = 0;  // header bytes the parser has taken
    const auto fail = [&](unsigned status, std::string_view why) {
        deadline_.disarm();
        out.status = status;
        out.why = why;
        return out;
    };
    const auto line_too_long = [&](std::string_view data) {
        // The request line without its CRLF (SPEC §2: method + target +
        // version) is over the limit.
        const auto eol = data.find('\n');
        const auto line = eol == std::string_view::npos ? data.size() : eol;
        return line > limits.max_request_line_bytes + 1;
    };
    // The whole header must arrive within header_timeout of its first byte
    // (here: of the first read that brought it). The deadline is armed only
    // when a read is needed: a header that came whole costs no timer.
    const auto deadline = clock::now() + limits.header_timeout;
    bool armed = false;
    for (;;) {
        if (buffer_.size() != 0) {
            const std::string_view data(static_cast<const char*>(buffer_.data().data()),
                                        buffer_.size());
            if (!line_seen) {
                if (line_too_long(data)) {
                    co_return fail(414, "request line too long");
                }
                line_seen = data.find('\n') != std::string_view::npos;
            }
            boost::system::error_code ec;
            // Beast takes the start line and each complete field as soon as
            // it can: what it took is consumed now and never seen again.
            const std::size_t used = parser.put(buffer_.data(), ec);
            if (used != 0) {
                // Obsolete line folding (a line starting with SP or HTAB) is
                // refused from the raw bytes, because the parser joins folded
                // lines into one value (SPEC §4). Beast takes a field only
                // once it has seen the byte after its CRLF, so a fold is
                // never split between two pieces except at their boundary.
                const auto piece = data.substr(0, used);
                if ((after_lf && (piece.front() == ' ' || piece.front() == '\t')) ||
                    piece.find("\n ") != std::string_view::npos ||
                    piece.find("\n\t") != std::string_view::npos) {
                    co_return fail(400, "obsolete line folding");
                }
                after_lf = piece.back() == '\n';
                consumed += used;
                buffer_.consume(used);
            }
            if (!ec && parser.is_header_done()) {
                deadline_.disarm();
                out.header_bytes = consumed;
                co_return out;
            }
            if (ec && ec != http::error::need_more) {
                if (ec == http::error::header_limit) {
                    if (!line_seen || line_too_long(data)) {
                        co_return fail(414, "request line too long");
                    }
                    switch (parser.why()) {
                        case request_parser::fault::too_many_fields:
                            co_return fail(431, "too many header fields");
                        case request_parser::fault::field_too_large:
                            co_return fail(431, "header field too large");
                        default:
                            co_return fail(431, "request header too large");
                    }
                }
                if (ec == http::error::body_limit) {
                    co_return fail(413, "request body too large");
                }
                co_return fail(400, ec == http::error::bad_field         ? "invalid header field"
                                    : ec == http::error::bad_value       ? "invalid header value"
                                    : ec == http::error::bad_target      ? "invalid request target"
                                    : ec == http::error::bad_method      ? "invalid method"
                                    : ec == http::error::bad_version     ? "invalid HTTP version"
                                    : ec == http::error::bad_line_ending ? "invalid line ending"
                                                                          : "malformed request");
            }
        }
        if (consumed + buffer_.size() > header_limit) {
            co_return fail(line_seen ? 431 : 414,
                           line_seen ? "request header too large" : "request line too long");
        }
        const std::size_t room = buffer_.max_size() - buffer_.size();
        if (room == 0) {
            co_return fail(line_seen ? 431 : 414,
                           line_seen ? "request header too large" : "request line too long");
        }
        if (!armed) {
            armed = true;
            // Beast's own timeout would close the socket, leaving no way to
            // answer 408: the deadline cancels the read instead.
            stream_.expires_never();
            deadline_.arm(stream_.socket(), deadline - clock::now());
        }
        auto [ec, n] =
            co_await stream_.async_read_some(buffer_.prepare(std::min<std::size_t>(room, 16384)),
                                             use_tuple);
        if (ec) {
            if (deadline_.fired()) {
                co_return fail(408, "request header not received in time");
            }
            deadline_.disarm();
            out.status = header_outcome::silent;
            co_return out;
        }
        buffer_.commit(n);
    }
}

awaitable<bool> session::serve_one() {
    // A copy: a reload may publish new settings, and free these, while this
    // connection waits for its next request; the lease below pins the
    // settings for the rest of the request.
    const config::limits limits = worker_.config().limit;

    if (buffer_.size() == 0) {
        // Idle keep-alive: closed silently after idle_timeout (SPEC §2).
        idle_ = true;
        if (drain_) {
            co_return false;
        }
        // The last request's fields go back to the worker's field cache now
        // rather than at the next request: an idle connection holds none.
        parser_.reset();
        stream_.expires_after(limits.idle_timeout);
        auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), use_tuple);
        if (ec) {
            co_return false;
        }
        buffer_.commit(n);
    }
    idle_ = false;

    log_ = {};
    if (worker_.access_log().enabled()) {
        log_.started = clock::now();
    }
    // Declared before the guard so that the line is written while the
    // snapshot it points into is still pinned.
    std::optional<route_lease> lease;
    struct access_guard {
        session& s;
        ~access_guard() { s.log_access(); }
    } logged{*this};

    const auto head = co_await read_header(limits);
    if (head.status == header_outcome::silent) {
        co_return false;
    }
    if (head.status != 0) {
        co_await respond_error(head.status, head.why, true);
        co_return false;
    }
    auto& parser = *parser_;
    const std::size_t header_bytes = head.header_bytes;

    log_.parsed = true;
    auto& req = parser.get();
    const auto verdict = validate_request(req, header_bytes, limits);
    if (verdict != request_error::ok) {
        co_await respond_error(static_cast<unsigned>(status_of(verdict)), describe(verdict), true);
        co_return false;
    }

    lease.emplace(worker_);
    const route_epoch& epoch = lease->epoch();
    if (const std::string_view t = req.target(); t.starts_with("http://") || t.starts_with("https://")) {
        // Absolute form (RFC 9112 §3.2.2): the target's authority replaces
        // Host, and the upstream gets the origin form (an upstream that
        // ignores the absolute form must not see another host than we routed).
        const auto scheme_end = t.find("//") + 2;
        const auto path_start = t.find_first_of("/?", scheme_end);
        const std::string_view authority =
            t.substr(scheme_end, path_start == std::string_view::npos ? std::string_view::npos
                                                                      : path_start - scheme_end);
        if (authority.empty() || authority.find('@') != std::string_view::npos) {
            co_await respond_error(400, "invalid authority in the request target", true);
            co_return false;
        }
        std::string origin = path_start == std::string_view::npos ? std::string("/")
                                                                  : std::string(t.substr(path_start));
        if (origin.front() == '?') {
            origin.insert(origin.begin(), '/');
        }
        req.set(http::field::host, authority);
        req.target(origin);
    }
    const std::string_view host = req[http::field::host];
    const std::string_view target = req.target();
    const routing::service* svc = epoch.snap->match(host, target);
    if (svc == nullptr) {
        auto& slot = worker_.listener(listener_);
        slot.unrouted.store(slot.unrouted.load(std::memory_order_relaxed) + 1,
                            std::memory_order_relaxed);
        // The request body (if any) is not read: close rather than parse it as
        // the next request.
        const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
        co_await respond_error(404, "no service matches this host and path", has_body);
        co_return !has_body && req.keep_alive() && !drain_;
    }
    log_.service = svc;
    co_return co_await proxy_request(epoch, *svc);
}

awaitable<boost::system::error_code> session::read_body(char* buf, std::size_t size,
                                                        std::chrono::milliseconds timeout,
                                                        bool some) {
    auto& parser = *parser_;
    auto& req = parser.get();
    req.body().data = buf;
    req.body().size = size;
    // Inactivity: a deadline that cancels the read rather than Beast's
    // timeout, which closes the socket (no way to answer 408 then).
    stream_.expires_never();
    deadline_.arm(stream_.socket(), timeout);
    boost::system::error_code rec;
    if (some) {
        std::tie(rec, std::ignore) =
            co_await http::async_read_some(stream_, buffer_, parser, use_tuple);
    } else {
        std::tie(rec, std::ignore) = co_await http::async_read(stream_, buffer_, parser, use_tuple);
    }
    deadline_.disarm();
    if (rec && deadline_.fired()) {
        rec = beast::error::timeout;
    }
    if (rec == http::error::need_buffer) {
        rec = {};
    }
    co_return rec;
}

awaitable<void> session::respond_body_error(boost::system::error_code rec) {
    if (rec == http::error::body_limit) {
        co_await respond_error(413, "request body too large", true);
        co_return;
    }
    if (is_timeout(rec)) {
        co_await respond_error(408, "request body not received in time", true);
        co_return;
    }
    if (rec == net::error::eof || rec == http::error::partial_message ||
        rec == net::error::connection_reset) {
        co_return;  // the client went away: nobody to answer
    }
    // The reason is built before the co_await: GCC 12 destroys temporaries of
    // a conditional inside a co_await expression twice (seen as a double free).
    const auto fault = parser_->why();
    unsigned status = 400;
    std::string why;
    if (fault == request_parser::fault::trailer_too_large) {
        status = 431;
        why = "request trailer too large";
    } else if (fault == request_parser::fault::bad_chunk_extension) {
        why = "invalid chunk extension";
    } else {
        why = "invalid request body framing: " + rec.message();
    }
    co_await respond_error(status, why, true);
}

awaitable<upstream_ptr> session::connect(const routing::endpoint& ep,
                                         const config::upstream_defaults& upstream,
                                         net::ssl::context* tls,
                                         boost::system::error_code& ec) {
    auto conn = std::make_unique<upstream_connection>(
        duplex_stream::tcp_stream_type(worker_.context().get_executor()));
    auto& tcp = conn->stream.tcp();
    tcp.expires_after(upstream.connect_timeout);
    boost::system::error_code aec;
    const auto address = net::ip::make_address(ep.host, aec);
    if (!aec) {
        auto [cec] = co_await tcp.async_connect(net::ip::tcp::endpoint(address, ep.port), use_tuple);
        ec = cec;
    } else {
        // A DNS name: resolved here for now (the control thread's periodic
        // resolution replaces this when it lands).
        net::ip::tcp::resolver resolver(worker_.context());
        auto [rec, results] =
            co_await resolver.async_resolve(ep.host, std::to_string(ep.port), use_tuple);
        if (rec) {
            ec = rec;
            co_return nullptr;
        }
        auto [cec, connected] = co_await tcp.async_connect(results, use_tuple);
        ec = cec;
    }
    if (ec) {
        co_return nullptr;
    }
    conn->stream.socket().set_option(net::ip::tcp::no_delay(true), aec);
    if (upstream.tls.enabled) {
        // The handshake is part of connecting: under the same deadline, and a
        // failure (an unverified certificate included) is a connect error,
        // retried on another endpoint and answered 502.
        if (tls == nullptr) {
            ec = boost::system::errc::make_error_code(boost::system::errc::protocol_not_supported);
            co_return nullptr;
        }
        conn->stream.start_tls(*tls);
        conn->made_with = tls->native_handle();
        SSL* ssl = conn->stream.tls().native_handle();
        if (!transport::prepare_client(ssl, upstream.tls, ep.host).empty()) {
            ec = boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
            co_return nullptr;
        }
        auto [hec] = co_await conn->stream.tls().async_handshake(net::ssl::stream_base::client,
                                                                 use_tuple);
        if (hec) {
            ec = hec;
            co_return nullptr;
        }
    }
    co_return conn;
}

awaitable<bool> session::proxy_request(const route_epoch& epoch, const routing::service& svc) {
    const settings& cfg = *epoch.set;
    auto& parser = *parser_;
    auto& req = parser.get();
    auto& rng = worker_.random();

    // --- Pool choice (SPEC §3.2). ---
    routing::pool_request pick;
    if (!svc.override_header.empty()) {
        if (const auto it = req.find(svc.override_header); it != req.end()) {
            pick.override_value = std::string_view(it->value());
        }
    }
    char issued_id[16];
    bool issue_cookie = false;
    if (svc.affinity_policy) {
        const auto& aff = *svc.affinity_policy;
        std::optional<std::string_view> key;
        const auto cookie_lookup = [&](std::string_view name) -> std::optional<std::string_view> {
            for (auto it = req.find(http::field::cookie);
                 it != req.end() && it->name() == http::field::cookie; ++it) {
                if (auto v = routing::find_cookie(it->value(), name)) {
                    return v;
                }
            }
            return std::nullopt;
        };
        switch (aff.kind) {
            case config::affinity::key_kind::cookie:
                key = cookie_lookup(aff.key_name);
                break;
            case config::affinity::key_kind::header:
                if (const auto it = req.find(aff.key_name); it != req.end() && !it->value().empty()) {
                    key = std::string_view(it->value());
                }
                break;
            case config::affinity::key_kind::client_ip:
                key = std::string_view(client_ip_, client_ip_len_);
                break;
            case config::affinity::key_kind::none:
                break;
        }
        if (!key) {
            key = cookie_lookup(aff.cookie);
        }
        if (!key) {
            static constexpr char hex[] = "0123456789abcdef";
            const auto bits = rng();
            for (int i = 0; i < 16; ++i) {
                issued_id[i] = hex[(bits >> (i * 4)) & 0xf];
            }
            issue_cookie = true;
            key = std::string_view(issued_id, sizeof issued_id);
        }
        pick.affinity_bucket = routing::bucket_of(*key);
    }
    pick.random = rng();
    const auto choice = routing::choose_pool(svc, pick);
    const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
    if (choice.chosen == nullptr) {
        // Counted for the stable pool (SPEC §4: every error response the
        // proxy makes counts for its service and pool).
        worker_.stats(svc.pools[svc.stable].id).record_local_response(503);
        co_await respond_error(503, "no healthy pool can serve this service", has_body, "5");
        co_return !has_body && req.keep_alive() && !drain_;
    }

    // --- The upstream request: the parsed header, rewritten in place. ---
    const bool client_keep_alive_requested = req.keep_alive();
    const unsigned client_version = req.version();
    const auto method = req.method();
    const bool idempotent = is_idempotent(method);
    const auto expect = req.find(http::field::expect);
    const bool has_expect = expect != req.end();
    const bool expect_continue = has_expect && iequals(expect->value(), "100-continue");
    const bool websocket = method == http::verb::get && client_version >= 11 && !has_body &&
                           names_websocket_upgrade(req);
    if (has_expect) {
        req.erase(http::field::expect);
    }
    strip_hop_by_hop(req);
    if (websocket) {
        // The one upgrade that is forwarded (SPEC §4); the rest of the
        // handshake (Sec-WebSocket-*) passes as ordinary fields.
        req.set(http::field::upgrade, "websocket");
        req.set(http::field::connection, "Upgrade");
    }
    const auto hi = rng();
    const auto lo = rng();
    add_forwarding(req, std::string_view(client_ip_, client_ip_len_), tls_, hi, lo);
    req.version(11);
    // HTTP/1.0 may omit Host; the HTTP/1.1 request we send may not: it gets
    // the endpoint's address, as nginx's default proxy_set_header Host does.
    const bool client_sent_host = req.find(http::field::host) != req.end();

    const routing::pool* pool = choice.chosen;
    const bool judged = !choice.overridden;
    const routing::endpoint* failed = nullptr;
    unsigned retries_left = cfg.upstream.retries;
    bool stale_retry_used = false;
    bool stable_retry_used = false;
    bool body_started = false;

    auto body_buffer = worker_.buffers().acquire();
    struct release_buffer {
        worker& w;
        buffer_pool::buffer& b;
        ~release_buffer() { w.buffers().release(std::move(b)); }
    } release{worker_, body_buffer};
    char* const buf = body_buffer.get();
    constexpr std::size_t buf_size = buffer_pool::buffer_size;
    // Where headers and small body pieces are assembled for one write.
    auto out_buffer = worker_.buffers().acquire();
    release_buffer release_out{worker_, out_buffer};
    char* const out = out_buffer.get();
    static_assert(flat_write_limit <= buffer_pool::buffer_size);

    // A chunked body's first chunk header is parsed before any upstream is
    // chosen, so that a malformed one is a 400 that reaches no upstream
    // (SPEC §4). Expect: 100-continue is answered first, or the client would
    // wait for us while we wait for it.
    bool continue_sent = false;
    bool preread = false;
    std::size_t preread_bytes = 0;
    if (parser.chunked() && !parser.is_done()) {
        if (expect_continue && client_version >= 11) {
            static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
            stream_.expires_after(cfg.limit.send_timeout);
            co_await net::async_write(stream_, net::buffer(cont), use_tuple);
            continue_sent = true;
        }
        const auto rec = co_await read_body(buf, buf_size, cfg.limit.body_timeout, true);
        if (rec) {
            co_await respond_body_error(rec);
            co_return false;
        }
        preread = true;
        preread_bytes = buf_size - req.body().size;
    }

    const auto record = [&](const routing::pool& p, clock::time_point started, health::outcome result,
                            unsigned status) {
        const auto now = clock::now();
        const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(now - started);
        log_.upstream_us = latency.count();
        worker_.stats(p.id).record(now, latency, result, status, judged);
    };

    // TLS to upstreams: this worker's client context (null: plain TCP).
    net::ssl::context* const upstream_tls =
        cfg.upstream.tls.enabled ? worker_.upstream_tls() : nullptr;

    bool rechosen = false;
    for (;;) {
        const routing::endpoint* ep = routing::choose_endpoint(
            *pool, svc.balance_policy, worker_.balancer(), rng(), failed);
        if (ep == nullptr && failed == nullptr && !rechosen && !choice.overridden) {
            // The pool lost its last usable endpoint between the pool choice
            // and now (a health check or an ejection on another thread):
            // choose again, which gives its share to the pools that can serve.
            rechosen = true;
            const auto again = routing::choose_pool(svc, pick);
            if (again.chosen != nullptr && again.chosen != pool) {
                pool = again.chosen;
                continue;
            }
        }
        log_.pool = pool;
        log_.endpoint = ep;
        if (ep == nullptr) {
            worker_.stats(pool->id).record_local_response(503);
            co_await respond_error(503, "no healthy endpoint in the chosen pool", true, "5");
            co_return false;
        }
        const auto attempt_started = clock::now();
        if (!client_sent_host) {
            req.set(http::field::host, ep->address);
        }

        // Lease a pooled connection made the way this request's settings
        // say (plain or with this TLS context), else connect.
        upstream_ptr conn;
        if (!cfg.upstream.tls.enabled || upstream_tls != nullptr) {
            conn = worker_.upstreams().lease(
                ep->id, upstream_tls != nullptr ? upstream_tls->native_handle() : nullptr,
                attempt_started);
        }
        const bool reused = conn != nullptr;
        if (!conn) {
            boost::system::error_code cec;
            conn = co_await connect(*ep, cfg.upstream, upstream_tls, cec);
            if (!conn) {
                note_endpoint_result(*ep, true);
                worker_.stats(pool->id).record_upstream_error(
                    is_timeout(cec) ? health::upstream_error_kind::timeout
                                    : health::upstream_error_kind::connect);
                failed = ep;
                if (retries_left > 0) {
                    --retries_left;
                    continue;
                }
                record(*pool, attempt_started, health::outcome::connect_error, 502);
                co_await respond_error(502, "could not connect to an upstream", true);
                co_return false;
            }
        }
        upstream_ = conn.get();
        struct upstream_tracker {
            upstream_connection*& slot;
            ~upstream_tracker() { slot = nullptr; }
        } tracker{upstream_};
        ++worker_.balancer().active(ep->id);
        struct active_guard {
            routing::balancer_state& b;
            routing::endpoint_id id;
            ~active_guard() { --b.active(id); }
        } active{worker_.balancer(), ep->id};

        // --- Send the request header (and body). ---
        req.body().data = nullptr;
        req.body().size = 0;
        req.body().more = !parser.is_done();
        http::request_serializer<http::buffer_body, header_fields> sr{req};
        conn->stream.expires_after(cfg.upstream.read_timeout);
        // A request without a body goes in one write; one with a body sends
        // its header first (the body may be slow, or wait for 100-continue).
        // (No co_await inside a conditional expression: GCC 12 miscompiles
        // temporaries there.)
        send_result head;
        if (const std::size_t whole = format_whole(sr, out, !parser.is_done()); whole != 0) {
            auto [wec, wn] = co_await net::async_write(conn->stream, net::buffer(out, whole), use_tuple);
            head = send_result{wec, true};
        } else {
            head = co_await send_ready(conn->stream, sr, out, !parser.is_done());
        }
        const auto hec = head.ec;
        const auto sent_at = clock::now();
        if (hec) {
            if (reused && !stale_retry_used) {
                // A pooled connection that died between our liveness check and
                // the write: nothing was sent, try once on a fresh one.
                stale_retry_used = true;
                continue;
            }
            note_endpoint_result(*ep, true);
            worker_.stats(pool->id).record_upstream_error(health::upstream_error_kind::reset);
            failed = ep;
            if (retries_left > 0) {
                --retries_left;
                continue;
            }
            record(*pool, attempt_started, health::outcome::reset, 502);
            co_await respond_error(502, "upstream connection failed", true);
            co_return false;
        }

        if (!head.whole && !sr.is_done()) {
            // Streams the body: one fixed buffer, read a piece, write it, so the
            // slower side sets the pace (back-pressure) and memory stays bounded.
            if (expect_continue && has_body && client_version >= 11 && !body_started &&
                !continue_sent) {
                static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
                stream_.expires_after(cfg.limit.send_timeout);
                co_await net::async_write(stream_, net::buffer(cont), use_tuple);
            }
            // Only a real body makes the request unreplayable (a bodiless
            // request still passes here to let the serializer finish).
            body_started = body_started || has_body;
            for (;;) {
                if (preread || !parser.is_done()) {
                    boost::system::error_code rec;
                    if (preread) {
                        // The first piece, read before the upstream was chosen.
                        preread = false;
                        req.body().size = buf_size - preread_bytes;
                    } else {
                        req.body().data = buf;
                        req.body().size = buf_size;
                        rec = co_await read_body(buf, buf_size, cfg.limit.body_timeout, false);
                    }
                    if (rec) {
                        // The client's body is broken or late: the upstream
                        // request is aborted by closing its connection, never
                        // completed (SPEC §4).
                        conn->stream.close();
                        co_await respond_body_error(rec);
                        co_return false;
                    }
                    req.body().size = buf_size - req.body().size;
                    if (req.body().size == 0 && !parser.is_done()) {
                        // Only framing was read (a chunk header): nothing to
                        // send. An empty piece with `more` would go out as a
                        // zero-size chunk, the end of the body upstream.
                        continue;
                    }
                    log_.bytes_received += req.body().size;
                    req.body().data = buf;
                    req.body().more = !parser.is_done();
                } else {
                    req.body().data = nullptr;
                    req.body().size = 0;
                    req.body().more = false;
                }
                conn->stream.expires_after(cfg.upstream.read_timeout);
                const send_result piece_sent = co_await send_ready(conn->stream, sr, out, false);
                const auto wec = piece_sent.ec;
                if (wec) {
                    note_endpoint_result(*ep, true);
                    worker_.stats(pool->id).record_upstream_error(health::upstream_error_kind::reset);
                    record(*pool, attempt_started, health::outcome::reset, 502);
                    co_await respond_error(502, "upstream failed while receiving the request body",
                                           true);
                    co_return false;
                }
                if (sr.is_done()) {
                    break;
                }
            }
        }

        // --- Read the response header. ---
        upbuf_.clear();
        std::optional<http::response_parser<http::buffer_body, field_allocator<char>>> rpo;
        const auto arm_parser = [&] {
            rpo.emplace();
            rpo->body_limit(boost::none);
            rpo->header_limit(64 * 1024);
            if (method == http::verb::head) {
                rpo->skip(true);
            }
        };
        arm_parser();
        conn->stream.expires_after(cfg.upstream.response_timeout);
        boost::system::error_code rec;
        for (;;) {
            while (!parse_buffered(*rpo, upbuf_, rec, header_done)) {
                auto [e, n] = co_await conn->stream.async_read_some(
                    upbuf_.prepare(read_size_for(upbuf_)), use_tuple);
                if (!take_read(*rpo, upbuf_, e, n, rec)) {
                    break;
                }
            }
            if (rec || rpo->get().result_int() < 100 || rpo->get().result_int() >= 200 ||
                rpo->get().result_int() == 101) {
                break;
            }
            // Interim responses (103 Early Hints...) are relayed to HTTP/1.1
            // clients and never end the exchange; 100 Continue was ours to send.
            if (client_version >= 11 && rpo->get().result_int() != 100) {
                http::response<http::empty_body> interim;
                interim.version(11);
                // result_int: Beast's status enum has no 103.
                interim.result(rpo->get().result_int());
                for (const auto& f : rpo->get()) {
                    interim.insert(f.name_string(), f.value());
                }
                stream_.expires_after(cfg.limit.send_timeout);
                co_await http::async_write(stream_, interim, use_tuple);
            }
            arm_parser();
        }
        auto& rp = *rpo;
        rp.eager(true);  // from here each put parses all it can (as http::async_read)
        if (rec) {
            if (is_timeout(rec)) {
                note_endpoint_result(*ep, true);
                worker_.stats(pool->id).record_upstream_error(health::upstream_error_kind::timeout);
                record(*pool, attempt_started, health::outcome::timeout, 504);
                co_await respond_error(504, "upstream did not respond in time", true);
                co_return false;
            }
            const bool reset = rec == http::error::end_of_stream || rec == net::error::eof ||
                               rec == net::error::connection_reset ||
                               rec == http::error::partial_message;
            if (reset && upbuf_.size() == 0) {
                if (reused && !body_started && !stale_retry_used) {
                    stale_retry_used = true;
                    continue;
                }
                note_endpoint_result(*ep, true);
                worker_.stats(pool->id).record_upstream_error(health::upstream_error_kind::reset);
                failed = ep;
                if (!body_started && idempotent && retries_left > 0) {
                    --retries_left;
                    continue;
                }
                record(*pool, attempt_started, health::outcome::reset, 502);
                co_await respond_error(502, "upstream closed the connection before responding",
                                       true);
                co_return false;
            }
            // A malformed response: 502, and that connection is discarded.
            note_endpoint_result(*ep, true);
            record(*pool, attempt_started, health::outcome::reset, 502);
            co_await respond_error(502, "upstream sent a malformed response", true);
            co_return false;
        }

        auto& res = rp.get();
        const unsigned status = res.result_int();
        if (status == 101) {
            if (!websocket || !names_websocket_upgrade(res)) {
                // A switch nobody asked for cannot be relayed as HTTP.
                note_endpoint_result(*ep, true);
                record(*pool, attempt_started, health::outcome::reset, 502);
                co_await respond_error(502, "upstream switched protocols unasked", true);
                co_return false;
            }
            note_endpoint_result(*ep, false);
            record(*pool, sent_at, health::outcome::success, status);
            strip_hop_by_hop(res);
            res.set(http::field::upgrade, "websocket");
            res.set(http::field::connection, "Upgrade");
            res.body().data = nullptr;
            res.body().size = 0;
            res.body().more = false;
            http::response_serializer<http::buffer_body, header_fields> hsr{res};
            stream_.expires_after(cfg.limit.send_timeout);
            log_.status = status;
            auto [uec, un] = co_await http::async_write_header(stream_, hsr, use_tuple);
            if (uec) {
                co_return false;
            }
            co_await tunnel(conn->stream, cfg.limit.idle_timeout, cfg.limit.send_timeout);
            co_return false;
        }
        note_endpoint_result(*ep, status >= 500);

        if (status >= 500 && svc.retry_on_stable && !stable_retry_used && idempotent &&
            !body_started && pool != &svc.pools[svc.stable]) {
            // SPEC §2 retry_on_stable: the failure still counts for its pool.
            record(*pool, attempt_started, health::outcome::upstream_5xx, status);
            stable_retry_used = true;
            pool = &svc.pools[svc.stable];
            failed = nullptr;
            continue;  // conn is dropped: its unread body makes it unusable
        }

        // --- Rewrite the response header and relay. ---
        bool upstream_reusable = res.keep_alive();
        bool client_keep_alive = client_keep_alive_requested && !drain_;
        const bool bodiless = method == http::verb::head || status == 204 || status == 304;
        // The parser's own record of Content-Length: res.has_content_length()
        // counts fields in the case-insensitive tree (~500 instructions).
        const bool read_to_close = !bodiless && !rp.chunked() && !rp.content_length();
        if (read_to_close) {
            // Read to close: never pooled; chunk it for HTTP/1.1 clients,
            // close after it for HTTP/1.0 ones.
            upstream_reusable = false;
            if (client_version < 11) {
                client_keep_alive = false;
            }
        }
        strip_hop_by_hop(res);
        if (rp.chunked() && client_version < 11) {
            res.erase(http::field::transfer_encoding);
            client_keep_alive = false;
        }
        if (read_to_close && client_version >= 11) {
            res.chunked(true);
        }
        if (client_keep_alive) {
            if (client_version < 11) {
                res.set(http::field::connection, "keep-alive");
            }
        } else {
            res.set(http::field::connection, "close");
        }
        if (issue_cookie) {
            std::string cookie;
            cookie.reserve(svc.affinity_policy->cookie.size() + 64);
            cookie.append(svc.affinity_policy->cookie);
            cookie.push_back('=');
            cookie.append(issued_id, sizeof issued_id);
            cookie.append("; Path=/; Max-Age=31536000; HttpOnly");
            res.insert(http::field::set_cookie, cookie);
        }

        res.body().data = nullptr;
        res.body().size = 0;
        res.body().more = !rp.is_done();
        http::response_serializer<http::buffer_body, header_fields> rsr{res};
        stream_.expires_after(cfg.limit.send_timeout);
        log_.status = status;
        if (!rp.is_done() && upbuf_.size() == 0) {
            // The body is not here yet: the header goes now, so that a slow
            // body (a stream, a long poll) does not hold it back. Otherwise
            // the loop below sends header and body in one write.
            const send_result head_sent = co_await send_ready(stream_, rsr, out, true);
            const auto wec = head_sent.ec;
            if (wec) {
                record(*pool, sent_at, outcome_of_status(status), status);
                co_return false;  // the client went away; conn is dropped
            }
        }
        bool upstream_failed = false;
        std::size_t piece = 0;  // body bytes in the serializer's buffer
        auto finished_at = clock::now();
        if (rp.is_done()) {
            finished_at = clock::now();
        }
        while (!rsr.is_done()) {
            if (!rp.is_done()) {
                res.body().data = buf;
                res.body().size = buf_size;
                conn->stream.expires_after(cfg.upstream.read_timeout);
                boost::system::error_code bec;
                while (!parse_buffered(rp, upbuf_, bec, message_done)) {
                    auto [e, n] = co_await conn->stream.async_read_some(
                        upbuf_.prepare(read_size_for(upbuf_)), use_tuple);
                    if (!take_read(rp, upbuf_, e, n, bec)) {
                        break;
                    }
                }
                if (bec == http::error::need_buffer) {
                    bec = {};
                }
                if (bec) {
                    // The upstream died mid-body: the client must not see a
                    // complete-looking message, so its connection is closed.
                    upstream_failed = true;
                    worker_.stats(pool->id).record_upstream_error(
                        is_timeout(bec) ? health::upstream_error_kind::timeout
                                        : health::upstream_error_kind::reset);
                    record(*pool, sent_at,
                           is_timeout(bec) ? health::outcome::timeout : health::outcome::reset,
                           status);
                    break;
                }
                res.body().size = buf_size - res.body().size;
                if (res.body().size == 0 && !rp.is_done()) {
                    continue;  // only framing was read (see the request side)
                }
                res.body().data = buf;
                res.body().more = !rp.is_done();
                piece = res.body().size;
                if (rp.is_done()) {
                    finished_at = clock::now();
                }
            } else {
                res.body().data = nullptr;
                res.body().size = 0;
                res.body().more = false;
                piece = 0;
            }
            stream_.expires_after(cfg.limit.send_timeout);
            send_result sent;
            if (const std::size_t whole = format_whole(rsr, out, false); whole != 0) {
                auto [wec, wn] = co_await net::async_write(stream_, net::buffer(out, whole), use_tuple);
                sent = send_result{wec, true};
            } else {
                sent = co_await send_ready(stream_, rsr, out, false);
            }
            if (sent.ec) {
                record(*pool, sent_at, outcome_of_status(status), status);
                co_return false;  // the client went away
            }
            log_.bytes_sent += piece;
            if (sent.whole) {
                break;
            }
        }
        if (upstream_failed) {
            stream_.close();
            co_return false;
        }
        {
            const auto latency =
                std::chrono::duration_cast<std::chrono::microseconds>(finished_at - sent_at);
            log_.upstream_us = latency.count();
            worker_.stats(pool->id).record(finished_at, latency, outcome_of_status(status), status,
                                           judged);
        }
        // Bytes beyond the response's length are discarded with the connection.
        if (upstream_reusable && rp.is_done() && upbuf_.size() == 0) {
            ++conn->requests;
            worker_.upstreams().give_back(ep->id, std::move(conn),
                                          cfg.upstream.max_idle_per_endpoint);
        }
        co_return client_keep_alive;
    }
}

namespace {

void close_quietly(duplex_stream& s) {
    boost::system::error_code ec;
    s.socket().close(ec);
}
// Half-close: no more bytes this way. TLS cannot half-close its TCP
// connection without ending the session, so it closes (false).
bool shutdown_send(duplex_stream& s) {
    if (s.is_tls()) {
        return false;
    }
    boost::system::error_code ec;
    s.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
    return !ec;
}

struct tunnel_state {
    clock::time_point last_activity = clock::now();
    std::chrono::steady_clock::duration idle;
    std::chrono::steady_clock::duration send_timeout;
    bool closed = false;
};

// Copies bytes one way until the source ends. Idle means no byte either way
// for `idle`: a quiet direction is kept while the other one talks.
awaitable<std::uint64_t> pump(duplex_stream& from, duplex_stream& to, tunnel_state& state) {
    std::array<char, 16 * 1024> buf;
    std::uint64_t total = 0;
    const auto end_both = [&] {
        state.closed = true;
        close_quietly(from);
        close_quietly(to);
    };
    for (;;) {
        from.expires_after(state.idle);
        auto [ec, n] = co_await from.async_read_some(net::buffer(buf), use_tuple);
        if (state.closed) {
            co_return total;
        }
        if (is_timeout(ec) && clock::now() - state.last_activity < state.idle) {
            continue;
        }
        if (ec == net::error::eof && n == 0) {
            if (!shutdown_send(to)) {
                end_both();
            }
            co_return total;
        }
        if (ec && n == 0) {
            end_both();
            co_return total;
        }
        state.last_activity = clock::now();
        to.expires_after(state.send_timeout);
        auto [wec, wn] = co_await net::async_write(to, net::buffer(buf.data(), n), use_tuple);
        if (wec) {
            end_both();
            co_return total;
        }
        total += wn;
    }
}

}  // namespace

awaitable<void> session::tunnel(duplex_stream& upstream,
                                std::chrono::steady_clock::duration idle,
                                std::chrono::steady_clock::duration send_timeout) {
    using namespace net::experimental::awaitable_operators;
    // Bytes that arrived behind the handshakes go first.
    if (upbuf_.size() != 0) {
        stream_.expires_after(send_timeout);
        auto [ec, n] = co_await net::async_write(stream_, upbuf_.data(), use_tuple);
        if (ec) {
            co_return;
        }
        log_.bytes_sent += n;
        upbuf_.consume(n);
    }
    if (buffer_.size() != 0) {
        upstream.expires_after(send_timeout);
        auto [ec, n] = co_await net::async_write(upstream, buffer_.data(), use_tuple);
        if (ec) {
            co_return;
        }
        log_.bytes_received += n;
        buffer_.consume(n);
    }
    tunnel_state state;
    state.idle = idle;
    state.send_timeout = send_timeout;
    auto [down, up] = co_await (pump(stream_, upstream, state) && pump(upstream, stream_, state));
    log_.bytes_received += down;
    log_.bytes_sent += up;
    close_quietly(upstream);
}

}  // namespace switchyard::proxy
