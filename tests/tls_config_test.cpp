// TLS listener settings (SPEC §2 `tls`, issue 5 item 5, server side):
// - `switchyard check` (and startup, exit 2) accept a good certificate/key
//   pair and reject a key of another certificate, a file that is not PEM and
//   a file that cannot be read, each at the line:col of the value at fault;
// - the per-worker contexts (proxy/tls.hpp) negotiate ALPN http/1.1, accept a
//   client without ALPN, enforce min_version, keep no server session cache,
//   and resume a session on another worker's context (shared ticket keys)
//   but never with another listener's keys.
// Certificates are made by the `openssl` CLI in a temp dir.

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proxy/tls.hpp"
#include "tests/support/certs.hpp"
#include "tests/support/process.hpp"

namespace switchyard::test {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// A self-signed EC certificate and its key (DIR/NAME.crt, DIR/NAME.key).
struct cert_pair {
    std::string cert;
    std::string key;
};

cert_pair make_cert(const temp_dir& dir, const std::string& name) {
    make_self_signed(dir, name);
    return {dir.file(name + ".crt"), dir.file(name + ".key")};
}

class tls_config : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new temp_dir();
        good_ = new cert_pair(make_cert(*dir_, "good"));
        other_ = new cert_pair(make_cert(*dir_, "other"));
    }
    static void TearDownTestSuite() {
        delete good_;
        delete other_;
        delete dir_;
    }

    // A whole config whose one listener has tls {cert, key}; the key's value
    // is on line 6, column 12.
    static std::string config_with(const std::string& cert, const std::string& key) {
        return "listeners:\n"
               "  - name: secure\n"
               "    address: 127.0.0.1:0\n"
               "    tls:\n"
               "      cert: " + cert + "\n"
               "      key: " + key + "\n"
               "admin:\n"
               "  address: 127.0.0.1:0\n"
               "services:\n"
               "  - name: shop\n"
               "    stable: blue\n"
               "    pools:\n"
               "      blue: { endpoints: [\"127.0.0.1:1\"], weight: 100 }\n";
    }

    struct run_result {
        int code;
        std::string out;
        std::string err;
    };
    run_result switchyard(const std::vector<std::string>& args) {
        process p = process::switchyard(args);
        const int code = p.wait(30s);
        return {code, p.output(), p.errors()};
    }

    static temp_dir* dir_;
    static cert_pair* good_;
    static cert_pair* other_;
};

temp_dir* tls_config::dir_ = nullptr;
cert_pair* tls_config::good_ = nullptr;
cert_pair* tls_config::other_ = nullptr;

TEST_F(tls_config, check_accepts_a_matching_pair) {
    const std::string file = dir_->write("good.yaml", config_with(good_->cert, good_->key));
    const auto r = switchyard({"check", "--config", file});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, "OK\n") << r.err;
}

TEST_F(tls_config, check_and_startup_reject_a_key_of_another_certificate_at_its_position) {
    const std::string file = dir_->write("mismatch.yaml", config_with(good_->cert, other_->key));
    const auto r = switchyard({"check", "--config", file});
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(file + ":6:12: tls key '" + other_->key +
                         "' does not match the certificate in '" + good_->cert + "'"),
              std::string::npos)
        << r.err;
    // Startup refuses the same file the same way (exit 2, the same sentence).
    const auto run = switchyard({"run", "--config", file});
    EXPECT_EQ(run.code, 2) << run.err;
    EXPECT_NE(run.err.find(file + ":6:12: tls key"), std::string::npos) << run.err;
}

TEST_F(tls_config, check_rejects_a_file_that_is_not_pem_at_its_position) {
    const std::string junk = dir_->write("junk.pem", "not a certificate\n");
    const std::string file = dir_->write("junk.yaml", config_with(junk, good_->key));
    const auto r = switchyard({"check", "--config", file});
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(file + ":5:13: tls cert '" + junk + "' is not a PEM certificate chain"),
              std::string::npos)
        << r.err;

    const std::string file2 = dir_->write("junk-key.yaml", config_with(good_->cert, junk));
    const auto r2 = switchyard({"check", "--config", file2});
    EXPECT_EQ(r2.code, 2) << r2.err;
    EXPECT_NE(r2.err.find(file2 + ":6:12: tls key '" + junk + "' is not an unencrypted PEM"),
              std::string::npos)
        << r2.err;
}

