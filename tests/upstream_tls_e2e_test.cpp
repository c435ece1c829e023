// TLS to upstreams, end to end (SPEC §2 upstream_defaults.tls): the real
// binary in front of an in-process HTTPS upstream whose certificate the test
// issues from its own CA. Requests and health checks are verified against
// `ca_file` and the name (server_name, else the endpoint host), SNI carries
// a DNS name and never an IP literal, connections are kept alive over TLS,
// and a certificate the proxy cannot verify is a 502 that sends the upstream
// no request, with the health check saying why.

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <atomic>
#include <chrono>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e_fixture.hpp"
#include "tests/support/certs.hpp"
#include "tests/support/client.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// An HTTPS/1.1 upstream on 127.0.0.1:0 with the certificate DIR/NAME.crt:
// keep-alive, one thread per connection, answers every request 200 with the
// body "tls-upstream\n" (and /healthz likewise). Records the SNI of each
// handshake ("" when none was sent), completed handshakes, failed ones and
// requests.
class tls_upstream {
public:
    tls_upstream(const temp_dir& dir, const std::string& name)
        : context_(ssl::context::tls_server),
          acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
        context_.use_certificate_chain_file(dir.file(name + ".crt"));
        context_.use_private_key_file(dir.file(name + ".key"), ssl::context::pem);
        SSL_CTX_set_tlsext_servername_callback(context_.native_handle(), &on_server_name);
        SSL_CTX_set_tlsext_servername_arg(context_.native_handle(), this);
        accept_thread_ = std::thread([this] { accept_loop(); });
    }
    ~tls_upstream() {
        stopping_ = true;
        boost::system::error_code ec;
        tcp::socket poke(ioc_);
        poke.connect(acceptor_.local_endpoint(), ec);  // unblocks accept()
        accept_thread_.join();
        {
            std::lock_guard lock(mutex_);
            for (auto* s : open_) {
                s->shutdown(tcp::socket::shutdown_both, ec);
            }
        }
        for (auto& t : threads_) {
            t.join();
        }
    }
    std::string address() const {
        return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
    }
    std::vector<std::string> server_names() const {
        std::lock_guard lock(mutex_);
        return server_names_;
    }
    int handshakes() const { return handshakes_.load(); }
    int failed_handshakes() const { return failed_handshakes_.load(); }
    int requests() const { return requests_.load(); }
    int health_checks() const { return health_checks_.load(); }

private:
    static int on_server_name(SSL* ssl, int*, void* arg) {
        auto* self = static_cast<tls_upstream*>(arg);
        const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        std::lock_guard lock(self->mutex_);
        self->server_names_.emplace_back(name != nullptr ? name : "");
        return SSL_TLSEXT_ERR_OK;
    }

    void accept_loop() {
        while (!stopping_) {
            tcp::socket socket(ioc_);
            boost::system::error_code ec;
            acceptor_.accept(socket, ec);
            if (ec || stopping_) {
                return;
            }
            std::lock_guard lock(mutex_);
            sockets_.push_back(std::move(socket));
            tcp::socket* s = &sockets_.back();
            open_.push_back(s);
            threads_.emplace_back([this, s] { serve(*s); });
        }
    }

    void serve(tcp::socket& socket) {
        ssl::stream<tcp::socket&> stream(socket, context_);
        boost::system::error_code ec;
        stream.handshake(ssl::stream_base::server, ec);
        if (ec) {
            ++failed_handshakes_;
        } else {
            ++handshakes_;
            beast::flat_buffer buffer;
            for (;;) {
                http::request<http::string_body> req;
                http::read(stream, buffer, req, ec);
                if (ec) {
                    break;
                }
                if (req.target() == "/healthz") {
                    ++health_checks_;
                } else {
                    ++requests_;
                }
                http::response<http::string_body> res{http::status::ok, 11};
                res.set(http::field::content_type, "text/plain");
                res.body() = "tls-upstream\n";
                res.keep_alive(req.keep_alive());
                res.prepare_payload();
                http::write(stream, res, ec);
                if (ec || !req.keep_alive()) {
                    break;
                }
            }
        }
        std::lock_guard lock(mutex_);
        std::erase(open_, &socket);
        socket.close(ec);
    }

    ssl::context context_;
    net::io_context ioc_;
    tcp::acceptor acceptor_;
    std::thread accept_thread_;
    std::atomic<bool> stopping_{false};
    mutable std::mutex mutex_;
    std::list<tcp::socket> sockets_;  // stable addresses for the threads
    std::vector<tcp::socket*> open_;
    std::vector<std::thread> threads_;
    std::vector<std::string> server_names_;
    std::atomic<int> handshakes_{0};
    std::atomic<int> failed_handshakes_{0};
    std::atomic<int> requests_{0};
    std::atomic<int> health_checks_{0};
};

class upstream_tls_e2e : public proxy_fixture {
protected:
    static void SetUpTestSuite() {
        certs_ = new temp_dir();
        make_ca(*certs_, "test-ca");
        make_ca(*certs_, "other-ca");
        make_issued(*certs_, "upstream", "test-ca", "DNS:upstream.test,IP:127.0.0.1");
        make_self_signed(*certs_, "self-signed", "DNS:upstream.test,IP:127.0.0.1");
    }
    static void TearDownTestSuite() {
        delete certs_;
        certs_ = nullptr;
    }

