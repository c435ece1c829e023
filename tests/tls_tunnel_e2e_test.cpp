// TLS termination and WebSocket tunnelling, end to end (SPEC §2 listeners.tls,
// §4 Upgrade): the real binary with a plain and a TLS listener, a certificate
// the test generates with the openssl CLI, an in-process upstream, and for
// WebSocket an in-process Beast WebSocket echo server.

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "tests/support/certs.hpp"
#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

// A WebSocket echo server on 127.0.0.1:0: one thread, one connection at a
// time, echoes every message; `close_after_first` makes it close the
// connection (WebSocket close frame) after echoing one message.
class websocket_echo {
public:
    websocket_echo() : acceptor_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
        thread_ = std::thread([this] { serve(); });
    }
    ~websocket_echo() {
        stopping_ = true;
        boost::system::error_code ec;
        // Unblocks accept() with a connection of our own.
        tcp::socket poke(ioc_);
        poke.connect(acceptor_.local_endpoint(), ec);
        thread_.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    std::string address() const { return "127.0.0.1:" + std::to_string(port()); }
    int handshakes() const { return handshakes_.load(); }
    std::string last_upgrade_target() const {
        std::lock_guard lock(mutex_);
        return target_;
    }

private:
    void serve() {
        while (!stopping_) {
            tcp::socket socket(ioc_);
            boost::system::error_code ec;
            acceptor_.accept(socket, ec);
            if (ec || stopping_) {
                return;
            }
            try {
                websocket::stream<tcp::socket> ws(std::move(socket));
                http::request<http::empty_body> req;
                beast::flat_buffer buffer;
                http::read(ws.next_layer(), buffer, req);
                {
                    std::lock_guard lock(mutex_);
                    target_ = std::string(req.target());
                }
                ws.accept(req);
                ++handshakes_;
                for (;;) {
                    beast::flat_buffer message;
                    ws.read(message);
                    ws.text(ws.got_text());
                    ws.write(message.data());
                }
            } catch (const std::exception&) {
                // The peer closed: wait for the next connection.
            }
        }
    }

    net::io_context ioc_;
    tcp::acceptor acceptor_;
    std::thread thread_;
    std::atomic<bool> stopping_{false};
    std::atomic<int> handshakes_{0};
    mutable std::mutex mutex_;
    std::string target_;
};

class tls_tunnel_e2e : public ::testing::Test {
protected:
    void start(const std::string& min_version = "1.2", const std::string& limits = "") {
        make_self_signed(dir_, "server");
        plain_port_ = free_port();
        do {
            tls_port_ = free_port();
        } while (tls_port_ == plain_port_);
        do {
            admin_port_ = free_port();
        } while (admin_port_ == plain_port_ || admin_port_ == tls_port_);
        const std::string config =
            "listeners:\n"
            "  - name: public\n"
            "    address: 127.0.0.1:" + std::to_string(plain_port_) + "\n"
            "  - name: secure\n"
            "    address: 127.0.0.1:" + std::to_string(tls_port_) + "\n"
            "    tls:\n"
            "      cert: " + dir_.file("server.crt") + "\n"
            "      key: " + dir_.file("server.key") + "\n"
            "      min_version: \"" + min_version + "\"\n"
            "admin:\n"
            "  address: 127.0.0.1:" + std::to_string(admin_port_) + "\n"
            "drain_timeout: 5s\n" + limits +
            "services:\n"
            "  - name: ws\n"
            "    path_prefix: /ws\n"
            "    stable: blue\n"
            "    pools:\n"
            "      blue: { endpoints: [\"" + echo_.address() + "\"], weight: 100 }\n"
            "  - name: app\n"
            "    stable: blue\n"
            "    pools:\n"
            "      blue: { endpoints: [\"" + upstream_.address() + "\"], weight: 100 }\n";
        const auto path = dir_.write("switchyard.yaml", config);
        proxy_.emplace(process::switchyard({"run", "--config", path, "--workers", "2", "--log-level", "warn"}));
        ASSERT_TRUE(wait_until(
            [&] {
                if (!proxy_->running()) {
                    return true;
                }
                try {
                    return http_get(admin_port_, "/readyz").status == 200;
                } catch (const std::exception&) {
                    return false;
                }
            },
            30s, "switchyard to answer /readyz"));
        ASSERT_TRUE(proxy_->running()) << proxy_->errors();
    }

    void TearDown() override {
        if (proxy_) {
            proxy_->signal(SIGTERM);
            EXPECT_EQ(proxy_->wait(30s), 0);
            if (HasFailure()) {
                std::cerr << "--- switchyard stderr ---\n" << proxy_->errors();
            }
        }
    }

