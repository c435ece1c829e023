// proxy::upstream_pool over real loopback connections: which idle connection
// lease() hands out, when it peeks at the socket first (idle for
// upstream_pool::recheck_after or more), and what the sweep closes. The
// end-to-end views are in proxy_test (an idle connection the upstream closed)
// and upstream_fault_e2e_test (stray bytes, stale connections retried).

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <memory>

#include "proxy/upstream_pool.hpp"
#include "tests/support/client.hpp"

namespace switchyard::proxy {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

constexpr routing::endpoint_id endpoint = 7;

// One pooled connection and the upstream's end of it.
struct pair {
    upstream_ptr conn;
    tcp::socket far;
};

class upstream_pool_test : public ::testing::Test {
protected:
    pair connect() {
        auto conn = std::make_unique<upstream_connection>(
            transport::worker_stream::tcp_stream_type(ioc_.get_executor()));
        conn->stream.socket().connect(acceptor_.local_endpoint());
        tcp::socket far(ioc_);
        acceptor_.accept(far);
        return {std::move(conn), std::move(far)};
    }

    // Until the proxy's end sees the upstream's FIN (or its bytes): the
    // condition itself, read from the kernel, never a sleep.
    static ::testing::AssertionResult until_dead(upstream_connection& c) {
        const int fd = c.stream.socket().native_handle();
        return test::wait_until([&] { return !idle_socket_alive(fd); }, 10s, "the FIN to arrive");
    }

    net::io_context ioc_;
    tcp::acceptor acceptor_{ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
    upstream_pool pool_;
};

TEST_F(upstream_pool_test, an_empty_pool_leases_nothing) {
    EXPECT_EQ(pool_.lease(endpoint, nullptr, clock::now()), nullptr);
}

TEST_F(upstream_pool_test, the_connection_given_back_last_is_leased_first) {
    auto a = connect();
    auto b = connect();
    upstream_connection* const second = b.conn.get();
    pool_.give_back(endpoint, std::move(a.conn), 8);
    pool_.give_back(endpoint, std::move(b.conn), 8);
    EXPECT_EQ(pool_.idle_count(), 2u);
    auto leased = pool_.lease(endpoint, nullptr, clock::now());
    EXPECT_EQ(leased.get(), second);
    EXPECT_EQ(pool_.lease(endpoint + 1, nullptr, clock::now()), nullptr) << "another endpoint's";
    EXPECT_EQ(pool_.idle_count(), 1u);
}

TEST_F(upstream_pool_test, a_connection_made_under_other_tls_settings_is_closed_not_leased) {
    auto a = connect();
    int context = 0;
    a.conn->made_with = &context;
    pool_.give_back(endpoint, std::move(a.conn), 8);
    EXPECT_EQ(pool_.lease(endpoint, nullptr, clock::now()), nullptr);
    EXPECT_EQ(pool_.idle_count(), 0u);
}

TEST_F(upstream_pool_test, beyond_max_idle_a_given_back_connection_is_closed) {
    auto a = connect();
    auto b = connect();
    pool_.give_back(endpoint, std::move(a.conn), 1);
    pool_.give_back(endpoint, std::move(b.conn), 1);
    EXPECT_EQ(pool_.idle_count(), 1u);
    char byte = 0;
    boost::system::error_code ec;
    b.far.read_some(net::buffer(&byte, 1), ec);
    EXPECT_EQ(ec, net::error::eof) << "the second connection was closed";
}

// Idle for recheck_after or more: lease() peeks, and a connection the
// upstream closed is dropped instead of handed out.
TEST_F(upstream_pool_test, a_connection_idle_long_enough_is_checked_and_a_closed_one_dropped) {
    auto a = connect();
    upstream_connection& conn = *a.conn;
    pool_.give_back(endpoint, std::move(a.conn), 8);
    a.far.close();
    ASSERT_TRUE(until_dead(conn));
    EXPECT_EQ(pool_.lease(endpoint, nullptr, conn.idle_since + upstream_pool::recheck_after),
              nullptr);
    EXPECT_EQ(pool_.idle_count(), 0u);
}

TEST_F(upstream_pool_test, a_connection_idle_long_enough_with_stray_bytes_is_dropped) {
    auto a = connect();
    upstream_connection& conn = *a.conn;
    pool_.give_back(endpoint, std::move(a.conn), 8);
    net::write(a.far, net::buffer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38));
    ASSERT_TRUE(until_dead(conn));
    EXPECT_EQ(pool_.lease(endpoint, nullptr, conn.idle_since + 5s), nullptr);
}

TEST_F(upstream_pool_test, a_live_connection_idle_long_enough_passes_the_check) {
    auto a = connect();
    upstream_connection* const raw = a.conn.get();
    pool_.give_back(endpoint, std::move(a.conn), 8);
    EXPECT_EQ(pool_.lease(endpoint, nullptr, raw->idle_since + 5s).get(), raw);
}

// Given back less than recheck_after ago: leased without the syscall, even
// when the upstream's FIN is already there (the request that uses it meets
// the close and, before any response byte, is retried once on a fresh
// connection: upstream_fault_e2e_test's stale_pooled tests).
TEST_F(upstream_pool_test, a_connection_given_back_just_now_is_leased_unchecked) {
    auto a = connect();
    upstream_connection* const raw = a.conn.get();
    pool_.give_back(endpoint, std::move(a.conn), 8);
    a.far.close();
    ASSERT_TRUE(until_dead(*raw));
    const auto just_now = raw->idle_since + upstream_pool::recheck_after - 1us;
    EXPECT_EQ(pool_.lease(endpoint, nullptr, just_now).get(), raw);
}

// The sweep peeks at every idle connection whatever its age.
TEST_F(upstream_pool_test, the_sweep_closes_dead_and_expired_connections) {
    auto dead = connect();
    auto live = connect();
    upstream_connection& gone = *dead.conn;
    pool_.give_back(endpoint, std::move(dead.conn), 8);
    pool_.give_back(endpoint, std::move(live.conn), 8);
    dead.far.close();
    ASSERT_TRUE(until_dead(gone));
    pool_.sweep(1h);
    EXPECT_EQ(pool_.idle_count(), 1u) << "the dead one is closed, the live one kept";
    pool_.sweep(0s);
    EXPECT_EQ(pool_.idle_count(), 0u) << "idle past max_idle_time";
}

}  // namespace
}  // namespace switchyard::proxy
