// Health (SPEC §5): the threshold counter of active checks, passive outlier
// detection (ejection, growing duration, the per-pool cap, return), the HTTP
// probe against real in-process upstreams, and the active checker driving
// endpoint health from those probes. The io_context runs on the test thread;
// every wait polls a condition until a deadline.

#include <gtest/gtest.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "health/checker.hpp"
#include "health/outlier.hpp"
#include "health/probe.hpp"
#include "tests/support/client.hpp"
#include "tests/support/process.hpp"
#include "tests/support/upstream.hpp"

namespace switchyard::health {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
using namespace std::chrono_literals;
using test::upstream;

// ---------------------------------------------------------------------------
// health_counter

config::health_check thresholds(std::uint32_t healthy, std::uint32_t unhealthy) {
    config::health_check p;
    p.healthy_threshold = healthy;
    p.unhealthy_threshold = unhealthy;
    return p;
}

TEST(HealthCounter, TurnsUnhealthyAfterThresholdFailuresInARow) {
    const auto policy = thresholds(2, 3);
    health_counter c;
    EXPECT_TRUE(c.healthy);
    EXPECT_FALSE(c.observe(false, policy));
    EXPECT_FALSE(c.observe(false, policy));
    EXPECT_FALSE(c.observe(true, policy));  // breaks the run
    EXPECT_FALSE(c.observe(false, policy));
    EXPECT_FALSE(c.observe(false, policy));
    EXPECT_TRUE(c.healthy);
    EXPECT_TRUE(c.observe(false, policy));
    EXPECT_FALSE(c.healthy);
    EXPECT_EQ(c.failures, 3u);
    EXPECT_FALSE(c.observe(false, policy));  // already unhealthy: no flip
    EXPECT_FALSE(c.healthy);
}

TEST(HealthCounter, TurnsHealthyAfterThresholdSuccessesInARow) {
    const auto policy = thresholds(2, 1);
    health_counter c;
    EXPECT_TRUE(c.observe(false, policy));
    EXPECT_FALSE(c.healthy);
    EXPECT_FALSE(c.observe(true, policy));
    EXPECT_FALSE(c.observe(false, policy));  // breaks the run
    EXPECT_FALSE(c.observe(true, policy));
    EXPECT_FALSE(c.healthy);
    EXPECT_TRUE(c.observe(true, policy));
    EXPECT_TRUE(c.healthy);
    EXPECT_EQ(c.successes, 2u);
    EXPECT_FALSE(c.observe(true, policy));
}

TEST(HealthCounter, ThresholdOfOneFlipsOnEachChange) {
    const auto policy = thresholds(1, 1);
    health_counter c;
    EXPECT_FALSE(c.observe(true, policy));  // starts healthy
    EXPECT_TRUE(c.observe(false, policy));
    EXPECT_TRUE(c.observe(true, policy));
    EXPECT_TRUE(c.healthy);
}

// ---------------------------------------------------------------------------
// outlier_detector

struct pool_fixture {
    routing::registry ids;
    routing::pool pool;