    // A client context that trusts the generated certificate only.
    ssl::context client_context(std::optional<int> max_version = std::nullopt) {
        ssl::context ctx(ssl::context::tls_client);
        ctx.load_verify_file(dir_.file("server.crt"));
        ctx.set_verify_mode(ssl::verify_peer);
        if (max_version) {
            SSL_CTX_set_max_proto_version(ctx.native_handle(), *max_version);
        }
        return ctx;
    }

    temp_dir dir_;
    upstream upstream_{"blue"};
    websocket_echo echo_;
    std::uint16_t plain_port_ = 0;
    std::uint16_t tls_port_ = 0;
    std::uint16_t admin_port_ = 0;
    std::optional<process> proxy_;
};

struct https_result {
    unsigned status = 0;
    std::string body;
    std::string alpn;
    bool reused = false;
    SSL_SESSION* session = nullptr;  // owned by the caller (SSL_SESSION_free)
};

// One HTTPS GET on a new connection, verifying the certificate for
// "localhost"; offers ALPN h2 and http/1.1; resumes `resume` when given.
https_result https_get(ssl::context& ctx, std::uint16_t port, const std::string& target,
                       SSL_SESSION* resume = nullptr) {
    net::io_context ioc;
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    beast::get_lowest_layer(stream).expires_after(10s);
    beast::get_lowest_layer(stream).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
    stream.set_verify_callback(ssl::host_name_verification("localhost"));
    static const unsigned char protos[] = "\x02h2\x08http/1.1";
    SSL_set_alpn_protos(stream.native_handle(), protos, sizeof protos - 1);
    if (resume != nullptr) {
        SSL_set_session(stream.native_handle(), resume);
    }
    stream.handshake(ssl::stream_base::client);
    https_result out;
    const unsigned char* alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(stream.native_handle(), &alpn, &alpn_len);
    out.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
    out.reused = SSL_session_reused(stream.native_handle()) == 1;
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "localhost");
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    out.status = res.result_int();
    out.body = res.body();
    // TLS 1.3 tickets arrive after the handshake: read, then take the session.
    out.session = SSL_get1_session(stream.native_handle());
    // As after a clean close: OpenSSL marks the session of a connection freed
    // without a shutdown as not resumable.
    SSL_set_shutdown(stream.native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    return out;
}

TEST_F(tls_tunnel_e2e, https_request_is_proxied_with_alpn_http11_and_forwarded_proto_https) {
    start();
    auto ctx = client_context();
    const auto r = https_get(ctx, tls_port_, "/hello");
    SSL_SESSION_free(r.session);
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.body, "blue\n");
    EXPECT_EQ(r.alpn, "http/1.1");
    const auto seen = upstream_.requests();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].header("X-Forwarded-Proto"), "https");
    // The plain listener still speaks plain HTTP with proto http.
    EXPECT_EQ(http_get(plain_port_, "/hello").status, 200u);
    EXPECT_EQ(upstream_.requests().back().header("X-Forwarded-Proto"), "http");
}

