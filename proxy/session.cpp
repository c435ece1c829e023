#include "proxy/session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <chrono>
#include <cstring>

#include "proxy/access_log.hpp"
#include "proxy/headers.hpp"
#include "proxy/worker.hpp"

namespace switchyard::proxy {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
using clock = std::chrono::steady_clock;

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

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

}  // namespace

void session::chunk_guard::operator()(std::uint64_t, beast::string_view extensions,
                                      boost::system::error_code& ec) {
    // SPEC §4: a chunk extension over 4 KiB, or one with a bare LF, is a 400.
    if (extensions.size() > 4096 || extensions.find('\n') != beast::string_view::npos) {
        bad = true;
        ec = http::error::bad_chunk_extension;
    }
}

session::session(worker& owner, net::ip::tcp::socket socket, std::size_t listener)
    : worker_(owner), stream_(std::move(socket)), listener_(listener) {
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

net::awaitable<void> session::run() {
    const auto& limits = worker_.config().limit;
    // Bounded: a header larger than the limits never grows the buffer, and a
    // single huge field cannot reach basic_fields' 64 KiB-per-field throw.
    buffer_.max_size(static_cast<std::size_t>(limits.max_request_line_bytes +
                                              limits.max_request_header_bytes + 4096));
    for (;;) {
        if (!co_await serve_one()) {
            break;
        }
    }
    co_await lingering_close();
}

net::awaitable<void> session::lingering_close() {
    // Half-close and drain briefly, so that a response just written is not
    // destroyed by a reset caused by request bytes we never read (nginx's
    // lingering_close).
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

net::awaitable<void> session::respond_error(unsigned status, std::string_view why, bool close,
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

net::awaitable<bool> session::serve_one() {
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
        stream_.expires_after(limits.idle_timeout);
        auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), use_tuple);
        if (ec) {
            co_return false;
        }
        buffer_.commit(n);
    }
    idle_ = false;

    auto& parser = parser_.emplace();
    const std::uint64_t header_limit =
        limits.max_request_line_bytes + limits.max_request_header_bytes;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::uint64_t>(header_limit, UINT32_MAX)));
    if (limits.max_request_body_bytes != 0) {
        parser.body_limit(limits.max_request_body_bytes);
    } else {
        parser.body_limit(boost::none);
    }
    chunk_guard_.bad = false;
    parser.on_chunk_header(chunk_guard_);

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

    // The whole header must arrive within header_timeout of its first byte.
    stream_.expires_after(limits.header_timeout);
    auto [ec, header_bytes] = co_await http::async_read_header(stream_, buffer_, parser, use_tuple);
    if (ec) {
        if (ec == http::error::end_of_stream || ec == net::error::eof ||
            ec == net::error::connection_reset || ec == net::error::operation_aborted) {
            co_return false;
        }
        if (is_timeout(ec)) {
            co_await respond_error(408, "request header not received in time", true);
        } else if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            // 414 when the request line alone is over its limit.
            const auto data = std::string_view(static_cast<const char*>(buffer_.data().data()),
                                               buffer_.size());
            const auto eol = data.find('\n');
            if (eol == std::string_view::npos ? data.size() > limits.max_request_line_bytes
                                              : eol > limits.max_request_line_bytes) {
                co_await respond_error(414, "request line too long", true);
            } else {
                co_await respond_error(431, "request header too large", true);
            }
        } else if (ec == http::error::body_limit) {
            co_await respond_error(413, "request body too large", true);
        } else {
            co_await respond_error(400, ec.message(), true);
        }
        co_return false;
    }

    log_.parsed = true;
    auto& req = parser.get();
    const auto verdict = validate_request(req, header_bytes, limits);
    if (verdict != request_error::ok) {
        co_await respond_error(static_cast<unsigned>(status_of(verdict)), describe(verdict), true);
        co_return false;
    }

    lease.emplace(worker_);
    const route_epoch& epoch = lease->epoch();
    std::string_view host = req[http::field::host];
    std::string_view target = req.target();
    if (target.starts_with("http://") || target.starts_with("https://")) {
        // Absolute form (RFC 9112 §3.2.2): the target's authority is the host.
        const auto scheme_end = target.find("//") + 2;
        const auto path_start = target.find('/', scheme_end);
        host = target.substr(scheme_end, path_start == std::string_view::npos
                                             ? std::string_view::npos
                                             : path_start - scheme_end);
        target = path_start == std::string_view::npos ? std::string_view("/")
                                                      : target.substr(path_start);
    }
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

net::awaitable<upstream_ptr> session::connect(const routing::endpoint& ep,
                                              std::chrono::milliseconds timeout,
                                              boost::system::error_code& ec) {
    auto conn = std::make_unique<upstream_connection>(beast::tcp_stream(worker_.context()));
    conn->stream.expires_after(timeout);
    boost::system::error_code aec;
    const auto address = net::ip::make_address(ep.host, aec);
    if (!aec) {
        auto [cec] = co_await conn->stream.async_connect(net::ip::tcp::endpoint(address, ep.port),
                                                          use_tuple);
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
        auto [cec, connected] = co_await conn->stream.async_connect(results, use_tuple);
        ec = cec;
    }
    if (ec) {
        co_return nullptr;
    }
    conn->stream.socket().set_option(net::ip::tcp::no_delay(true), aec);
    co_return conn;
}