    explicit pool_fixture(int n) {
        pool.name = "canary";
        for (int i = 0; i < n; ++i) {
            routing::endpoint ep;
            ep.host = "10.0.0." + std::to_string(i + 1);
            ep.port = 80;
            ep.address = ep.host + ":80";
            ep.id = *ids.intern_endpoint("svc", "canary", ep.address);
            ep.health = &ids.health(ep.id);
            pool.endpoints.push_back(ep);
        }
    }
    routing::endpoint_health& health(int i) { return ids.health(pool.endpoints[i].id); }
    void fail(int i, std::uint32_t n) { health(i).consecutive_failures.store(n); }
    bool ejected(int i) { return health(i).ejected.load(); }
};

config::outlier_detection outlier_policy(std::uint32_t percent = 50) {
    config::outlier_detection p;  // 5 failures, 30s
    p.max_ejection_percent = percent;
    return p;
}

TEST(OutlierDetector, EjectsAtConsecutiveFailures) {
    pool_fixture f(4);
    outlier_detector d;
    const auto policy = outlier_policy();
    const auto now = clock::now();

    f.fail(0, 4);
    EXPECT_TRUE(d.scan(f.pool, f.ids, policy, now).empty());
    EXPECT_FALSE(f.ejected(0));

    f.fail(0, 5);
    const auto changes = d.scan(f.pool, f.ids, policy, now);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].id, f.pool.endpoints[0].id);
    EXPECT_EQ(changes[0].address, "10.0.0.1:80");
    EXPECT_TRUE(changes[0].ejected);
    EXPECT_EQ(changes[0].reason, "5 consecutive failures: ejected for 30s (ejection 1)");
    EXPECT_TRUE(f.ejected(0));
    EXPECT_EQ(f.health(0).consecutive_failures.load(), 0u);
    EXPECT_FALSE(f.pool.endpoints[0].usable());
    EXPECT_EQ(d.ejection_count(f.pool.endpoints[0].id), 1u);

    // Nothing more to do while it is out, even if failures in flight count up.
    f.fail(0, 9);
    EXPECT_TRUE(d.scan(f.pool, f.ids, policy, now + 10s).empty());
    EXPECT_TRUE(f.ejected(0));
}

TEST(OutlierDetector, ReturnsWhenTheEjectionIsOverAndDurationGrows) {
    pool_fixture f(2);
    outlier_detector d;
    const auto policy = outlier_policy();
    const auto t0 = clock::now();

    f.fail(1, 7);
    auto changes = d.scan(f.pool, f.ids, policy, t0);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].reason, "7 consecutive failures: ejected for 30s (ejection 1)");

    EXPECT_TRUE(d.scan(f.pool, f.ids, policy, t0 + 30s - 1ms).empty());
    EXPECT_TRUE(f.ejected(1));

    f.fail(1, 3);  // counted while ejected: forgotten on return
    changes = d.scan(f.pool, f.ids, policy, t0 + 30s);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_FALSE(changes[0].ejected);
    EXPECT_EQ(changes[0].reason, "ejection of 30s ended");
    EXPECT_FALSE(f.ejected(1));
    EXPECT_EQ(f.health(1).consecutive_failures.load(), 0u);
    EXPECT_TRUE(f.pool.endpoints[1].usable());

    // Second ejection: twice the base; third: three times.
    const auto t1 = t0 + 40s;
    f.fail(1, 5);
    changes = d.scan(f.pool, f.ids, policy, t1);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].reason, "5 consecutive failures: ejected for 1m (ejection 2)");
    EXPECT_TRUE(d.scan(f.pool, f.ids, policy, t1 + 59s).empty());
    changes = d.scan(f.pool, f.ids, policy, t1 + 60s);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].reason, "ejection of 1m ended");

    const auto t2 = t1 + 61s;
    f.fail(1, 5);
    changes = d.scan(f.pool, f.ids, policy, t2);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].reason, "5 consecutive failures: ejected for 90s (ejection 3)");
    EXPECT_TRUE(d.scan(f.pool, f.ids, policy, t2 + 89s).empty());
    ASSERT_EQ(d.scan(f.pool, f.ids, policy, t2 + 90s).size(), 1u);
    EXPECT_FALSE(f.ejected(1));
}

