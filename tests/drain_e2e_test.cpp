// Graceful drain through the real binary (SPEC §1): on SIGTERM a request in
// flight completes, new connections are refused, an idle keep-alive
// connection is closed, and the process exits 0 within drain_timeout.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <future>
#include <string>

#include "tests/e2e_fixture.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::test {
namespace {

using namespace std::chrono_literals;

class drain_e2e : public proxy_fixture {};

TEST_F(drain_e2e, a_request_in_flight_completes_new_connections_are_refused_exit_0) {
    upstream slow("blue");
    ASSERT_TRUE(start(service_yaml("shop", "blue", pool_yaml("blue", {slow.address()}, 100))));

    // An idle keep-alive connection, answered once before the drain.
    http_client idle(port());
    ASSERT_EQ(idle.request("GET", "/before").status, 200u);

    slow.set_delay(2000ms);
    auto in_flight = std::async(std::launch::async, [this] {
        http_client client(port());
        return client.request("GET", "/two-seconds", {}, {}, 10s);
    });
    ASSERT_TRUE(wait_until([&] { return slow.request_count() >= 2; }, 5s,
                           "the slow request to reach the upstream"));

    const auto signalled = std::chrono::steady_clock::now();
    // stop(): SIGTERM and wait for the exit code, on a thread of its own.
    auto stopping = std::async(std::launch::async, [this] { return stop(); });

    // New connections are refused once the listeners are closed.
    ASSERT_TRUE(wait_until([&] { return !wait_for_port(port(), 0ms); }, 3s,
                           "the listener to stop accepting"));
    // The idle keep-alive connection is closed by the proxy.
    ASSERT_TRUE(wait_until([&] { return !idle.connected(); }, 3s,
                           "the idle keep-alive connection to be closed"));

    const http_response answered = in_flight.get();
    EXPECT_EQ(answered.status, 200u) << answered.body;
    EXPECT_EQ(answered.header("X-Upstream"), "blue");

    const int code = stopping.get();
    const auto took = std::chrono::steady_clock::now() - signalled;
    EXPECT_EQ(code, 0) << proxy().errors();
    // drain_timeout is 5 s in the fixture: the drain ended when the request did.
    EXPECT_LT(took, 5s + 2s) << "the drain outlasted drain_timeout";
    std::cout << "[ drain ] exit " << code << " after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
}

}  // namespace
}  // namespace switchyard::test