TEST_F(tls_config, check_rejects_an_unreadable_key_at_its_position) {
    const std::string missing = dir_->file("missing-key.pem");
    const std::string file = dir_->write("missing.yaml", config_with(good_->cert, missing));
    const auto r = switchyard({"check", "--config", file});
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(file + ":6:12: cannot read tls key '" + missing + "'"),
              std::string::npos)
        << r.err;
    // Only the one error: no OpenSSL message piled on an unreadable file.
    EXPECT_EQ(r.err.find("does not match"), std::string::npos) << r.err;
}

// upstream_defaults.tls.ca_file: loaded by check exactly as the upstream
// connections load it; a file without a PEM certificate is refused at the
// value's position, a good one (or any file with verify off) accepted.
TEST_F(tls_config, check_rejects_an_upstream_ca_file_without_a_certificate_at_its_position) {
    const std::string junk = dir_->write("junk-ca.pem", "not a certificate\n");
    const auto with_ca = [&](const std::string& ca, bool verify) {
        return "listeners:\n"
               "  - name: public\n"
               "    address: 127.0.0.1:0\n"
               "admin:\n"
               "  address: 127.0.0.1:0\n"
               "upstream_defaults:\n"
               "  tls:\n"
               "    enabled: true\n"
               "    ca_file: " + ca + "\n"
               "    verify: " + (verify ? "true" : "false") + "\n"
               "services:\n"
               "  - name: shop\n"
               "    stable: blue\n"
               "    pools:\n"
               "      blue: { endpoints: [\"127.0.0.1:1\"], weight: 100 }\n";
    };
    const std::string bad = dir_->write("bad-ca.yaml", with_ca(junk, true));
    const auto r = switchyard({"check", "--config", bad});
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(bad + ":9:14: ca_file '" + junk + "' holds no PEM certificate"),
              std::string::npos)
        << r.err;

    const std::string good = dir_->write("good-ca.yaml", with_ca(good_->cert, true));
    const auto ok = switchyard({"check", "--config", good});
    EXPECT_EQ(ok.code, 0) << ok.err;

    const std::string unverified = dir_->write("unverified.yaml", with_ca(junk, false));
    const auto off = switchyard({"check", "--config", unverified});
    EXPECT_EQ(off.code, 0) << off.err;
}

// --- The contexts themselves, in process ------------------------------------

struct client_options {
    std::vector<std::string> alpn;  // offered, in order; empty: no ALPN extension
    int max_version = 0;            // e.g. TLS1_2_VERSION; 0: the library's maximum
    SSL_SESSION* session = nullptr;  // to resume
};

struct handshake_result {
    bool ok = false;
    std::string error;
    std::string alpn;  // selected; "" when none
    bool reused = false;
    int version = 0;
    std::shared_ptr<SSL_SESSION> session;  // for a later resumption
};

// One TLS connection over loopback: the server side with `server_ctx` on a
// thread, the client here; one byte each way so that TLS 1.3 tickets arrive.
handshake_result handshake(ssl::context& server_ctx, const client_options& opts) {
    net::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(net::ip::address_v4::loopback(), 0));
    std::thread server([&] {
        tcp::socket socket(ioc);
        boost::system::error_code ec;
        acceptor.accept(socket, ec);
        if (ec) {
            return;
        }
        ssl::stream<tcp::socket&> stream(socket, server_ctx);
        stream.handshake(ssl::stream_base::server, ec);
        if (ec) {
            return;
        }
        char byte = 'x';
        net::write(stream, net::buffer(&byte, 1), ec);
        net::read(stream, net::buffer(&byte, 1), ec);
    });
    handshake_result out;
    ssl::context client_ctx(ssl::context::tls_client);
    client_ctx.set_verify_mode(ssl::verify_none);
    if (opts.max_version != 0) {
        SSL_CTX_set_max_proto_version(client_ctx.native_handle(), opts.max_version);
    }
    tcp::socket socket(ioc);
    socket.connect(acceptor.local_endpoint());
    ssl::stream<tcp::socket&> stream(socket, client_ctx);
    SSL* native = stream.native_handle();
    if (!opts.alpn.empty()) {
        std::string wire;
        for (const auto& p : opts.alpn) {
            wire += static_cast<char>(p.size());
            wire += p;
        }
        SSL_set_alpn_protos(native, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    }
    if (opts.session != nullptr) {
        SSL_set_session(native, opts.session);
    }
    boost::system::error_code ec;
    stream.handshake(ssl::stream_base::client, ec);
    char byte = 0;
    if (!ec) {
        net::read(stream, net::buffer(&byte, 1), ec);
    }
    if (ec) {
        out.error = ec.message();
        socket.close();
        server.join();
        return out;
    }
    out.ok = true;
    const unsigned char* proto = nullptr;
    unsigned int length = 0;
    SSL_get0_alpn_selected(native, &proto, &length);
    out.alpn.assign(reinterpret_cast<const char*>(proto), length);
    out.reused = SSL_session_reused(native) == 1;
    out.version = SSL_version(native);
    out.session.reset(SSL_get1_session(native), &SSL_SESSION_free);
    net::write(stream, net::buffer(&byte, 1), ec);
    // A clean close (close_notify queued): OpenSSL marks the session of a
    // connection dropped without one as not resumable.
    SSL_shutdown(native);
    server.join();
    return out;
}

