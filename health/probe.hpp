#pragma once
// One HTTP/1.1 GET against an endpoint, with a deadline: the transport of the
// active health checks (checker.hpp) and of the smoke test that precedes a
// blue/green switch (admin/control_plane.cpp).
//
// A probe sends `GET path HTTP/1.1` with `Host: host:port` (an IPv6 literal
// in brackets) and `User-Agent: switchyard-health`, reads the response head,
// then reads and discards the body. One deadline covers name resolution,
// connect, request and response. Only the status matters: the body is read
// through a fixed 8 KiB buffer and never kept; after `probe_body_limit` bytes
// the probe stops reading, reports the status and closes the connection.
//
// TLS: with `tls` (upstream_defaults.tls on) the probe connects with TLS and
// verifies the endpoint exactly as the data path does (transport/tls_client.hpp),
// so a certificate the proxy would refuse fails the check ("certificate
// verify failed: ...") instead of looking healthy.
//
// Keep-alive: with a non-null `stream` that is open, the request goes on that
// connection; if it turns out to be stale (the peer closed it while idle:
// EOF, reset or a broken pipe before any byte of a response), the probe
// retries once on a fresh connection within the same deadline, so an
// upstream's short idle timeout never reads as a failed check. A fresh
// connection is made into *stream, which is left open when the response
// allows keep-alive and closed otherwise. Without a stream the probe uses its
// own connection, asks for `Connection: close`, and closes it.
//
// Threads: a coroutine on any executor; `*stream` must belong to that
// executor and must not be used by anyone else while the probe runs.
// Cancellation: a probe honours a terminal cancellation of the coroutine that
// awaits it (co_spawn with a bound cancellation slot; the caller should set
// this_coro::throw_if_cancelled(false)) and answers error "cancelled". Name
// resolution (getaddrinfo) cannot be interrupted: it is abandoned at the
// deadline or on cancellation, and no connection is made after it.
//
// Failure: never throws, except std::bad_alloc. Every failure is a value:
// `error` holds one short phrase ("connect refused", "timed out after
// 1000ms", "malformed response", "connection closed before response",
// "cannot resolve NAME: REASON", ...). `status` is the status of the response
// head when one arrived, even if its body then failed (error set), and 0
// when no response head arrived.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "transport/stream.hpp"

namespace switchyard::health {

// Bytes of a response body a probe reads before it gives up on the body.
inline constexpr std::size_t probe_body_limit = 64 * 1024;

struct probe_result {
    unsigned status = 0;  // 0 when no response head arrived
    std::string error;    // empty on a complete response; else one short phrase
};

// TLS for probes: the settings and a client context of the thread that runs
// the probes. Shared by the probes of one thread (a shared_ptr keeps it alive
// while any probe uses it).
struct probe_tls {
    config::upstream_tls settings;
    std::unique_ptr<boost::asio::ssl::context> context;  // null: see `error`
    std::string error;  // why the context could not be made
};

// Null when TLS to upstreams is off; otherwise a context for `cfg` (or, when
// the CA file cannot be loaded, one that makes every probe fail saying why).
std::shared_ptr<const probe_tls> make_probe_tls(const config::upstream_tls& cfg);

// A connection kept between probes of one endpoint (empty: none yet).
using probe_connection = std::optional<transport::duplex_stream>;

// See the file comment. `host` is a DNS name or an IPv4/IPv6 literal (no
// brackets); `path` the request target ("/healthz"). `tls` null: plain HTTP.
// A kept `stream` must have been made with the same `tls`.
boost::asio::awaitable<probe_result> probe(std::string host, std::uint16_t port, std::string path,
                                           std::chrono::milliseconds timeout,
                                           probe_connection* stream = nullptr,
                                           std::shared_ptr<const probe_tls> tls = nullptr);

}  // namespace switchyard::health