TEST(OutlierDetector, CapsEjectionsPerPoolTwoEndpoints) {
    pool_fixture f(2);
    outlier_detector d;
    const auto policy = outlier_policy(50);  // floor(2 * 50 %) = 1
    const auto t0 = clock::now();

    f.fail(0, 5);
    f.fail(1, 5);
    auto changes = d.scan(f.pool, f.ids, policy, t0);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_TRUE(f.ejected(0));
    EXPECT_FALSE(f.ejected(1));
    EXPECT_EQ(f.health(1).consecutive_failures.load(), 5u);  // kept for later
    EXPECT_TRUE(d.scan(f.pool, f.ids, policy, t0 + 1s).empty());

    // When the first returns, the second takes the free place in the same scan.
    changes = d.scan(f.pool, f.ids, policy, t0 + 30s);
    ASSERT_EQ(changes.size(), 2u);
    EXPECT_FALSE(changes[0].ejected);
    EXPECT_EQ(changes[0].id, f.pool.endpoints[0].id);
    EXPECT_TRUE(changes[1].ejected);
    EXPECT_EQ(changes[1].id, f.pool.endpoints[1].id);
    EXPECT_FALSE(f.ejected(0));
    EXPECT_TRUE(f.ejected(1));
}

TEST(OutlierDetector, AtLeastOneEndpointMayAlwaysBeEjected) {
    pool_fixture f(2);
    outlier_detector d;
    f.fail(0, 5);
    f.fail(1, 5);
    const auto changes = d.scan(f.pool, f.ids, outlier_policy(0), clock::now());
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_TRUE(f.ejected(0));
    EXPECT_FALSE(f.ejected(1));

    pool_fixture single(1);
    single.fail(0, 5);
    EXPECT_EQ(d.scan(single.pool, single.ids, outlier_policy(50), clock::now()).size(), 1u);
    EXPECT_TRUE(single.ejected(0));
}

TEST(OutlierDetector, CapsEjectionsPerPoolFourEndpoints) {
    pool_fixture f(4);
    outlier_detector d;
    const auto t0 = clock::now();
    for (int i = 0; i < 4; ++i) {
        f.fail(i, 6);
    }
    auto changes = d.scan(f.pool, f.ids, outlier_policy(50), t0);  // floor(4 * 50 %) = 2
    ASSERT_EQ(changes.size(), 2u);
    EXPECT_TRUE(f.ejected(0));
    EXPECT_TRUE(f.ejected(1));
    EXPECT_FALSE(f.ejected(2));
    EXPECT_FALSE(f.ejected(3));

    // 75 %: room for one more (3 of 4).
    changes = d.scan(f.pool, f.ids, outlier_policy(75), t0 + 1s);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_TRUE(f.ejected(2));
    EXPECT_FALSE(f.ejected(3));

    pool_fixture g(4);
    for (int i = 0; i < 4; ++i) {
        g.fail(i, 5);
    }
    EXPECT_EQ(d.scan(g.pool, g.ids, outlier_policy(10), t0).size(), 1u);  // max(1, 0)
}

TEST(OutlierDetector, RetainForgetsRemovedEndpoints) {
    pool_fixture f(2);
    outlier_detector d;
    const auto policy = outlier_policy(100);
    const auto t0 = clock::now();
    f.fail(0, 5);
    f.fail(1, 5);
    ASSERT_EQ(d.scan(f.pool, f.ids, policy, t0).size(), 2u);

    const std::vector<routing::endpoint_id> keep{f.pool.endpoints[0].id};
    d.retain(keep, f.ids);
    EXPECT_TRUE(f.ejected(0));
    EXPECT_FALSE(f.ejected(1));  // returned to service
    EXPECT_EQ(d.ejection_count(f.pool.endpoints[0].id), 1u);
    EXPECT_EQ(d.ejection_count(f.pool.endpoints[1].id), 0u);

    // Back later: a first ejection again.
    f.fail(1, 5);
    const auto changes = d.scan(f.pool, f.ids, policy, t0 + 1s);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].reason, "5 consecutive failures: ejected for 30s (ejection 1)");
}

// ---------------------------------------------------------------------------
// probe

// Runs the io_context on this thread until `condition` holds or `deadline`
// passes.
testing::AssertionResult run_until(net::io_context& ioc, const std::function<bool()>& condition,
                                   std::chrono::milliseconds deadline = 10s,
                                   std::string_view what = "condition") {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (!condition()) {
        if (std::chrono::steady_clock::now() >= end) {
            return testing::AssertionFailure()
                   << what << " not reached within " << deadline.count() << "ms";
        }
        ioc.restart();
        ioc.run_for(5ms);
    }
    return testing::AssertionSuccess();
}

