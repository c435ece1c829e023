#pragma once
// Loading a listener's certificate chain and private key into an OpenSSL
// SSL_CTX, shared by config validation (`switchyard check`, startup, reload)
// and the proxy's per-worker TLS contexts, so that what `check` accepts is
// exactly what the listeners load.
//
// Threads: any (no shared state besides OpenSSL's thread-local error queue,
// which it leaves empty). Never prompts for a passphrase: an encrypted key is
// reported as unusable.

#include <string>

#include "config/config.hpp"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace switchyard::config {

enum class tls_fault {
    none,
    cert,      // the certificate file is not a PEM certificate (chain)
    key,       // the key file is not an unencrypted PEM private key
    mismatch,  // the key does not belong to the certificate
};

struct tls_load_result {
    tls_fault fault = tls_fault::none;
    std::string message;  // one sentence naming the file; empty when fault == none
    explicit operator bool() const { return fault == tls_fault::none; }
};

// Loads `tls.cert` (chain) and `tls.key` into `ctx` and checks that they
// match (SSL_CTX_check_private_key).
tls_load_result load_tls_pair(ssl_ctx_st* ctx, const listener_tls& tls);

// The same check on a throwaway context (config validation).
tls_load_result check_tls_pair(const listener_tls& tls);

// Whether `path` (upstream_defaults.tls.ca_file) loads as a CA bundle the way
// the upstream TLS contexts load it: empty when it does, else one sentence.
std::string check_ca_file(const std::string& path);

}  // namespace switchyard::config
