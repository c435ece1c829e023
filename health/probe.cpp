#include "health/probe.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <array>
#include <exception>
#include <memory>
#include <new>
#include <optional>

#include "transport/tls_client.hpp"

namespace switchyard::health {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using clock = std::chrono::steady_clock;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t header_limit = 16 * 1024;
constexpr std::size_t chunk_size = 8 * 1024;

enum class stage { connect, handshake, send, head, body };

struct exchange_result {
    probe_result result;
    bool keep_alive = false;  // the connection may carry the next probe
    bool stale = false;       // a reused connection was dead before any response byte
};

net::awaitable<bool> cancelled() {
    const net::cancellation_state state = co_await net::this_coro::cancellation_state;
    co_return state.cancelled() != net::cancellation_type::none;
}

std::string timed_out(std::chrono::milliseconds timeout) {
    return "timed out after " + std::to_string(timeout.count()) + "ms";
}

bool is_http_error(const error_code& ec) {
    return ec.category() == http::make_error_code(http::error::bad_version).category();
}

// The one phrase a probe reports for a failed operation.
std::string describe(const error_code& ec, stage at, std::chrono::milliseconds timeout,
                     bool was_cancelled) {
    if (ec == beast::error::timeout) {
        return timed_out(timeout);
    }
    // operation_aborted without a timeout: the owner closed the stream or
    // cancelled the coroutine.
    if (was_cancelled || ec == net::error::operation_aborted) {
        return "cancelled";
    }
    switch (at) {
        case stage::connect:
            if (ec == net::error::connection_refused) {
                return "connect refused";
            }
            return "connect failed: " + ec.message();
        case stage::handshake:
            return "TLS handshake failed: " + ec.message();
        case stage::send:
            return "send failed: " + ec.message();
        case stage::head:
            if (ec == http::error::end_of_stream || ec == net::error::eof ||
                ec == net::error::connection_reset) {
                return "connection closed before response";
            }
            if (is_http_error(ec)) {
                return ec == http::error::partial_message ? "connection closed mid-response"
                                                          : "malformed response";
            }
            return "receive failed: " + ec.message();
        case stage::body:
            if (ec == http::error::partial_message || ec == net::error::eof ||
                ec == net::error::connection_reset) {
                return "connection closed mid-body";
            }
            if (is_http_error(ec)) {
                return "malformed response";
            }
            return "receive failed: " + ec.message();
    }
    return ec.message();
}

std::string host_header(const std::string& host, std::uint16_t port) {
    // An IPv6 literal arrives without brackets (config::parse_host_port).
    if (host.find(':') != std::string::npos) {
        return "[" + host + "]:" + std::to_string(port);
    }
    return host + ":" + std::to_string(port);
}

void close_stream(transport::duplex_stream& s) {
    error_code ignored;
    s.socket().shutdown(tcp::socket::shutdown_both, ignored);
    s.close();
}

// Connects the new stream `ds` to host:port (and completes the TLS handshake
// with `tls`) before `deadline`. Empty on success, else the error phrase.
net::awaitable<std::string> connect_tcp(beast::tcp_stream& s, const std::string& host,
                                        std::uint16_t port, clock::time_point deadline,
                                        std::chrono::milliseconds timeout);

net::awaitable<std::string> connect(transport::duplex_stream& ds, const std::string& host,
                                    std::uint16_t port, clock::time_point deadline,
                                    std::chrono::milliseconds timeout, const probe_tls* tls) {
    if (tls != nullptr && tls->context == nullptr) {
        co_return "TLS to upstreams is unusable: " + tls->error;
    }
    std::string error = co_await connect_tcp(ds.tcp(), host, port, deadline, timeout);
    if (!error.empty() || tls == nullptr) {
        co_return error;
    }
    ds.start_tls(*tls->context);
    SSL* ssl = ds.tls().native_handle();
    error = transport::prepare_client(ssl, tls->settings, host);
    if (!error.empty()) {
        co_return error;
    }
    ds.expires_at(deadline);
    auto [hec] = co_await ds.tls().async_handshake(net::ssl::stream_base::client, use_tuple);
    if (hec) {
        const bool was_cancelled = co_await cancelled();
        if (was_cancelled || hec == beast::error::timeout || hec == net::error::operation_aborted) {
            co_return describe(hec, stage::handshake, timeout, was_cancelled);
        }
        co_return transport::handshake_failure(ssl, hec);
    }
    co_return std::string();
}

net::awaitable<std::string> connect_tcp(beast::tcp_stream& s, const std::string& host,
                                        std::uint16_t port, clock::time_point deadline,
                                        std::chrono::milliseconds timeout) {
    if (co_await cancelled()) {
        co_return "cancelled";
    }
    error_code ec;
    const auto address = net::ip::make_address(host, ec);
    if (!ec) {
        s.expires_at(deadline);
        auto [cec] = co_await s.async_connect(tcp::endpoint(address, port), use_tuple);
        if (cec) {
            const bool was_cancelled = co_await cancelled();
            co_return describe(cec, stage::connect, timeout, was_cancelled);
        }
    } else {
        // getaddrinfo runs on Asio's resolver thread and ignores per-operation
        // cancellation: a timer at the deadline, and the coroutine's own
        // cancellation slot, cancel the resolver so that its completion comes
        // back at once (the lookup itself finishes in the background).
        auto resolver = std::make_shared<tcp::resolver>(s.get_executor());
        const std::weak_ptr<tcp::resolver> weak = resolver;
        net::steady_timer timer(s.get_executor());
        timer.expires_at(deadline);
        timer.async_wait([weak](const error_code& tec) {
            if (auto r = weak.lock(); r && !tec) {
                r->cancel();
            }
        });
        const net::cancellation_state state = co_await net::this_coro::cancellation_state;
        net::cancellation_slot slot = state.slot();
        if (slot.is_connected()) {
            slot.assign([weak](net::cancellation_type) {
                if (auto r = weak.lock()) {
                    r->cancel();
                }
            });
        }
        auto [rec, results] =
            co_await resolver->async_resolve(host, std::to_string(port), use_tuple);
        if (slot.is_connected()) {
            slot.clear();
        }
        timer.cancel();
        const bool was_cancelled = co_await cancelled();
        if (was_cancelled) {
            co_return "cancelled";
        }
        if (rec == net::error::operation_aborted || clock::now() >= deadline) {
            co_return timed_out(timeout);
        }
        if (rec) {
            co_return "cannot resolve " + host + ": " + rec.message();
        }
        s.expires_at(deadline);
        auto [cec, connected] = co_await s.async_connect(results, use_tuple);
        if (cec) {
            const bool cancelled_now = co_await cancelled();
            co_return describe(cec, stage::connect, timeout, cancelled_now);
        }
    }
    s.socket().set_option(tcp::no_delay(true), ec);
    co_return std::string();
}

// Writes `req` on the connected stream and reads the response, discarding at
// most probe_body_limit bytes of body.
net::awaitable<exchange_result> exchange(transport::duplex_stream& s,
                                         const http::request<http::empty_body>& req,
                                         clock::time_point deadline,
                                         std::chrono::milliseconds timeout) {
    exchange_result out;
    s.expires_at(deadline);
    auto [wec, written] = co_await http::async_write(s, req, use_tuple);
    if (wec) {
        out.stale = wec == net::error::broken_pipe || wec == net::error::connection_reset;
        const bool was_cancelled = co_await cancelled();
        out.result.error = describe(wec, stage::send, timeout, was_cancelled);
        co_return out;
    }

    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.header_limit(header_limit);
    parser.body_limit(boost::none);  // bounded below, without failing the probe
    s.expires_at(deadline);
    auto [hec, head_bytes] = co_await http::async_read_header(s, buffer, parser, use_tuple);
    if (hec) {
        out.stale =
            !parser.got_some() && (hec == http::error::end_of_stream || hec == net::error::eof ||
                                   hec == net::error::connection_reset);
        const bool was_cancelled = co_await cancelled();
        out.result.error = describe(hec, stage::head, timeout, was_cancelled);
        co_return out;
    }
    out.result.status = parser.get().result_int();

    std::array<char, chunk_size> chunk;
    std::size_t body_bytes = 0;
    while (!parser.is_done()) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        s.expires_at(deadline);
        auto [bec, got] = co_await http::async_read(s, buffer, parser, use_tuple);
        body_bytes += chunk.size() - parser.get().body().size;
        if (bec == http::error::need_buffer) {
            bec = {};
        }
        if (bec) {
            const bool was_cancelled = co_await cancelled();
            out.result.error = describe(bec, stage::body, timeout, was_cancelled);
            co_return out;
        }
        if (body_bytes > probe_body_limit) {
            // Too large to drain: the status stands, the connection goes.
            co_return out;
        }
    }
    out.keep_alive = parser.keep_alive();
    co_return out;
}