config::listener tls_listener(const cert_pair& pair, std::string min_version = "1.2") {
    config::listener l;
    l.name = "secure";
    l.address = "127.0.0.1:0";
    l.host = "127.0.0.1";
    l.port = 0;
    l.tls = config::listener_tls{pair.cert, pair.key, std::move(min_version)};
    return l;
}

TEST_F(tls_config, context_selects_http11_and_accepts_a_client_without_alpn) {
    const auto keys = proxy::make_ticket_keys();
    auto ctx = proxy::make_tls_context(tls_listener(*good_), keys);
    EXPECT_EQ(SSL_CTX_get_session_cache_mode(ctx->native_handle()), SSL_SESS_CACHE_OFF);

    const auto both = handshake(*ctx, {.alpn = {"h2", "http/1.1"}});
    ASSERT_TRUE(both.ok) << both.error;
    EXPECT_EQ(both.alpn, "http/1.1");

    const auto none = handshake(*ctx, {});
    ASSERT_TRUE(none.ok) << none.error;
    EXPECT_EQ(none.alpn, "");

    const auto h2_only = handshake(*ctx, {.alpn = {"h2"}});
    EXPECT_FALSE(h2_only.ok) << "a client offering only h2 must get no_application_protocol";
}

TEST_F(tls_config, context_enforces_min_version) {
    const auto keys = proxy::make_ticket_keys();
    auto tls13 = proxy::make_tls_context(tls_listener(*good_, "1.3"), keys);
    const auto old_client = handshake(*tls13, {.max_version = TLS1_2_VERSION});
    EXPECT_FALSE(old_client.ok);
    const auto new_client = handshake(*tls13, {});
    ASSERT_TRUE(new_client.ok) << new_client.error;
    EXPECT_EQ(new_client.version, TLS1_3_VERSION);

    auto tls12 = proxy::make_tls_context(tls_listener(*good_, "1.2"), keys);
    const auto r = handshake(*tls12, {.max_version = TLS1_2_VERSION});
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.version, TLS1_2_VERSION);
}

TEST_F(tls_config, a_session_resumes_on_another_workers_context_but_not_with_other_keys) {
    const auto keys = proxy::make_ticket_keys();
    // Two workers' contexts of one listener: built apart, same keys.
    auto worker0 = proxy::make_tls_context(tls_listener(*good_), keys);
    auto worker1 = proxy::make_tls_context(tls_listener(*good_), keys);
    auto elsewhere = proxy::make_tls_context(tls_listener(*good_), proxy::make_ticket_keys());

    for (const int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3" : "TLS 1.2");
        const auto first = handshake(*worker0, {.max_version = version});
        ASSERT_TRUE(first.ok) << first.error;
        EXPECT_FALSE(first.reused);
        ASSERT_TRUE(first.session);

        const auto resumed =
            handshake(*worker1, {.max_version = version, .session = first.session.get()});
        ASSERT_TRUE(resumed.ok) << resumed.error;
        EXPECT_TRUE(resumed.reused) << "the ticket of worker 0 did not resume on worker 1";

        const auto other =
            handshake(*elsewhere, {.max_version = version, .session = first.session.get()});
        ASSERT_TRUE(other.ok) << other.error;
        EXPECT_FALSE(other.reused) << "a ticket resumed under keys that did not seal it";
    }
}

}  // namespace
}  // namespace switchyard::test