probe_result run_probe(net::io_context& ioc, std::string host, std::uint16_t port, std::string path,
                       std::chrono::milliseconds timeout = 2s,
                       probe_connection* stream = nullptr,
                       std::shared_ptr<const probe_tls> tls = nullptr) {
    std::optional<probe_result> out;
    net::co_spawn(ioc, probe(std::move(host), port, std::move(path), timeout, stream, std::move(tls)),
                  [&out](std::exception_ptr e, probe_result r) {
                      if (e) {
                          ADD_FAILURE() << "probe threw";
                          r.error = "threw";
                      }
                      out = std::move(r);
                  });
    EXPECT_TRUE(run_until(
        ioc, [&] { return out.has_value(); }, timeout + 10s, "probe result"));
    return out.value_or(probe_result{0, "no result"});
}

TEST(Probe, AnswersStatusAndSendsHostAndUserAgent) {
    net::io_context ioc;
    upstream up;
    auto r = run_probe(ioc, "127.0.0.1", up.port(), "/healthz");
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(up.health_check_count(), 1u);

    up.set_status(503);
    r = run_probe(ioc, "127.0.0.1", up.port(), "/status?x=1");
    EXPECT_EQ(r.status, 503u);
    EXPECT_EQ(r.error, "");
    const auto seen = up.requests();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].method, "GET");
    EXPECT_EQ(seen[0].target, "/status?x=1");
    EXPECT_EQ(seen[0].header("host"), "127.0.0.1:" + std::to_string(up.port()));
    EXPECT_EQ(seen[0].header("user-agent"), "switchyard-health");
    EXPECT_EQ(seen[0].header("connection"), "close");  // no stream to keep

    up.set_health_status(500);
    r = run_probe(ioc, "127.0.0.1", up.port(), "/healthz");
    EXPECT_EQ(r.status, 500u);
    EXPECT_EQ(r.error, "");
}

TEST(Probe, ResolvesADnsName) {
    net::io_context ioc;
    upstream up;
    const auto r = run_probe(ioc, "localhost", up.port(), "/healthz");
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.error, "");
}

TEST(Probe, ConnectRefused) {
    net::io_context ioc;
    const auto r = run_probe(ioc, "127.0.0.1", test::free_port(), "/healthz");
    EXPECT_EQ(r.status, 0u);
    EXPECT_EQ(r.error, "connect refused");
}

TEST(Probe, TimesOut) {
    net::io_context ioc;
    upstream up;
    up.set_delay(3s);  // health checks ignore delays: probe another path
    const auto start = std::chrono::steady_clock::now();
    const auto r = run_probe(ioc, "127.0.0.1", up.port(), "/slow", 200ms);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status, 0u);
    EXPECT_EQ(r.error, "timed out after 200ms");
    EXPECT_GE(took, 200ms);
    EXPECT_LT(took, 2s);
}

TEST(Probe, MalformedAndClosedResponses) {
    net::io_context ioc;
    upstream up;
    up.set_fault(upstream::fault::bad_status_line);
    auto r = run_probe(ioc, "127.0.0.1", up.port(), "/");
    EXPECT_EQ(r.status, 0u);
    EXPECT_EQ(r.error, "malformed response");

    up.set_fault(upstream::fault::close_before_response);
    r = run_probe(ioc, "127.0.0.1", up.port(), "/");
    EXPECT_EQ(r.status, 0u);
    EXPECT_EQ(r.error, "connection closed before response");

    up.set_body(std::string(1000, 'b'));
    up.set_fault(upstream::fault::close_mid_body);
    r = run_probe(ioc, "127.0.0.1", up.port(), "/");
    EXPECT_EQ(r.status, 200u);  // the head arrived
    EXPECT_EQ(r.error, "connection closed mid-body");
}

