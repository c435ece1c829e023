// Per-request routing costs (STYLE rule 12): matching, pool choice and
// endpoint choice must stay allocation-free; allocs_per_op proves it.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/alloc_counter.hpp"
#include "config/config.hpp"
#include "routing/snapshot.hpp"

namespace {

using namespace switchyard;

config::endpoint make_endpoint(const std::string& host, std::uint16_t port) {
    config::endpoint e;
    e.host = host;
    e.port = port;
    e.address = host + ":" + std::to_string(port);
    return e;
}

config::pool make_pool(const std::string& name, std::uint32_t weight, int endpoints, int net) {
    config::pool p;
    p.name = name;
    p.weight = weight;
    for (int i = 0; i < endpoints; ++i) {
        p.endpoints.push_back(
            make_endpoint("10.0." + std::to_string(net) + "." + std::to_string(i + 1), 5000));
    }
    return p;
}

config::service make_service(const std::string& name, std::vector<std::string> hosts,
                             const std::string& prefix) {
    config::service s;
    s.name = name;
    s.hosts = std::move(hosts);
    s.path_prefix = prefix;
    s.stable = "blue";
    s.pools = {make_pool("blue", 90, 8, 0), make_pool("canary", 5, 2, 1),
               make_pool("green", 5, 2, 2)};
    s.override_header = "X-Canary";
    return s;
}

// A realistic mix: a few hosts with several prefixes each, wildcards and a
// hostless catch-all, so match() does real binary searches and prefix scans.
struct fixture {
    routing::registry ids;
    std::shared_ptr<const routing::snapshot> snap;

    fixture() {
        config::config cfg;
        for (const char* host : {"app.example.com", "admin.example.com", "shop.example.org"}) {
            for (const char* prefix : {"/", "/api", "/api/v2", "/static/", "/auth"}) {
                cfg.services.push_back(make_service(std::string(host) + prefix, {host}, prefix));
            }
        }
        cfg.services.push_back(make_service("wild", {"*.example.com"}, "/"));
        cfg.services.push_back(make_service("wild-eu", {"*.eu.example.com"}, "/"));
        cfg.services.push_back(make_service("any", {}, "/"));
        snap = routing::snapshot::build(cfg, {}, ids);
    }

    const routing::service& svc() const { return *snap->find_service("app.example.com/api"); }
};

// splitmix64: a cheap per-iteration random number, not the thing measured.
std::uint64_t next_random(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void report_allocs(benchmark::State& state, std::uint64_t before) {
    const std::uint64_t after = switchyard::bench::allocations();
    state.counters["allocs_per_op"] = benchmark::Counter(static_cast<double>(after - before) /
                                                         static_cast<double>(state.iterations()));
}

void BM_match_host_prefix(benchmark::State& state) {
    fixture f;
    const std::string host = "App.Example.COM:8443";
    const std::string target = "/api/v2/users/42?expand=orders";
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        benchmark::DoNotOptimize(f.snap->match(host, target));
    }
    report_allocs(state, before);
}
BENCHMARK(BM_match_host_prefix);

void BM_choose_pool_weighted(benchmark::State& state) {
    fixture f;
    const routing::service& svc = f.svc();
    std::uint64_t seed = 1;
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        routing::pool_request request;
        request.random = next_random(seed);
        benchmark::DoNotOptimize(routing::choose_pool(svc, request));
    }
    report_allocs(state, before);
}
BENCHMARK(BM_choose_pool_weighted);

void BM_choose_pool_affinity(benchmark::State& state) {
    fixture f;
    const routing::service& svc = f.svc();
    const std::string cookie =
        "theme=dark; _ga=GA1.2.1234567890.1700000000; sy_uid=\"3f2a9c1e-77b0-4d8e-9a51\"; lang=en";
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        routing::pool_request request;
        if (const auto key = routing::find_cookie(cookie, "sy_uid")) {
            request.affinity_bucket = routing::bucket_of(*key);
        }
        benchmark::DoNotOptimize(routing::choose_pool(svc, request));
    }
    report_allocs(state, before);
}
BENCHMARK(BM_choose_pool_affinity);

void BM_choose_endpoint_round_robin(benchmark::State& state) {
    fixture f;
    const routing::pool& p = *f.svc().find_pool("blue");
    routing::balancer_state balancer;
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        benchmark::DoNotOptimize(
            routing::choose_endpoint(p, config::balance::round_robin, balancer, 0));
    }
    report_allocs(state, before);
}
BENCHMARK(BM_choose_endpoint_round_robin);

void BM_choose_endpoint_least_request(benchmark::State& state) {
    fixture f;
    const routing::pool& p = *f.svc().find_pool("blue");
    routing::balancer_state balancer;
    for (std::size_t i = 0; i < p.endpoints.size(); ++i) {
        balancer.active(p.endpoints[i].id) = static_cast<std::uint32_t>(i % 3);
    }
    std::uint64_t seed = 1;
    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        benchmark::DoNotOptimize(routing::choose_endpoint(p, config::balance::least_request,
                                                          balancer, next_random(seed)));
    }
    report_allocs(state, before);
}
BENCHMARK(BM_choose_endpoint_least_request);

}  // namespace
