// Tests of the Prometheus exposition (SPEC §7): a real routing snapshot and a
// real two-worker stats registry, scraped and read line by line; and the
// whole text through `promtool check metrics` when promtool is installed.

#include "admin/metrics.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "admin/control_plane.hpp"
#include "health/stats.hpp"
#include "routing/snapshot.hpp"
#include "tests/support/process.hpp"

namespace switchyard::admin {
namespace {

using namespace std::chrono_literals;
using health::outcome;

config::pool make_pool(std::string name, std::uint32_t weight, std::uint16_t first_port) {
    config::pool p;
    p.name = std::move(name);
    p.weight = weight;
    for (std::uint16_t port = first_port; port < first_port + 2; ++port) {
        config::endpoint e;
        e.host = "127.0.0.1";
        e.port = port;
        e.address = "127.0.0.1:" + std::to_string(port);
        p.endpoints.push_back(e);
    }
    return p;
}

// shop: blue 90 (stable), canary 10; api: green 100.
config::config make_config() {
    config::config cfg;
    cfg.file = "<test>";
    cfg.listeners.push_back(config::listener{});
    cfg.admin_listener.address = "127.0.0.1:0";
    cfg.admin_listener.host = "127.0.0.1";
    cfg.admin_listener.port = 0;

    config::service shop;
    shop.name = "shop";
    shop.hosts = {"shop.example"};
    shop.stable = "blue";
    shop.pools = {make_pool("blue", 90, 10001), make_pool("canary", 10, 10011)};
    cfg.services.push_back(shop);

    config::service api;
    api.name = "api";
    api.path_prefix = "/api";
    api.stable = "green";
    api.pools = {make_pool("green", 100, 10101)};
    cfg.services.push_back(api);
    return cfg;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

testing::AssertionResult has_line(const std::string& text, const std::string& line) {
    for (const auto& l : lines_of(text)) {
        if (l == line) {
            return testing::AssertionSuccess();
        }
    }
    return testing::AssertionFailure() << "no line \"" << line << "\" in:\n" << text;
}

// Lines that start with `prefix` (samples of one metric name).
std::vector<std::string> lines_starting(const std::string& text, std::string_view prefix) {
    std::vector<std::string> out;
    for (const auto& l : lines_of(text)) {
        if (std::string_view(l).substr(0, prefix.size()) == prefix) {
            out.push_back(l);
        }
    }
    return out;
}

event guard_revert_event(std::string service, std::string pool, std::string metric) {
    event e;
    e.id = 7;
    e.service = std::move(service);
    e.kind = "revert";
    e.actor = "guard";
    e.reason = "guard: reverted";
    e.details = boost::json::object{
        {"pool", pool}, {"metric", metric}, {"pool_value", 0.3}, {"baseline_value", 0.01}};
    return e;
}

class metrics_test : public testing::Test {
  protected:
    metrics_test() : cfg_(make_config()), stats_(2) {
        snap_ = routing::snapshot::build(cfg_, {}, ids_);
        if (!snap_) {
            throw std::runtime_error("snapshot::build failed");
        }
        for (const auto& svc : snap_->services()) {
            for (const auto& p : svc.pools) {
                stats_.ensure(p.id);
            }
        }
    }

    const routing::pool& pool(std::string_view service, std::string_view name) const {
        const routing::service* svc = snap_->find_service(service);
        if (svc == nullptr || svc->find_pool(name) == nullptr) {
            throw std::runtime_error("no such pool");
        }
        return *svc->find_pool(name);
    }

    void record(std::string_view service, std::string_view name, unsigned worker,
                std::chrono::microseconds latency, outcome result, unsigned status, int times = 1) {
        auto& shard = stats_.shard(pool(service, name).id, worker);
        for (int i = 0; i < times; ++i) {
            shard.record(health::clock::now(), latency, result, status, true);
        }
    }

    metrics_sources sources() {
        metrics_sources s;
        s.snapshot = [this] { return snap_; };
        s.stats = &stats_;
        s.listeners = [] {
            return std::vector<proxy::listener_counters>{
                {"public", 4, 2, 10},
                {"internal", 0, 0, 1},
            };
        };
        s.reloads = [] { return std::pair<std::uint64_t, std::uint64_t>{3, 1}; };
        s.version = "0.1.0";
        return s;
    }

    // The usual traffic: shop/blue from both workers, a few upstream errors.
    void record_traffic() {
        // worker 0: 3 x 200 in 2 ms, one 503 in 40 ms, one connect error
        record("shop", "blue", 0, 2000us, outcome::success, 200, 3);
        record("shop", "blue", 0, 40000us, outcome::upstream_5xx, 503);
        stats_.shard(pool("shop", "blue").id, 0)
            .record_upstream_error(health::upstream_error_kind::connect);
        // worker 1: 2 x 200 in 0.5 ms, one 404 in 2 s, two timeouts
        record("shop", "blue", 1, 500us, outcome::success, 200, 2);
        record("shop", "blue", 1, 2s, outcome::success, 404);
        stats_.shard(pool("shop", "blue").id, 1)
            .record_upstream_error(health::upstream_error_kind::timeout);
        stats_.shard(pool("shop", "blue").id, 1)
            .record_upstream_error(health::upstream_error_kind::timeout);
    }

    config::config cfg_;
    routing::registry ids_;
    std::shared_ptr<const routing::snapshot> snap_;
    health::stats_registry stats_;
};

TEST_F(metrics_test, requests_by_code_are_merged_across_workers) {
    record_traffic();
    metrics m(sources());
    const std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_requests_total counter"));
    EXPECT_TRUE(
        has_line(text, R"(switchyard_requests_total{service="shop",pool="blue",code="2xx"} 5)"));
    EXPECT_TRUE(
        has_line(text, R"(switchyard_requests_total{service="shop",pool="blue",code="3xx"} 0)"));
    EXPECT_TRUE(
        has_line(text, R"(switchyard_requests_total{service="shop",pool="blue",code="4xx"} 1)"));
    EXPECT_TRUE(
        has_line(text, R"(switchyard_requests_total{service="shop",pool="blue",code="5xx"} 1)"));
    // Pools without traffic are there from zero.
    EXPECT_TRUE(
        has_line(text, R"(switchyard_requests_total{service="api",pool="green",code="2xx"} 0)"));
    // 1xx only once seen.
    EXPECT_TRUE(
        lines_starting(text, R"(switchyard_requests_total{service="shop",pool="blue",code="1xx"})")
            .empty());
    record("api", "green", 1, 100us, outcome::success, 101);
    EXPECT_TRUE(has_line(m.scrape(),
                         R"(switchyard_requests_total{service="api",pool="green",code="1xx"} 1)"));
}

TEST_F(metrics_test, upstream_errors_by_kind) {
    record_traffic();
    metrics m(sources());
    const std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_upstream_errors_total counter"));
    EXPECT_TRUE(has_line(
        text, R"(switchyard_upstream_errors_total{service="shop",pool="blue",kind="connect"} 1)"));
    EXPECT_TRUE(has_line(
        text, R"(switchyard_upstream_errors_total{service="shop",pool="blue",kind="timeout"} 2)"));
    EXPECT_TRUE(has_line(
        text, R"(switchyard_upstream_errors_total{service="shop",pool="blue",kind="reset"} 0)"));
    EXPECT_TRUE(has_line(
        text, R"(switchyard_upstream_errors_total{service="shop",pool="canary",kind="reset"} 0)"));
}

TEST_F(metrics_test, duration_histogram_is_cumulative) {
    record_traffic();
    metrics m(sources());
    const std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_request_duration_seconds histogram"));
    const std::string series =
        R"(switchyard_request_duration_seconds_bucket{service="shop",pool="blue",le=")";
    // 2 x 0.5 ms, 3 x 2 ms, 1 x 40 ms, 1 x 2 s.
    EXPECT_TRUE(has_line(text, series + R"(0.001"} 2)"));
    EXPECT_TRUE(has_line(text, series + R"(0.0025"} 5)"));
    EXPECT_TRUE(has_line(text, series + R"(0.025"} 5)"));
    EXPECT_TRUE(has_line(text, series + R"(0.05"} 6)"));
    EXPECT_TRUE(has_line(text, series + R"(1"} 6)"));
    EXPECT_TRUE(has_line(text, series + R"(2.5"} 7)"));
    EXPECT_TRUE(has_line(text, series + R"(30"} 7)"));
    EXPECT_TRUE(has_line(text, series + R"(+Inf"} 7)"));
    EXPECT_TRUE(has_line(
        text, R"(switchyard_request_duration_seconds_count{service="shop",pool="blue"} 7)"));
    EXPECT_TRUE(has_line(
        text, R"(switchyard_request_duration_seconds_sum{service="shop",pool="blue"} 2.047)"));

    // One bucket per bound plus +Inf, never decreasing.
    const auto buckets = lines_starting(text, series);
    ASSERT_EQ(buckets.size(), health::totals::duration_bounds.size() + 1);
    double previous = 0;
    for (const auto& line : buckets) {
        const double value = std::stod(line.substr(line.rfind(' ') + 1));
        EXPECT_GE(value, previous) << line;
        previous = value;
    }
    EXPECT_TRUE(has_line(
        text, R"(switchyard_request_duration_seconds_count{service="api",pool="green"} 0)"));
}

TEST_F(metrics_test, weights_and_endpoint_health) {
    metrics m(sources());
    std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_pool_weight gauge"));
    EXPECT_TRUE(has_line(text, R"(switchyard_pool_weight{service="shop",pool="blue"} 90)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_pool_weight{service="shop",pool="canary"} 10)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_pool_weight{service="api",pool="green"} 100)"));
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_endpoint_healthy gauge"));
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_endpoint_healthy{service="shop",pool="canary",endpoint="127.0.0.1:10011"} 1)"));
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_endpoint_healthy{service="shop",pool="canary",endpoint="127.0.0.1:10012"} 1)"));