TEST(Probe, ReusesAKeepAliveConnection) {
    net::io_context ioc;
    upstream up;
    probe_connection stream;
    for (int i = 0; i < 3; ++i) {
        const auto r = run_probe(ioc, "127.0.0.1", up.port(), "/healthz", 2s, &stream);
        EXPECT_EQ(r.status, 200u);
        EXPECT_EQ(r.error, "");
        EXPECT_TRUE((stream && stream->socket().is_open()));
    }
    EXPECT_EQ(up.health_check_count(), 3u);
    EXPECT_EQ(up.connection_count(), 1u);
}

TEST(Probe, RetriesOnceWhenTheKeptConnectionWentStale) {
    net::io_context ioc;
    upstream up;
    probe_connection stream;
    ASSERT_EQ(run_probe(ioc, "127.0.0.1", up.port(), "/healthz", 2s, &stream).status, 200u);
    // The upstream may not be back to waiting for a request yet: retry.
    ASSERT_TRUE(test::wait_until(
        [&] {
            up.close_idle_connections();
            return up.open_connections() == 0;
        },
        5s, "closed"));
    const auto r = run_probe(ioc, "127.0.0.1", up.port(), "/healthz", 2s, &stream);
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(up.connection_count(), 2u);
    EXPECT_TRUE((stream && stream->socket().is_open()));
}

TEST(Probe, BoundsTheBodyAndClosesALargeOne) {
    net::io_context ioc;
    upstream up;
    up.set_response_size(1024 * 1024);
    probe_connection stream;
    const auto r = run_probe(ioc, "127.0.0.1", up.port(), "/big", 2s, &stream);
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.error, "");
    EXPECT_FALSE((stream && stream->socket().is_open()));

    up.set_response_size(probe_body_limit - 100);  // drained, connection kept
    const auto small = run_probe(ioc, "127.0.0.1", up.port(), "/big", 2s, &stream);
    EXPECT_EQ(small.status, 200u);
    EXPECT_TRUE((stream && stream->socket().is_open()));
    EXPECT_EQ(up.connection_count(), 2u);
}

