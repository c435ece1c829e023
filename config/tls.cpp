#include "config/tls.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <memory>

namespace switchyard::config {

namespace {

// The first error OpenSSL queued (the root cause), and an empty queue after.
std::string openssl_reason() {
    const unsigned long first = ERR_peek_error();
    ERR_clear_error();
    if (first == 0) {
        return "no details";
    }
    const char* reason = ERR_reason_error_string(first);
    return reason != nullptr ? reason : "error " + std::to_string(first);
}

// A passphrase callback that has none: an encrypted key fails instead of
// OpenSSL's default, which would prompt on the terminal.
int no_passphrase(char*, int, int, void*) { return 0; }

}  // namespace

tls_load_result load_tls_pair(ssl_ctx_st* ctx, const listener_tls& tls) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert.c_str()) != 1) {
        return {tls_fault::cert,
                "tls cert '" + tls.cert + "' is not a PEM certificate chain (" + openssl_reason() +
                    ")"};
    }
    // Parsed apart from the context so that an unreadable key and a key of
    // another certificate give different messages.
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(tls.key.c_str(), "r"), &BIO_free);
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, &no_passphrase, nullptr) : nullptr,
        &EVP_PKEY_free);
    if (!key) {
        return {tls_fault::key, "tls key '" + tls.key +
                                    "' is not an unencrypted PEM private key (" + openssl_reason() +
                                    ")"};
    }
    if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        return {tls_fault::mismatch, "tls key '" + tls.key +
                                         "' does not match the certificate in '" + tls.cert +
                                         "' (" + openssl_reason() + ")"};
    }
    return {};
}

tls_load_result check_tls_pair(const listener_tls& tls) {
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                          &SSL_CTX_free);
    if (!ctx) {
        return {tls_fault::cert, "cannot create a TLS context (" + openssl_reason() + ")"};
    }
    return load_tls_pair(ctx.get(), tls);
}

std::string check_ca_file(const std::string& path) {
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                          &SSL_CTX_free);
    if (!ctx) {
        return "cannot create a TLS context (" + openssl_reason() + ")";
    }
    if (SSL_CTX_load_verify_locations(ctx.get(), path.c_str(), nullptr) != 1) {
        return "ca_file '" + path + "' holds no PEM certificate (" + openssl_reason() + ")";
    }
    return {};
}

}  // namespace switchyard::config