    // Failing checks, or ejected: no traffic, 0.
    const auto& canary = pool("shop", "canary");
    ids_.health(canary.endpoints[0].id).healthy = false;
    ids_.health(canary.endpoints[1].id).ejected = true;
    text = m.scrape();
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_endpoint_healthy{service="shop",pool="canary",endpoint="127.0.0.1:10011"} 0)"));
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_endpoint_healthy{service="shop",pool="canary",endpoint="127.0.0.1:10012"} 0)"));
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_endpoint_healthy{service="shop",pool="blue",endpoint="127.0.0.1:10001"} 1)"));

    // A new snapshot (new weights) is what the next scrape shows.
    std::map<std::string, routing::service_state, std::less<>> state;
    state["shop"].weights = {{"blue", 100}, {"canary", 0}};
    state["shop"].stable = "blue";
    snap_ = routing::snapshot::build(cfg_, state, ids_);
    ASSERT_TRUE(snap_);
    text = m.scrape();
    EXPECT_TRUE(has_line(text, R"(switchyard_pool_weight{service="shop",pool="blue"} 100)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_pool_weight{service="shop",pool="canary"} 0)"));
}

TEST_F(metrics_test, guard_reverts_counted_by_reason) {
    metrics m(sources());
    std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_guard_reverts_total counter"));
    for (const char* reason : {"error_rate", "p95", "unavailable"}) {
        EXPECT_TRUE(has_line(
            text,
            std::string(R"(switchyard_guard_reverts_total{service="shop",pool="canary",reason=")") +
                reason + "\"} 0"));
    }

    m.on_event(guard_revert_event("shop", "canary", "p95"));
    m.on_event(guard_revert_event("shop", "canary", "p95"));
    m.on_event(guard_revert_event("shop", "canary", "unavailable"));
    // Not guard reverts: an operator's abort, and other kinds by the guard.
    event abort = guard_revert_event("shop", "canary", "error_rate");
    abort.actor = "admin";
    m.on_event(abort);
    event weights = guard_revert_event("shop", "canary", "error_rate");
    weights.kind = "weights";
    m.on_event(weights);
    event no_details = guard_revert_event("shop", "canary", "error_rate");
    no_details.details.reset();
    m.on_event(no_details);

    text = m.scrape();
    EXPECT_TRUE(has_line(
        text, R"(switchyard_guard_reverts_total{service="shop",pool="canary",reason="p95"} 2)"));
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_guard_reverts_total{service="shop",pool="canary",reason="unavailable"} 1)"));
    EXPECT_TRUE(has_line(
        text,
        R"(switchyard_guard_reverts_total{service="shop",pool="canary",reason="error_rate"} 0)"));

    // A pool that left the config keeps its count.
    m.on_event(guard_revert_event("shop", "gone", "error_rate"));
    EXPECT_TRUE(has_line(
        m.scrape(),
        R"(switchyard_guard_reverts_total{service="shop",pool="gone",reason="error_rate"} 1)"));
}