TEST(Probe, HonoursCancellation) {
    net::io_context ioc;
    upstream up;
    up.set_fault(upstream::fault::stall);
    net::cancellation_signal cancel;
    std::optional<probe_result> out;
    net::co_spawn(
        ioc, probe("127.0.0.1", up.port(), "/", 10s),
        net::bind_cancellation_slot(cancel.slot(), [&out](std::exception_ptr e, probe_result r) {
            EXPECT_FALSE(e);
            out = std::move(r);
        }));
    ASSERT_TRUE(run_until(
        ioc, [&] { return up.request_count() == 1; }, 5s, "request sent"));
    const auto start = std::chrono::steady_clock::now();
    cancel.emit(net::cancellation_type::terminal);
    ASSERT_TRUE(run_until(
        ioc, [&] { return out.has_value(); }, 5s, "probe result"));
    EXPECT_EQ(out->error, "cancelled");
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

// ---------------------------------------------------------------------------
// active_checker

struct checker_fixture {
    net::io_context ioc;
    routing::registry ids;
    std::vector<health_change> changes;
    active_checker checker{ioc.get_executor(),
                           [this](const health_change& c) { changes.push_back(c); }};

    check_target target(const std::string& pool, const std::string& host, std::uint16_t port) {
        check_target t;
        t.address = host + ":" + std::to_string(port);
        t.id = *ids.intern_endpoint("svc", pool, t.address);
        t.service = "svc";
        t.pool = pool;
        t.host = host;
        t.port = port;
        t.health = &ids.health(t.id);
        t.policy.interval = 50ms;
        t.policy.timeout = 1s;
        t.policy.healthy_threshold = 2;
        t.policy.unhealthy_threshold = 3;
        return t;
    }
    check_target target(const std::string& pool, const upstream& up) {
        return target(pool, "127.0.0.1", up.port());
    }
    testing::AssertionResult run(const std::function<bool()>& condition, std::string_view what) {
        return run_until(ioc, condition, 10s, what);
    }
    // Stops the checker and runs the io_context until every coroutine ended.
    void finish() {
        checker.stop();
        ioc.restart();
        ioc.run_for(5s);
        EXPECT_TRUE(ioc.stopped()) << "coroutines still running after stop()";
    }
};

TEST(ActiveChecker, MarksUnhealthyThenHealthyAgainWithReasons) {
    checker_fixture f;
    upstream up;
    const auto t = f.target("blue", up);
    f.checker.update({t});
    EXPECT_EQ(f.checker.target_count(), 1u);

    ASSERT_TRUE(f.run([&] { return up.health_check_count() >= 3; }, "3 checks"));
    EXPECT_TRUE(f.changes.empty());
    EXPECT_TRUE(t.health->healthy.load());

    up.set_health_status(500);
    ASSERT_TRUE(f.run([&] { return !f.changes.empty(); }, "unhealthy"));
    ASSERT_EQ(f.changes.size(), 1u);
    EXPECT_FALSE(f.changes[0].healthy);
    EXPECT_FALSE(t.health->healthy.load());
    EXPECT_EQ(f.changes[0].target.id, t.id);
    EXPECT_EQ(f.changes[0].target.address, t.address);
    EXPECT_EQ(f.changes[0].target.pool, "blue");
    EXPECT_EQ(f.changes[0].reason,
              "3 health checks failed in a row (last: status 500 on GET /healthz)");

    up.set_health_status(200);
    ASSERT_TRUE(f.run([&] { return f.changes.size() >= 2; }, "healthy again"));
    ASSERT_EQ(f.changes.size(), 2u);
    EXPECT_TRUE(f.changes[1].healthy);
    EXPECT_TRUE(t.health->healthy.load());
    EXPECT_EQ(f.changes[1].reason, "2 health checks passed in a row");

    // Every check went over one keep-alive connection.
    EXPECT_EQ(up.connection_count(), 1u);
    f.finish();
    EXPECT_EQ(f.changes.size(), 2u);
}

TEST(ActiveChecker, ConnectErrorsCountAsFailures) {
    checker_fixture f;
    const auto t = f.target("green", "127.0.0.1", test::free_port());
    f.checker.update({t});
    ASSERT_TRUE(f.run([&] { return !f.changes.empty(); }, "unhealthy"));
    EXPECT_FALSE(t.health->healthy.load());
    EXPECT_EQ(f.changes[0].reason,
              "3 health checks failed in a row (last: connect refused on GET /healthz)");
    f.finish();
}

TEST(ActiveChecker, StatusOutsideTheExpectedRangeFails) {
    checker_fixture f;
    upstream up;
    up.set_health_status(302);
    auto t = f.target("blue", up);
    t.policy.expected_status = config::status_range{200, 299};
    t.policy.unhealthy_threshold = 1;
    f.checker.update({t});
    ASSERT_TRUE(f.run([&] { return !f.changes.empty(); }, "unhealthy"));
    EXPECT_EQ(f.changes[0].reason,
              "1 health check failed in a row (last: status 302 on GET /healthz)");
    f.finish();
}

TEST(ActiveChecker, UpdateKeepsStartsAndStopsTargets) {
    checker_fixture f;
    upstream a("a");
    upstream b("b");
    const auto ta = f.target("blue", a);
    const auto tb = f.target("green", b);
    tb.health->healthy.store(false);  // a new target starts healthy
    f.checker.update({ta, tb});
    EXPECT_TRUE(tb.health->healthy.load());
    EXPECT_EQ(f.checker.target_count(), 2u);
    ASSERT_TRUE(f.run([&] { return a.health_check_count() >= 2 && b.health_check_count() >= 2; },
                      "both checked"));

    // b goes unhealthy, then is removed: its checks stop, its connection
    // closes, and without active checks it is healthy again.
    b.set_health_status(500);
    ASSERT_TRUE(f.run([&] { return !f.changes.empty(); }, "b unhealthy"));
    EXPECT_FALSE(tb.health->healthy.load());

    f.checker.update({ta, ta});  // duplicates: the first wins
    EXPECT_EQ(f.checker.target_count(), 1u);
    EXPECT_TRUE(tb.health->healthy.load());
    const auto b_checks = b.health_check_count();
    const auto a_checks = a.health_check_count();
    ASSERT_TRUE(f.run([&] { return a.health_check_count() >= a_checks + 5; }, "a keeps going"));
    EXPECT_LE(b.health_check_count(), b_checks + 1);  // at most one in flight at update()
    EXPECT_TRUE(test::wait_until([&] { return b.open_connections() == 0; }, 5s, "b closed"));
    EXPECT_EQ(a.connection_count(), 1u);  // a kept its connection across update()
    EXPECT_EQ(f.changes.size(), 1u);

    f.finish();
    const auto a_final = a.health_check_count();
    f.ioc.restart();
    f.ioc.run_for(200ms);
    EXPECT_EQ(a.health_check_count(), a_final);
    EXPECT_TRUE(test::wait_until([&] { return a.open_connections() == 0; }, 5s, "a closed"));
}

TEST(ActiveChecker, NoHandlerRunsAfterStop) {
    checker_fixture f;
    upstream up;
    up.set_health_status(500);
    auto t = f.target("blue", up);
    t.policy.unhealthy_threshold = 1000;
    f.checker.update({t});
    ASSERT_TRUE(f.run([&] { return up.health_check_count() >= 2; }, "checked"));
    f.finish();
    f.checker.update({t});  // ignored after stop()
    EXPECT_EQ(f.checker.target_count(), 0u);
    EXPECT_TRUE(f.changes.empty());
}

TEST(ActiveChecker, HandlerMayStopTheChecker) {
    net::io_context ioc;
    routing::registry ids;
    upstream a("a");
    upstream b("b");
    a.set_health_status(500);
    b.set_health_status(500);
    int calls = 0;
    std::unique_ptr<active_checker> checker;
    checker = std::make_unique<active_checker>(ioc.get_executor(), [&](const health_change&) {
        ++calls;
        checker->stop();
    });
    std::vector<check_target> targets;
    for (const upstream* up : {&a, &b}) {
        check_target t;
        t.address = up->address();
        t.id = *ids.intern_endpoint("svc", "blue", t.address);
        t.host = "127.0.0.1";
        t.port = up->port();
        t.health = &ids.health(t.id);
        t.policy.interval = 50ms;
        t.policy.unhealthy_threshold = 1;
        targets.push_back(t);
    }
    checker->update(targets);
    ASSERT_TRUE(run_until(
        ioc, [&] { return calls > 0; }, 10s, "a change"));
    ioc.restart();
    ioc.run_for(5s);
    EXPECT_TRUE(ioc.stopped());
    EXPECT_EQ(calls, 1);  // the other target's flip came after stop()
}

TEST(ActiveChecker, DestroyedWhileCoroutinesAreSuspended) {
    upstream fast("fast");
    upstream slow("slow");
    slow.set_delay(10s);  // not for /healthz: the slow target probes /slow
    {
        checker_fixture f;
        const auto t_fast = f.target("blue", fast);
        auto t_slow = f.target("green", slow);
        t_slow.policy.path = "/slow";
        t_slow.policy.timeout = 10s;
        f.checker.update({t_fast, t_slow});
        ASSERT_TRUE(
            f.run([&] { return fast.health_check_count() >= 2 && slow.request_count() >= 1; },
                  "both probing"));
        // The checker goes first (stop() in its destructor), then the
        // io_context frees whatever is still pending, without running it.
    }
    EXPECT_TRUE(test::wait_until([&] { return fast.open_connections() == 0; }, 5s, "closed"));
}

}  // namespace
}  // namespace switchyard::health