// A connection the proxy closes (here after Connection: close, and after a
// 400) ends with a TLS close_notify: the client reads a clean end of stream,
// not a truncation.
TEST_F(tls_tunnel_e2e, the_proxy_closes_a_tls_connection_with_close_notify) {
    start();
    auto ctx = client_context();
    const auto read_after = [&](const std::string& request) {
        net::io_context ioc;
        beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
        beast::get_lowest_layer(stream).expires_after(10s);
        beast::get_lowest_layer(stream).connect(
            tcp::endpoint(net::ip::make_address("127.0.0.1"), tls_port_));
        SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
        stream.handshake(ssl::stream_base::client);
        net::write(stream, net::buffer(request));
        beast::flat_buffer buffer;
        http::response<http::string_body> res;
        http::read(stream, buffer, res);
        boost::system::error_code ec;
        char byte = 0;
        stream.read_some(net::buffer(&byte, 1), ec);
        return std::make_pair(res.result_int(), ec);
    };
    const auto [status, ec] =
        read_after("GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(status, 200u);
    EXPECT_EQ(ec, net::error::eof) << ec.message();
    const auto [bad_status, bad_ec] = read_after("GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    EXPECT_EQ(bad_status, 400u);
    EXPECT_EQ(bad_ec, net::error::eof) << bad_ec.message();
}

TEST_F(tls_tunnel_e2e, sessions_resume_across_connections_and_workers) {
    start();
    auto ctx = client_context();
    auto first = https_get(ctx, tls_port_, "/");
    ASSERT_NE(first.session, nullptr);
    EXPECT_FALSE(first.reused);
    // Two workers with SO_REUSEPORT: several resumptions land on both; a
    // ticket from one worker must be accepted by the other.
    int reused = 0;
    for (int i = 0; i < 8; ++i) {
        auto again = https_get(ctx, tls_port_, "/", first.session);
        EXPECT_EQ(again.status, 200u);
        reused += again.reused ? 1 : 0;
        SSL_SESSION_free(again.session);
    }
    SSL_SESSION_free(first.session);
    EXPECT_EQ(reused, 8);
}

TEST_F(tls_tunnel_e2e, plain_http_to_the_tls_port_gets_a_plain_400_and_is_closed) {
    start();
    raw_connection conn(tls_port_);
    conn.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    const auto reply = conn.read_until_close(5s);
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 400 ")) << reply;
    EXPECT_TRUE(conn.closed());
    EXPECT_EQ(upstream_.request_count(), 0u);
    // A TLS client still works afterwards.
    auto ctx = client_context();
    auto r = https_get(ctx, tls_port_, "/");
    SSL_SESSION_free(r.session);
    EXPECT_EQ(r.status, 200u);
}

TEST_F(tls_tunnel_e2e, garbage_handshake_is_closed_without_a_crash) {
    start();
    {
        raw_connection conn(tls_port_);
        // A TLS record header (handshake, TLS 1.0) followed by noise.
        conn.send(std::string("\x16\x03\x01\x00\x10", 5) + std::string(16, '\x7f'));
        conn.read_until_close(5s);
        EXPECT_TRUE(conn.closed());
    }
    auto ctx = client_context();
    auto r = https_get(ctx, tls_port_, "/");
    SSL_SESSION_free(r.session);
    EXPECT_EQ(r.status, 200u);
}

TEST_F(tls_tunnel_e2e, min_version_13_refuses_a_tls12_client) {
    start("1.3");
    auto old_client = client_context(TLS1_2_VERSION);
    EXPECT_THROW(https_get(old_client, tls_port_, "/"), boost::system::system_error);
    auto ctx = client_context();
    auto r = https_get(ctx, tls_port_, "/");
    SSL_SESSION_free(r.session);
    EXPECT_EQ(r.status, 200u);
}

TEST_F(tls_tunnel_e2e, websocket_messages_tunnel_both_ways_over_plain_and_tls) {
    start();
    {
        net::io_context ioc;
        websocket::stream<beast::tcp_stream> ws(ioc);
        beast::get_lowest_layer(ws).expires_after(10s);
        beast::get_lowest_layer(ws).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), plain_port_));
        ws.handshake("localhost", "/ws/chat");
        for (const std::string& text : {std::string("hello"), std::string(100000, 'x'), std::string("bye")}) {
            ws.write(net::buffer(text));
            beast::flat_buffer buffer;
            ws.read(buffer);
            EXPECT_EQ(beast::buffers_to_string(buffer.data()), text);
        }
        ws.close(websocket::close_code::normal);
    }
    {
        net::io_context ioc;
        auto ctx = client_context();
        websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ioc, ctx);
        beast::get_lowest_layer(ws).expires_after(10s);
        beast::get_lowest_layer(ws).connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), tls_port_));
        SSL_set_tlsext_host_name(ws.next_layer().native_handle(), "localhost");
        ws.next_layer().handshake(ssl::stream_base::client);
        ws.handshake("localhost", "/ws/secure");
        ws.write(net::buffer(std::string("over tls")));
        beast::flat_buffer buffer;
        ws.read(buffer);
        EXPECT_EQ(beast::buffers_to_string(buffer.data()), "over tls");
        // Not ws.close(): Beast's TLS teardown expects a close_notify, and the
        // proxy ends a TLS tunnel with a plain TCP close (README).
        beast::get_lowest_layer(ws).close();
    }
    EXPECT_EQ(echo_.handshakes(), 2);
    EXPECT_EQ(echo_.last_upgrade_target(), "/ws/secure");
}

TEST_F(tls_tunnel_e2e, an_idle_tunnel_is_closed_after_idle_timeout) {
    start("1.2", "limits:\n  idle_timeout: 500ms\n");
    raw_connection conn(plain_port_);
    conn.send("GET /ws/idle HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    const auto head = conn.read_response(5s);
    ASSERT_TRUE(head.has_value());
    EXPECT_EQ(head->status, 101u);
    EXPECT_EQ(head->header("Upgrade"), "websocket");
    EXPECT_EQ(head->header("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // Nothing is sent either way: the proxy closes the tunnel on its own.
    const auto started = std::chrono::steady_clock::now();
    conn.read_until_close(10s);
    EXPECT_TRUE(conn.closed());
    EXPECT_LT(std::chrono::steady_clock::now() - started, 8s);
}

TEST_F(tls_tunnel_e2e, other_upgrades_are_not_forwarded) {
    start();
    raw_connection conn(plain_port_);
    conn.send("GET /app HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
              "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
    const auto res = conn.read_response(5s);
    ASSERT_TRUE(res.has_value());
    EXPECT_EQ(res->status, 200u);
    const auto seen = upstream_.requests();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].header_count("Upgrade"), 0);
    EXPECT_EQ(seen[0].header_count("HTTP2-Settings"), 0);
}

}  // namespace
}  // namespace switchyard::test