TEST_F(metrics_test, listeners_reloads_build_and_process) {
    metrics m(sources());
    const std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_downstream_connections gauge"));
    EXPECT_TRUE(has_line(text, R"(switchyard_downstream_connections{listener="public"} 4)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_downstream_connections{listener="internal"} 0)"));
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_unrouted_requests_total counter"));
    EXPECT_TRUE(has_line(text, R"(switchyard_unrouted_requests_total{listener="public"} 2)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_accepted_connections_total{listener="public"} 10)"));
    EXPECT_TRUE(has_line(text, "# TYPE switchyard_config_reloads_total counter"));
    EXPECT_TRUE(has_line(text, R"(switchyard_config_reloads_total{result="ok"} 3)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_config_reloads_total{result="error"} 1)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_build_info{version="0.1.0"} 1)"));

    for (const char* name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                             "process_open_fds", "process_start_time_seconds"}) {
        const auto samples = lines_starting(text, std::string(name) + " ");
        ASSERT_EQ(samples.size(), 1u) << name << " in:\n" << text;
        const double value = std::stod(samples[0].substr(samples[0].rfind(' ') + 1));
        EXPECT_GE(value, 0) << name;
        if (std::string_view(name) != "process_cpu_seconds_total") {
            EXPECT_GT(value, 0) << name;
        }
    }
    const auto start = lines_starting(text, "process_start_time_seconds ");
    const double started = std::stod(start[0].substr(start[0].rfind(' ') + 1));
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    EXPECT_LE(started, now + 1);
    EXPECT_GT(started, now - 24 * 3600.0);
}