net::awaitable<probe_result> run_probe(std::string host, std::uint16_t port, std::string path,
                                       std::chrono::milliseconds timeout, probe_connection* stream,
                                       std::shared_ptr<const probe_tls> tls) {
    const auto deadline = clock::now() + timeout;
    probe_connection own;
    probe_connection& slot = stream != nullptr ? *stream : own;

    http::request<http::empty_body> req{http::verb::get, path, 11};
    req.set(http::field::host, host_header(host, port));
    req.set(http::field::user_agent, "switchyard-health");
    if (stream == nullptr) {
        req.keep_alive(false);
    }

    if (slot && slot->socket().is_open()) {
        exchange_result r = co_await exchange(*slot, req, deadline, timeout);
        if (!r.stale) {
            if (r.keep_alive) {
                slot->expires_never();
            } else {
                close_stream(*slot);
            }
            co_return std::move(r.result);
        }
        // The upstream closed the idle connection: not the endpoint's fault.
        close_stream(*slot);
    }

    // A fresh connection (a TLS stream cannot be connected twice).
    slot.emplace(beast::tcp_stream(co_await net::this_coro::executor));
    std::string error = co_await connect(*slot, host, port, deadline, timeout, tls.get());
    if (!error.empty()) {
        close_stream(*slot);
        co_return probe_result{0, std::move(error)};
    }
    exchange_result r = co_await exchange(*slot, req, deadline, timeout);
    if (r.keep_alive && stream != nullptr) {
        slot->expires_never();
    } else {
        close_stream(*slot);
    }
    co_return std::move(r.result);
}

}  // namespace

std::shared_ptr<const probe_tls> make_probe_tls(const config::upstream_tls& cfg) {
    if (!cfg.enabled) {
        return nullptr;
    }
    auto out = std::make_shared<probe_tls>();
    out->settings = cfg;
    try {
        out->context = transport::make_client_context(cfg);
    } catch (const std::exception& e) {
        out->error = e.what();
    }
    return out;
}

net::awaitable<probe_result> probe(std::string host, std::uint16_t port, std::string path,
                                   std::chrono::milliseconds timeout, probe_connection* stream,
                                   std::shared_ptr<const probe_tls> tls) {
    try {
        co_return co_await run_probe(std::move(host), port, std::move(path), timeout, stream,
                                     std::move(tls));
    } catch (const std::bad_alloc&) {
        throw;
    } catch (const boost::system::system_error& e) {
        // Raised by co_await after a terminal cancellation when the caller
        // left this_coro::throw_if_cancelled on.
        if (e.code() == net::error::operation_aborted) {
            co_return probe_result{0, "cancelled"};
        }
        co_return probe_result{0, std::string("probe failed: ") + e.what()};
    } catch (const std::exception& e) {
        co_return probe_result{0, std::string("probe failed: ") + e.what()};
    }
}

}  // namespace switchyard::health
