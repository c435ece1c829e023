#include "proxy/tls.hpp"

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <string>

#include "config/tls.hpp"

namespace switchyard::proxy {

namespace {

constexpr unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
    unsigned char* chosen = nullptr;
    if (SSL_select_next_proto(&chosen, outlen, http11, sizeof http11, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = chosen;
    return SSL_TLSEXT_ERR_OK;
}

std::string openssl_reason() {
    const unsigned long first = ERR_peek_error();
    ERR_clear_error();
    const char* reason = first != 0 ? ERR_reason_error_string(first) : nullptr;
    return reason != nullptr ? reason : "no details";
}

}  // namespace

ticket_keys make_ticket_keys() {
    ticket_keys keys{};
    if (RAND_bytes(keys.data(), static_cast<int>(keys.size())) != 1) {
        throw tls_error("cannot draw random session ticket keys (" + openssl_reason() + ")");
    }
    return keys;
}

std::unique_ptr<boost::asio::ssl::context> make_tls_context(const config::listener& listener,
                                                            const ticket_keys& keys) {
    namespace ssl = boost::asio::ssl;
    const auto fail = [&](const std::string& what) {
        return tls_error("listener " + listener.name + ": " + what);
    };
    if (!listener.tls) {
        throw fail("no tls settings");
    }
    const config::listener_tls& tls = *listener.tls;
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    SSL_CTX* native = ctx->native_handle();
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_compression);
    SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    const int min_version = tls.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(native, min_version) != 1) {
        throw fail("cannot set the minimum TLS version " + tls.min_version + " (" +
                   openssl_reason() + ")");
    }
    if (auto loaded = config::load_tls_pair(native, tls); !loaded) {
        throw fail(loaded.message);
    }
    SSL_CTX_set_alpn_select_cb(native, &select_alpn, nullptr);

    // Resumption without shared state: no server-side cache (its lock would
    // be shared by nobody, but its memory grows per connection), tickets
    // sealed with the process-wide keys instead.
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
    SSL_CTX_clear_options(native, SSL_OP_NO_TICKET);
    // A session of one listener never resumes on another (its own keys
    // already see to that; the id context says so to OpenSSL too).
    unsigned char id_context[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(listener.name.data()), listener.name.size(),
           id_context);
    static_assert(sizeof id_context <= SSL_MAX_SID_CTX_LENGTH);
    SSL_CTX_set_session_id_context(native, id_context, sizeof id_context);
    ticket_keys copy = keys;  // the ctrl takes a non-const pointer
    if (SSL_CTX_set_tlsext_ticket_keys(native, copy.data(), static_cast<long>(copy.size())) != 1) {
        throw fail("cannot set the session ticket keys (" + openssl_reason() + ")");
    }
    std::fill(copy.begin(), copy.end(), 0);
    return ctx;
}

}  // namespace switchyard::proxy
