#include "transport/tls_client.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace switchyard::transport {

namespace {

constexpr unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

std::string openssl_reason() {
    const unsigned long first = ERR_peek_error();
    ERR_clear_error();
    const char* reason = first != 0 ? ERR_reason_error_string(first) : nullptr;
    return reason != nullptr ? reason : "no details";
}

bool is_ip_literal(std::string_view name) {
    boost::system::error_code ec;
    boost::asio::ip::make_address(name, ec);
    return !ec;
}

}  // namespace

std::unique_ptr<boost::asio::ssl::context> make_client_context(const config::upstream_tls& cfg) {
    namespace ssl = boost::asio::ssl;
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
        throw client_tls_error("cannot set the minimum TLS version (" + openssl_reason() + ")");
    }
    // Returns 0 on success (unlike most of OpenSSL).
    if (SSL_CTX_set_alpn_protos(native, http11, sizeof http11) != 0) {
        throw client_tls_error("cannot set ALPN (" + openssl_reason() + ")");
    }
    if (cfg.verify) {
        if (SSL_CTX_load_verify_locations(native, cfg.ca_file.c_str(), nullptr) != 1) {
            throw client_tls_error("upstream tls ca_file '" + cfg.ca_file +
                                   "' holds no PEM certificate (" + openssl_reason() + ")");
        }
        SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(native, SSL_VERIFY_NONE, nullptr);
    }
    return ctx;
}

std::string_view verified_name(const config::upstream_tls& cfg, std::string_view host) {
    return cfg.server_name.empty() ? host : std::string_view(cfg.server_name);
}

std::string prepare_client(ssl_st* ssl, const config::upstream_tls& cfg, std::string_view host) {
    const std::string name(verified_name(cfg, host));
    if (is_ip_literal(name)) {
        if (cfg.verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1) {
            return "cannot verify the address " + name + " (" + openssl_reason() + ")";
        }
        return {};
    }
    if (SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
        return "cannot send the server name '" + name + "' (" + openssl_reason() + ")";
    }
    if (cfg.verify) {
        // Partial wildcards ("a*.example.com") are not accepted.
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, name.c_str()) != 1) {
            return "cannot verify the name '" + name + "' (" + openssl_reason() + ")";
        }
    }
    return {};
}

std::string handshake_failure(ssl_st* ssl, const boost::system::error_code& ec) {
    if (ssl != nullptr) {
        const long verify = SSL_get_verify_result(ssl);
        if (verify != X509_V_OK) {
            std::string out = "certificate verify failed: ";
            out += X509_verify_cert_error_string(verify);
            return out;
        }
    }
    if (ec == boost::asio::ssl::error::stream_truncated) {
        return "TLS handshake: the upstream closed the connection";
    }
    return "TLS handshake failed: " + ec.message();
}

}  // namespace switchyard::transport
