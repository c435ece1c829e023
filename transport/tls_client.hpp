#pragma once
// The client side of TLS to upstreams (SPEC §2 `upstream_defaults.tls`),
// shared by the data path's upstream connections and the health probes, so
// that a check verifies exactly what a request would.
//
// A client context: TLS 1.2 or newer, ALPN offering http/1.1 only (the proxy
// speaks HTTP/1.1 upstream), compression and renegotiation off, and, when
// `verify` is on, the peer's chain checked against `ca_file`. With `verify`
// off the connection is encrypted but the peer is not authenticated (for
// self-signed test backends; never the default).
//
// Per connection (prepare_client, before the handshake): the name is
// `server_name` when set, else the endpoint's host. A DNS name is sent as
// SNI and must match the certificate (SAN dNSName, wildcards in the left-most
// label only, as OpenSSL's X509_check_host); an IP literal is not sent as SNI
// (RFC 6066 forbids it) and must match a SAN iPAddress.
//
// Contexts are made per thread that connects (one per worker, one for the
// health checker), so no OpenSSL lock is shared between workers.
// Threads: make_client_context any; a context is then used by one thread.
// Failure: make_client_context throws client_tls_error with one sentence
// naming the file at fault; prepare_client returns an error sentence or "".
// handshake_failure turns a failed handshake into a sentence for logs and
// health-check results ("certificate verify failed: self-signed
// certificate", "certificate name mismatch for 'api.internal'", ...).

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "config/config.hpp"

struct ssl_st;

namespace switchyard::transport {

struct client_tls_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::unique_ptr<boost::asio::ssl::context> make_client_context(const config::upstream_tls& cfg);

// The name the peer's certificate must carry: server_name, else `host`.
std::string_view verified_name(const config::upstream_tls& cfg, std::string_view host);

std::string prepare_client(ssl_st* ssl, const config::upstream_tls& cfg, std::string_view host);

std::string handshake_failure(ssl_st* ssl, const boost::system::error_code& ec);

}  // namespace switchyard::transport