net::awaitable<bool> session::proxy_request(const route_epoch& epoch, const routing::service& svc) {
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
    const bool expect_continue = iequals(req[http::field::expect], "100-continue");
    req.erase(http::field::expect);
    strip_hop_by_hop(req);
    const auto hi = rng();
    const auto lo = rng();
    add_forwarding(req, std::string_view(client_ip_, client_ip_len_), tls_, hi, lo);
    req.version(11);

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

    const auto record = [&](const routing::pool& p, clock::time_point started, health::outcome result,
                            unsigned status) {
        const auto now = clock::now();
        const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(now - started);
        log_.upstream_us = latency.count();
        worker_.stats(p.id).record(now, latency, result, status, judged);
    };

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

        // Lease a pooled connection, else connect.
        upstream_ptr conn = worker_.upstreams().lease(ep->id);
        const bool reused = conn != nullptr;
        if (!conn) {
            boost::system::error_code cec;
            conn = co_await connect(*ep, cfg.upstream.connect_timeout, cec);
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
        http::request_serializer<http::buffer_body> sr{req};
        conn->stream.expires_after(cfg.upstream.read_timeout);
        auto [hec, hn] = co_await http::async_write_header(conn->stream, sr, use_tuple);
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

        if (!sr.is_done()) {
            // Streams the body: one fixed buffer, read a piece, write it, so the
            // slower side sets the pace (back-pressure) and memory stays bounded.
            if (expect_continue && has_body && client_version >= 11 && !body_started) {
                static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
                stream_.expires_after(cfg.limit.send_timeout);
                co_await net::async_write(stream_, net::buffer(cont), use_tuple);
            }
            // Only a real body makes the request unreplayable (a bodiless
            // request still passes here to let the serializer finish).
            body_started = body_started || has_body;
            for (;;) {
                if (!parser.is_done()) {
                    req.body().data = buf;
                    req.body().size = buf_size;
                    stream_.expires_after(cfg.limit.body_timeout);
                    auto [rec, rn] = co_await http::async_read(stream_, buffer_, parser, use_tuple);
                    if (rec == http::error::need_buffer) {
                        rec = {};
                    }
                    if (rec) {
                        // The client's body is broken or late: the upstream
                        // request is aborted by closing its connection, never
                        // completed (SPEC §4).
                        conn->stream.close();
                        if (rec == http::error::body_limit) {
                            co_await respond_error(413, "request body too large", true);
                        } else if (is_timeout(rec)) {
                            co_await respond_error(408, "request body not received in time", true);
                        } else if (rec != net::error::eof && rec != http::error::partial_message &&
                                   rec != net::error::connection_reset) {
                            co_await respond_error(400, chunk_guard_.bad ? "invalid chunk extension"
                                                                         : rec.message(),
                                                   true);
                        }
                        co_return false;
                    }
                    req.body().size = buf_size - req.body().size;
                    log_.bytes_received += req.body().size;
                    req.body().data = buf;
                    req.body().more = !parser.is_done();
                } else {
                    req.body().data = nullptr;
                    req.body().size = 0;
                    req.body().more = false;
                }
                conn->stream.expires_after(cfg.upstream.read_timeout);
                auto [wec, wn] = co_await http::async_write(conn->stream, sr, use_tuple);
                if (wec == http::error::need_buffer) {
                    wec = {};
                }
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
        std::optional<http::response_parser<http::buffer_body>> rpo;
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
        auto [rec, rn] = co_await http::async_read_header(conn->stream, upbuf_, *rpo, use_tuple);
        while (!rec && rpo->get().result_int() >= 100 && rpo->get().result_int() < 200 &&
               rpo->get().result_int() != 101) {
            // Interim responses (103 Early Hints...) are relayed to HTTP/1.1
            // clients and never end the exchange; 100 Continue was ours to send.
            if (client_version >= 11 && rpo->get().result_int() != 100) {
                http::response<http::empty_body> interim{rpo->get().result(), 11};
                for (const auto& f : rpo->get()) {
                    interim.insert(f.name_string(), f.value());
                }
                stream_.expires_after(cfg.limit.send_timeout);
                co_await http::async_write(stream_, interim, use_tuple);
            }
            arm_parser();
            std::tie(rec, rn) = co_await http::async_read_header(conn->stream, upbuf_, *rpo, use_tuple);
        }
        auto& rp = *rpo;
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
        if (!bodiless && !rp.chunked() && !res.has_content_length()) {
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
        if (!bodiless && !rp.chunked() && !res.has_content_length() && client_version >= 11) {
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
        http::response_serializer<http::buffer_body> rsr{res};
        stream_.expires_after(cfg.limit.send_timeout);
        log_.status = status;
        auto [wec, wn] = co_await http::async_write_header(stream_, rsr, use_tuple);
        if (wec) {
            record(*pool, sent_at, outcome_of_status(status), status);
            co_return false;  // the client went away; conn is dropped
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
                auto [bec, bn] = co_await http::async_read(conn->stream, upbuf_, rp, use_tuple);
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
            auto [dec, dn] = co_await http::async_write(stream_, rsr, use_tuple);
            if (dec == http::error::need_buffer) {
                dec = {};
            }
            if (dec) {
                record(*pool, sent_at, outcome_of_status(status), status);
                co_return false;  // the client went away
            }
            log_.bytes_sent += piece;
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

}  // namespace switchyard::proxy