    // `tls` is the body of upstream_defaults.tls (flow style keys).
    testing::AssertionResult start_with(const std::string& endpoint, const std::string& tls,
                                        const std::string& extra = {}) {
        options opts;
        opts.top_level = "upstream_defaults:\n  retries: 0\n  tls: {enabled: true, " + tls + "}\n";
        return start(service_yaml("app", "blue", pool_yaml("blue", {endpoint}, 100), extra), opts);
    }
    static std::string ca(const std::string& name) {
        return "ca_file: " + certs_->file(name + ".crt");
    }

    static temp_dir* certs_;
};

temp_dir* upstream_tls_e2e::certs_ = nullptr;

const std::string fast_health =
    "    health_check: {path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 1, "
    "unhealthy_threshold: 1}\n";

TEST_F(upstream_tls_e2e, requests_go_over_verified_tls_with_sni_and_keep_alive) {
    tls_upstream up(*certs_, "upstream");
    ASSERT_TRUE(start_with(up.address(), ca("test-ca") + ", server_name: upstream.test"));
    http_client client(port());
    for (int i = 0; i < 5; ++i) {
        const auto r = client.request("GET", "/anything");
        ASSERT_EQ(r.status, 200u) << r.body;
        EXPECT_EQ(r.body, "tls-upstream\n");
    }
    EXPECT_EQ(up.requests(), 5);
    // One worker's connection carried them all (the client's connection
    // stays on one worker).
    EXPECT_EQ(up.handshakes(), 1);
    const auto names = up.server_names();
    ASSERT_EQ(names.size(), 1u);
    EXPECT_EQ(names[0], "upstream.test");
}

TEST_F(upstream_tls_e2e, an_ip_endpoint_is_verified_by_its_address_and_sends_no_sni) {
    tls_upstream up(*certs_, "upstream");
    ASSERT_TRUE(start_with(up.address(), ca("test-ca")));
    const auto r = http_get(port(), "/");
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(r.body, "tls-upstream\n");
    const auto names = up.server_names();
    ASSERT_EQ(names.size(), 1u);
    EXPECT_EQ(names[0], "") << "an IP literal was sent as SNI";
}

TEST_F(upstream_tls_e2e, a_certificate_from_an_untrusted_ca_is_a_502_and_no_request_is_sent) {
    tls_upstream up(*certs_, "upstream");
    ASSERT_TRUE(start_with(up.address(), ca("other-ca") + ", server_name: upstream.test"));
    const auto r = http_get(port(), "/secret");
    EXPECT_EQ(r.status, 502u) << r.body;
    EXPECT_TRUE(wait_until([&] { return up.failed_handshakes() >= 1; }, 10s, "refused handshake"));
    EXPECT_EQ(up.requests(), 0) << "a request reached an unverified upstream";
}

TEST_F(upstream_tls_e2e, a_name_the_certificate_does_not_carry_is_a_502) {
    tls_upstream up(*certs_, "upstream");
    ASSERT_TRUE(start_with(up.address(), ca("test-ca") + ", server_name: other.test"));
    const auto r = http_get(port(), "/");
    EXPECT_EQ(r.status, 502u) << r.body;
    EXPECT_EQ(up.requests(), 0);
    const auto names = up.server_names();
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names[0], "other.test");
}

TEST_F(upstream_tls_e2e, verify_false_accepts_a_self_signed_upstream) {
    tls_upstream up(*certs_, "self-signed");
    ASSERT_TRUE(start_with(up.address(), "verify: false, server_name: upstream.test"));
    const auto r = http_get(port(), "/");
    EXPECT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(up.requests(), 1);
}

TEST_F(upstream_tls_e2e, a_plain_http_upstream_is_a_502_when_tls_is_on) {
    upstream plain("plain");
    ASSERT_TRUE(start_with(plain.address(), ca("test-ca")));
    const auto r = http_get(port(), "/");
    EXPECT_EQ(r.status, 502u) << r.body;
    EXPECT_EQ(plain.request_count(), 0u) << "a plain request went to the upstream";
}

TEST_F(upstream_tls_e2e, health_checks_use_tls_and_say_why_a_certificate_is_refused) {
    tls_upstream good(*certs_, "upstream");
    tls_upstream bad(*certs_, "self-signed");
    options opts;
    opts.top_level = "upstream_defaults:\n  tls: {enabled: true, " + ca("test-ca") +
                     ", server_name: upstream.test}\n";
    ASSERT_TRUE(start(service_yaml("app", "blue",
                                   pool_yaml("blue", {good.address(), bad.address()}, 100),
                                   fast_health),
                      opts));
    admin_client admin(admin_port());
    ASSERT_TRUE(poll_service(
        admin, "app",
        [&](const json::value& s) {
            return endpoint_flag(s, "blue", bad.address(), "healthy") == false;
        },
        15s, "the endpoint with an untrusted certificate marked unhealthy"));
    EXPECT_TRUE(wait_until([&] { return good.health_checks() >= 2; }, 10s,
                           "health checks over TLS on the good endpoint"));
    EXPECT_EQ(endpoint_flag(admin.service("app"), "blue", good.address(), "healthy"), true);
    EXPECT_EQ(bad.health_checks(), 0) << "a check went through an unverified connection";
    // Every request now goes to the verified endpoint.
    for (int i = 0; i < 10; ++i) {
        const auto r = http_get(port(), "/");
        EXPECT_EQ(r.status, 200u) << r.body;
    }
    EXPECT_EQ(bad.requests(), 0);
    const auto events = admin.request("GET", "/api/v1/events?since=0");
    EXPECT_NE(events.body.find("certificate verify failed"), std::string::npos) << events.body;
}

}  // namespace
}  // namespace switchyard::test
