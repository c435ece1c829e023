// transport::basic_duplex_stream's plain-TCP path over real loopback
// sockets: reads and writes straight to the socket under the lazy deadline
// (stream.hpp). What each case shows: a deadline that passes ends a pending
// read with beast::error::timeout and closes the socket; one moved later is
// not enforced early (the timer fires, finds the new deadline and waits
// again); one that passed with nothing pending fails the next operation;
// expires_never() lifts it; and a per-operation cancellation (an awaitable
// `||`) reaches the socket through the wrapped handler.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <tuple>
#include <variant>

#include "transport/stream.hpp"

namespace switchyard::transport {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

struct read_result {
    boost::system::error_code ec;
    std::size_t n = 0;
    clock::time_point at{};  // when it completed
};

class stream_test : public ::testing::Test {
protected:
    stream_test() {
        stream_.emplace(worker_stream::tcp_stream_type(ioc_.get_executor()));
        stream_->socket().connect(acceptor_.local_endpoint());
        acceptor_.accept(far_);
    }

    // Sets a deadline and lets it pass with no operation pending: run()
    // returns once the deadline's timer has fired, the only work there is.
    void let_deadline_lapse(clock::duration d) {
        stream_->expires_after(d);
        ioc_.run();
    }

    // The peer writes `bytes` once `delay` has passed (while a read waits).
    void peer_sends_after(clock::duration delay, std::string bytes) {
        later_.expires_after(delay);
        later_.async_wait([this, bytes = std::move(bytes)](boost::system::error_code) {
            net::write(far_, net::buffer(bytes));
        });
    }

    // Starts one read on the stream and runs the context until it completes.
    read_result read_once() {
        read_result r;
        bool done = false;
        stream_->async_read_some(net::buffer(buf_), [&](boost::system::error_code ec, std::size_t n) {
            r.ec = ec;
            r.n = n;
            r.at = clock::now();
            done = true;
        });
        ioc_.restart();
        while (!done && ioc_.run_one_for(30s) != 0) {
        }
        EXPECT_TRUE(done) << "the read never completed";
        return r;
    }

    net::io_context ioc_;
    tcp::acceptor acceptor_{ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
    std::optional<worker_stream> stream_;
    tcp::socket far_{ioc_};
    net::steady_timer later_{ioc_};
    char buf_[64] = {};
};

TEST_F(stream_test, a_read_past_its_deadline_times_out_and_closes_the_socket) {
    const auto before = clock::now();
    stream_->expires_after(50ms);
    const auto r = read_once();
    EXPECT_EQ(r.ec, beast::error::timeout) << r.ec.message();
    EXPECT_GE(r.at - before, 50ms) << "not before the deadline";
    EXPECT_FALSE(stream_->socket().is_open());
}

TEST_F(stream_test, a_deadline_moved_later_is_not_enforced_early) {
    const auto before = clock::now();
    stream_->expires_after(30ms);  // arms the timer for 30 ms
    stream_->expires_after(10s);   // later: the armed wait stays, fires early, re-arms
    // The peer answers once the first deadline is well past.
    peer_sends_after(200ms, "hello");
    const auto r = read_once();
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.n, 5u);
    EXPECT_EQ(std::string(buf_, r.n), "hello");
    EXPECT_GE(r.at - before, 200ms);
    EXPECT_TRUE(stream_->socket().is_open());
}

TEST_F(stream_test, a_deadline_passed_with_nothing_pending_fails_the_next_operation) {
    let_deadline_lapse(20ms);
    net::write(far_, net::buffer("late", 4));  // data is there, but the deadline passed
    const auto r = read_once();
    EXPECT_EQ(r.ec, beast::error::timeout) << r.ec.message();
    EXPECT_FALSE(stream_->socket().is_open());
}

TEST_F(stream_test, a_new_deadline_after_an_idle_lapse_applies_afresh) {
    let_deadline_lapse(20ms);
    stream_->expires_after(10s);  // what a session does before its next read
    net::write(far_, net::buffer("next", 4));
    const auto r = read_once();
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(std::string(buf_, r.n), "next");
}

TEST_F(stream_test, expires_never_lifts_the_deadline) {
    stream_->expires_after(30ms);
    stream_->expires_never();
    peer_sends_after(150ms, "x");
    const auto r = read_once();
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.n, 1u);
}

TEST_F(stream_test, writes_are_under_the_same_deadline) {
    // The peer never reads: the write fills both socket buffers, then waits.
    stream_->expires_after(200ms);
    std::string big(64 * 1024 * 1024, 'x');
    boost::system::error_code wec;
    bool done = false;
    net::async_write(*stream_, net::buffer(big), [&](boost::system::error_code ec, std::size_t) {
        wec = ec;
        done = true;
    });
    while (!done && ioc_.run_one_for(30s) != 0) {
    }
    ASSERT_TRUE(done);
    EXPECT_EQ(wec, beast::error::timeout) << wec.message();
}

// The tunnel's `||`: when one side ends, the other side's pending read is
// cancelled through the cancellation slot the wrapped handler forwards.
TEST_F(stream_test, an_awaitable_or_cancels_the_pending_read) {
    using namespace net::experimental::awaitable_operators;
    stream_->expires_after(10s);
    std::optional<std::variant<std::tuple<boost::system::error_code, std::size_t>,
                               std::tuple<boost::system::error_code>>>
        result;
    const auto started = clock::now();
    clock::duration took{};
    net::co_spawn(
        ioc_,
        [&]() -> net::awaitable<void> {
            net::steady_timer t(co_await net::this_coro::executor);
            t.expires_after(50ms);
            result = co_await (
                stream_->async_read_some(net::buffer(buf_), net::as_tuple(net::use_awaitable)) ||
                t.async_wait(net::as_tuple(net::use_awaitable)));
            took = clock::now() - started;
        },
        net::detached);
    // (run() would also wait for the stream's deadline timer: it stays armed
    // while idle, by design.)
    while (!result && ioc_.run_one_for(20s) != 0) {
    }
    ASSERT_TRUE(result.has_value()) << "the read was not cancelled";
    EXPECT_EQ(result->index(), 1u) << "the timer won";
    EXPECT_LT(took, 10s) << "cancelled, not timed out";
    EXPECT_TRUE(stream_->socket().is_open()) << "a cancellation does not close";
}

}  // namespace
}  // namespace switchyard::transport
