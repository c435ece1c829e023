#pragma once
// Test certificates, made by the `openssl` CLI in a temp_dir (P-256 keys:
// fast to make). Every function writes DIR/NAME.crt and DIR/NAME.key.
//
// Threads: any. Failure: throws std::runtime_error with openssl's stderr.

#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace switchyard::test {

// Runs `openssl ARGS...`; its stdout.
std::string run_openssl(const std::vector<std::string>& args);

// A self-signed certificate for CN=localhost with `san` (OpenSSL syntax).
void make_self_signed(const temp_dir& dir, const std::string& name,
                      const std::string& san = "DNS:localhost,IP:127.0.0.1");

// A CA certificate (basicConstraints CA:TRUE, keyCertSign).
void make_ca(const temp_dir& dir, const std::string& name);

// A server certificate for `san`, issued by the CA `ca` made by make_ca in
// the same directory.
void make_issued(const temp_dir& dir, const std::string& name, const std::string& ca,
                 const std::string& san);

}  // namespace switchyard::test
