#pragma once
// TLS termination contexts for listeners with `tls` (SPEC §2): one
// boost::asio::ssl::context per worker per listener, so that no OpenSSL lock
// is shared between workers on the handshake path.
//
// Each context: the certificate chain and key (config::load_tls_pair, the
// same loader `switchyard check` uses), the minimum protocol version, ALPN
// selecting http/1.1 (a client that offers no ALPN is served; one that offers
// only other protocols gets the no_application_protocol alert, RFC 7301),
// renegotiation off, the stateful session cache off, and stateless session
// tickets encrypted with `ticket_keys`: the server draws keys once per
// listener name and passes the same keys to every worker's context of that
// listener (and keeps them across reloads), so a ticket issued by one worker
// resumes on any other, and never on another listener.
//
// Threads: any; a context is then used by one worker only.
// Failure: make_tls_context throws tls_error with one sentence naming the
// listener and the file at fault.

#include <boost/asio/ssl/context.hpp>

#include <array>
#include <memory>
#include <stdexcept>

#include "config/config.hpp"

namespace switchyard::proxy {

struct tls_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// 16 bytes key name, 32 bytes HMAC secret, 32 bytes AES key
// (SSL_CTX_set_tlsext_ticket_keys).
using ticket_keys = std::array<unsigned char, 80>;

// Fresh random keys (RAND_bytes). Throws tls_error when OpenSSL has no entropy.
ticket_keys make_ticket_keys();

std::unique_ptr<boost::asio::ssl::context> make_tls_context(const config::listener& listener,
                                                            const ticket_keys& keys);

}  // namespace switchyard::proxy
