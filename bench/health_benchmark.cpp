// Hot-path claims of health/stats (SPEC §8): a window record in tens of
// nanoseconds without allocation, a merged percentile read in microseconds.

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "bench/alloc_counter.hpp"
#include "health/stats.hpp"

namespace {

using namespace std::chrono_literals;
using switchyard::health::clock;
using switchyard::health::latency_histogram;
using switchyard::health::outcome;
using switchyard::health::pool_shard;
using switchyard::health::stats_registry;

// Latencies log-uniform over `low` .. `high` µs. The default 100 µs .. 2 s
// spreads records over ~15 octaves (~900 buckets), so neither the record nor
// the read lives in a few cache lines.
std::vector<std::uint64_t> latencies(std::size_t n, double low = 100.0, double high = 2e6) {
    std::mt19937_64 random(42);
    std::uniform_real_distribution<double> exponent(std::log(low), std::log(high));
    std::vector<std::uint64_t> out(n);
    for (auto& v : out) {
        v = static_cast<std::uint64_t>(std::exp(exponent(random)));
    }
    return out;
}

void report_allocations(benchmark::State& state, std::uint64_t before) {
    const std::uint64_t after = switchyard::bench::allocations();
    state.counters["allocs_per_op"] = benchmark::Counter(static_cast<double>(after - before) /
                                                         static_cast<double>(state.iterations()));
}

// One request recorded by the owning worker. `now` advances 1 µs per
// request (a busy worker), so slots roll over every million records and the
// reset is amortized as in production.
void BM_window_record(benchmark::State& state) {
    stats_registry registry(2, 30s);
    registry.ensure(0);
    pool_shard& shard = registry.shard(0, 1);
    const std::vector<std::uint64_t> values = latencies(1024);
    clock::time_point now = clock::now();
    std::size_t i = 0;

    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        const std::uint64_t micros = values[i & 1023];
        const bool error = (i & 127) == 0;
        shard.record(now, std::chrono::microseconds(micros),
                     error ? outcome::upstream_5xx : outcome::success, error ? 503 : 200, true);
        now += 1us;
        ++i;
    }
    report_allocations(state, before);
    benchmark::DoNotOptimize(registry.pool_totals(0));
}
BENCHMARK(BM_window_record);

// The same, looking the shard up through the registry on every request, as a
// worker that does not cache the reference would.
void BM_window_record_via_registry(benchmark::State& state) {
    stats_registry registry(2, 30s);
    registry.ensure(5);
    const std::vector<std::uint64_t> values = latencies(1024);
    clock::time_point now = clock::now();
    std::size_t i = 0;

    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        registry.shard(5, 1).record(now, std::chrono::microseconds(values[i & 1023]),
                                    outcome::success, 200, true);
        now += 1us;
        ++i;
    }
    report_allocations(state, before);
}
BENCHMARK(BM_window_record_via_registry);

// The guard's read: merge 2 workers x a full 30 s window (1 s slots, 1000
// requests per second per worker) and take the P95. The argument is the
// slowest latency in ms (from 100 µs): the read costs per bucket in use, so
// /2000 (every slot fills ~900 buckets) is the worst case and /50 a
// typical service.
void BM_percentile_read(benchmark::State& state) {
    stats_registry registry(2, 30s);
    registry.ensure(0);
    const std::vector<std::uint64_t> values =
        latencies(4096, 100.0, static_cast<double>(state.range(0)) * 1000.0);
    const clock::time_point start = clock::now();
    constexpr int per_worker = 30'000;
    for (unsigned worker = 0; worker < 2; ++worker) {
        pool_shard& shard = registry.shard(0, worker);
        for (int i = 0; i < per_worker; ++i) {
            shard.record(start + i * 1ms,
                         std::chrono::microseconds(values[(i * 7 + worker) & 4095]),
                         i % 50 == 0 ? outcome::timeout : outcome::success, 200, true);
        }
    }
    const clock::time_point now = start + per_worker * 1ms;

    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        const auto summary = registry.summary(0, now, 30s);
        benchmark::DoNotOptimize(summary.percentile_ms(0.95));
    }
    report_allocations(state, before);
}
BENCHMARK(BM_percentile_read)->Arg(2000)->Arg(50)->Unit(benchmark::kMicrosecond);

void BM_histogram_bucket_index(benchmark::State& state) {
    const std::vector<std::uint64_t> values = latencies(1024);
    std::size_t i = 0;

    const std::uint64_t before = switchyard::bench::allocations();
    for (auto _ : state) {
        benchmark::DoNotOptimize(latency_histogram::bucket_index(values[i & 1023]));
        ++i;
    }
    report_allocations(state, before);
}
BENCHMARK(BM_histogram_bucket_index);

}  // namespace