TEST(metrics, empty_sources_still_scrape) {
    metrics m(metrics_sources{});
    const std::string text = m.scrape();
    EXPECT_TRUE(has_line(text, R"(switchyard_config_reloads_total{result="ok"} 0)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_config_reloads_total{result="error"} 0)"));
    EXPECT_TRUE(has_line(text, R"(switchyard_build_info{version="unknown"} 1)"));
    EXPECT_TRUE(lines_starting(text, "switchyard_requests_total").empty());
    EXPECT_TRUE(lines_starting(text, "switchyard_downstream_connections").empty());
}

TEST_F(metrics_test, every_family_has_help_and_type) {
    record_traffic();
    metrics m(sources());
    m.on_event(guard_revert_event("shop", "canary", "p95"));
    const std::string text = m.scrape();
    std::set<std::string> helped;
    std::map<std::string, std::string> typed;
    for (const auto& line : lines_of(text)) {
        std::istringstream in(line);
        std::string hash, what, name, type;
        if (line.rfind("# HELP ", 0) == 0) {
            in >> hash >> what >> name;
            helped.insert(name);
        } else if (line.rfind("# TYPE ", 0) == 0) {
            in >> hash >> what >> name >> type;
            typed[name] = type;
        }
    }
    EXPECT_GE(typed.size(), 13u);
    for (const auto& [name, type] : typed) {
        EXPECT_TRUE(helped.contains(name)) << name;
        if (type == "counter") {
            EXPECT_TRUE(name.ends_with("_total")) << name;
        }
    }
    const std::map<std::string, std::string> contract{
        {"switchyard_requests_total", "counter"},
        {"switchyard_request_duration_seconds", "histogram"},
        {"switchyard_upstream_errors_total", "counter"},
        {"switchyard_pool_weight", "gauge"},
        {"switchyard_endpoint_healthy", "gauge"},
        {"switchyard_guard_reverts_total", "counter"},
        {"switchyard_downstream_connections", "gauge"},
        {"switchyard_config_reloads_total", "counter"},
        {"switchyard_unrouted_requests_total", "counter"},
    };
    for (const auto& [name, type] : contract) {
        ASSERT_TRUE(typed.contains(name)) << name;
        EXPECT_EQ(typed[name], type) << name;
    }
}

TEST_F(metrics_test, promtool_check_metrics_passes) {
    SWITCHYARD_NEED_PROMTOOL();
    record_traffic();
    record("api", "green", 0, 100us, outcome::success, 101);
    metrics m(sources());
    m.on_event(guard_revert_event("shop", "canary", "error_rate"));
    const std::string text = m.scrape();

    test::temp_dir dir;
    const std::string file = dir.write("metrics.txt", text);
    const std::string command = "promtool check metrics < '" + file + "' 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[4096];
    for (std::size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) {
        output.append(buffer, n);
    }
    const int status = pclose(pipe);
    ASSERT_TRUE(WIFEXITED(status)) << output;
    EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\nfor:\n" << text;
    EXPECT_EQ(output, "") << "for:\n" << text;
}

}  // namespace
}  // namespace switchyard::admin
