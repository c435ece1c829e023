#include "health/stats.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

namespace switchyard::health {
namespace {

using namespace std::chrono_literals;
using std::chrono::microseconds;

// Nearest-rank percentile of sorted values, the definition percentile() uses:
// the ceil(q * n)-th smallest, the smallest for q = 0. `ppm` is q in parts
// per million so that the rank is computed without rounding error.
std::uint64_t exact_percentile(const std::vector<std::uint64_t>& sorted, std::uint64_t ppm) {
    const std::uint64_t n = sorted.size();
    const std::uint64_t rank = std::max<std::uint64_t>(1, (ppm * n + 999'999) / 1'000'000);
    return sorted[rank - 1];
}

double relative_error(double measured, double exact) {
    return std::abs(measured - exact) / exact;
}

std::int64_t epoch_of(clock::time_point t, clock::duration width) {
    return t.time_since_epoch() / width;
}

// ---------------------------------------------------------------- histogram

TEST(latency_histogram, small_values_have_their_own_bucket) {
    for (std::uint64_t v = 0; v < 128; ++v) {
        ASSERT_EQ(latency_histogram::bucket_index(v), v);
        ASSERT_EQ(latency_histogram::bucket_value(static_cast<unsigned>(v)),
                  static_cast<double>(v));
    }
}

TEST(latency_histogram, every_value_is_within_one_percent_of_its_bucket_value) {
    unsigned previous = 0;
    // Every value up to 2^21 µs, then a geometric sweep up to the top bucket.
    for (std::uint64_t v = 1; v < (std::uint64_t{1} << 21); ++v) {
        const unsigned index = latency_histogram::bucket_index(v);
        ASSERT_GE(index, previous) << v;
        ASSERT_LE(index, previous + 1) << v;
        previous = index;
        ASSERT_LT(relative_error(latency_histogram::bucket_value(index), double(v)), 1.0 / 128)
            << v;
    }
    for (std::uint64_t v = std::uint64_t{1} << 21; v < (std::uint64_t{1} << 33); v += v / 997 + 1) {
        const unsigned index = latency_histogram::bucket_index(v);
        ASSERT_GE(index, previous) << v;
        previous = index;
        ASSERT_LT(index, latency_histogram::bucket_count) << v;
        ASSERT_LT(relative_error(latency_histogram::bucket_value(index), double(v)), 1.0 / 128)
            << v;
    }
    EXPECT_EQ(latency_histogram::bucket_index((std::uint64_t{1} << 33) - 1),
              latency_histogram::bucket_count - 1);
}

TEST(latency_histogram, values_beyond_the_range_clamp_into_the_last_bucket) {
    constexpr unsigned last = latency_histogram::bucket_count - 1;
    EXPECT_EQ(latency_histogram::bucket_index(std::uint64_t{1} << 33), last);
    EXPECT_EQ(latency_histogram::bucket_index(std::numeric_limits<std::uint64_t>::max()), last);

    latency_histogram h;
    h.record(std::numeric_limits<std::uint64_t>::max());
    EXPECT_EQ(h.buckets()[last], 1u);
    EXPECT_EQ(h.percentile(1.0), latency_histogram::bucket_value(last));
}

TEST(latency_histogram, percentiles_match_exact_ones_within_one_percent) {
    // Log-uniform over 1 µs .. 60 s, fixed seed.
    std::mt19937_64 random(20240611);
    std::uniform_real_distribution<double> exponent(0.0, std::log(60e6));
    std::vector<std::uint64_t> values;
    values.reserve(100'000);
    latency_histogram h;
    for (int i = 0; i < 100'000; ++i) {
        const auto v = static_cast<std::uint64_t>(std::exp(exponent(random)));
        values.push_back(v);
        h.record(v);
    }
    std::sort(values.begin(), values.end());
    ASSERT_EQ(h.count(), values.size());

    for (const std::uint64_t ppm :
         {0, 1, 10'000, 250'000, 500'000, 900'000, 950'000, 990'000, 999'000, 999'900, 1'000'000}) {
        const double q = double(ppm) / 1e6;
        const auto exact = double(exact_percentile(values, ppm));
        EXPECT_LT(relative_error(h.percentile(q), exact), 0.01) << "q=" << q << " exact=" << exact;
    }
    EXPECT_EQ(h.percentile(0.0), double(values.front()));  // below 128 µs: exact
}

TEST(latency_histogram, percentile_edge_cases) {
    latency_histogram empty;
    EXPECT_EQ(empty.count(), 0u);
    EXPECT_EQ(empty.percentile(0.0), 0.0);
    EXPECT_EQ(empty.percentile(0.5), 0.0);
    EXPECT_EQ(empty.percentile(1.0), 0.0);

    latency_histogram one;
    one.record(5);
    EXPECT_EQ(one.percentile(0.0), 5.0);
    EXPECT_EQ(one.percentile(0.5), 5.0);
    EXPECT_EQ(one.percentile(1.0), 5.0);

    latency_histogram big;
    big.record(123'456);
    for (const double q : {0.0, 0.5, 1.0}) {
        EXPECT_LT(relative_error(big.percentile(q), 123'456.0), 0.01);
    }

    latency_histogram two;
    two.record(10);
    two.record(20);
    EXPECT_EQ(two.percentile(0.0), 10.0);  // first non-empty bucket
    EXPECT_EQ(two.percentile(0.5), 10.0);  // rank ceil(0.5 * 2) = 1
    EXPECT_EQ(two.percentile(0.51), 20.0);
    EXPECT_EQ(two.percentile(1.0), 20.0);
    EXPECT_EQ(two.percentile(-1.0), 10.0);  // clamped to [0, 1]
    EXPECT_EQ(two.percentile(2.0), 20.0);
    EXPECT_EQ(two.percentile(std::nan("")), 10.0);

    // 0.07 * 100 is 7.000000000000001 in doubles: still rank 7, not 8.
    latency_histogram hundred;
    for (std::uint64_t v = 1; v <= 100; ++v) {
        hundred.record(v);
    }
    EXPECT_EQ(hundred.percentile(0.07), 7.0);
    EXPECT_EQ(hundred.percentile(0.95), 95.0);
    EXPECT_EQ(hundred.percentile(0.99), 99.0);
}

TEST(latency_histogram, record_with_count_add_and_clear) {
    latency_histogram a;
    a.record(50, 3);
    latency_histogram b;
    b.record(50);
    b.record(70, 2);
    a.add(b);
    EXPECT_EQ(a.count(), 6u);
    EXPECT_EQ(a.buckets()[50], 4u);
    EXPECT_EQ(a.buckets()[70], 2u);
    a.clear();
    EXPECT_EQ(a.count(), 0u);
    EXPECT_EQ(a.buckets()[50], 0u);
    EXPECT_EQ(a.percentile(0.5), 0.0);
}

TEST(latency_histogram, count_above) {
    latency_histogram h;
    EXPECT_EQ(h.count_above(0), 0u);
    for (const std::uint64_t v : {10, 20, 30, 1000, 2000, 100'000}) {
        h.record(v);
    }
    EXPECT_EQ(h.count_above(0), 6u);
    EXPECT_EQ(h.count_above(9), 6u);
    EXPECT_EQ(h.count_above(10), 5u);
    EXPECT_EQ(h.count_above(20), 4u);
    EXPECT_EQ(h.count_above(30), 3u);
    EXPECT_EQ(h.count_above(1500), 2u);
    EXPECT_EQ(h.count_above(99'000), 1u);
    EXPECT_EQ(h.count_above(100'000), 0u);
    EXPECT_EQ(h.count_above(std::numeric_limits<std::uint64_t>::max()), 0u);

    // Bucket resolution: 1000..1007 share a bucket, so 1007 is not counted as
    // above 1005 (less than 1/64 above it).
    latency_histogram coarse;
    coarse.record(1007);
    EXPECT_EQ(latency_histogram::bucket_index(1005), latency_histogram::bucket_index(1007));
    EXPECT_EQ(coarse.count_above(1005), 0u);
    EXPECT_EQ(coarse.count_above(999), 1u);
}

// ---------------------------------------------------------------- pool_shard

TEST(pool_shard, counts_requests_and_errors_in_the_window) {
    pool_shard shard(1s, 8);
    const clock::time_point base = clock::now();
    for (int i = 0; i < 7; ++i) {
        shard.record(base, microseconds(100), outcome::success, 200, true);
    }
    shard.record(base, microseconds(100), outcome::upstream_5xx, 502, true);
    shard.record(base, microseconds(100), outcome::connect_error, 502, true);
    shard.record(base, microseconds(100), outcome::timeout, 504, true);
    shard.record(base, microseconds(100), outcome::reset, 502, true);

    window_summary s;
    shard.collect(base, 5s, s);
    EXPECT_EQ(s.requests, 11u);
    EXPECT_EQ(s.errors, 4u);
    EXPECT_DOUBLE_EQ(s.error_rate(), 4.0 / 11.0);
    EXPECT_EQ(s.latency.count(), 11u);
    EXPECT_EQ(s.percentile_ms(0.95), 0.1);
}

TEST(pool_shard, window_excludes_slots_older_than_the_window) {
    pool_shard shard(1s, 8);
    const clock::time_point base = clock::now();
    for (int i = 0; i < 8; ++i) {
        shard.record(base + i * 1s, microseconds(10 + i), outcome::success, 200, true);
    }
    // (base + 7s - 3s, base + 7s] touches the slots of base + 4s .. base + 7s
    // wherever base falls inside its slot.
    window_summary last3;
    shard.collect(base + 7s, 3s, last3);
    EXPECT_EQ(last3.requests, 4u);
    EXPECT_EQ(last3.latency.percentile(0.0), 14.0);
    EXPECT_GE(last3.span, 3s);
    EXPECT_LT(last3.span, 4s);

    window_summary later;
    shard.collect(base + 7s + 5s, 3s, later);
    EXPECT_EQ(later.requests, 0u);
    EXPECT_EQ(later.latency.count(), 0u);

    window_summary far;
    shard.collect(base + 1h, 8s, far);
    EXPECT_EQ(far.requests, 0u);
}

TEST(pool_shard, a_reused_slot_starts_from_zero) {
    pool_shard shard(1s, 4);
    const clock::time_point base = clock::now();
    for (int i = 0; i < 5; ++i) {
        shard.record(base, microseconds(1000), outcome::upstream_5xx, 500, true);
    }
    // base + 4s maps to the same ring slot as base.
    shard.record(base + 4s, microseconds(20), outcome::success, 200, true);

    window_summary s;
    shard.collect(base + 4s, 4s, s);
    EXPECT_EQ(s.requests, 1u);
    EXPECT_EQ(s.errors, 0u);
    EXPECT_EQ(s.latency.count(), 1u);
    EXPECT_EQ(s.latency.percentile(1.0), 20.0);

    // A record older than the whole ring finds its slot taken by a later
    // interval: totals count it, the window does not.
    shard.record(base, microseconds(20), outcome::success, 200, true);
    window_summary again;
    shard.collect(base + 4s, 4s, again);
    EXPECT_EQ(again.requests, 1u);
    totals t;
    shard.collect_totals(t);
    EXPECT_EQ(t.duration_count, 7u);
}

TEST(pool_shard, a_window_shorter_than_a_slot_reads_the_current_slot) {
    pool_shard shard(1s, 8);
    const clock::time_point base = clock::now();
    shard.record(base, microseconds(10), outcome::success, 200, true);
    window_summary zero;
    shard.collect(base, 0s, zero);
    EXPECT_EQ(zero.requests, 1u);
    EXPECT_GE(zero.span, 1s);  // clamped below by one slot

    window_summary tiny;
    shard.collect(base, 1ms, tiny);
    EXPECT_GE(tiny.requests, 1u);
}

TEST(pool_shard, a_window_longer_than_the_ring_reads_the_whole_ring) {
    pool_shard shard(1s, 4);
    const clock::time_point base = clock::now();
    for (int i = 0; i < 6; ++i) {
        shard.record(base + i * 1s, microseconds(10), outcome::success, 200, true);
    }
    window_summary s;
    shard.collect(base + 5s, 1h, s);
    EXPECT_EQ(s.requests, 4u);
    EXPECT_GE(s.span, 3s);
    EXPECT_LE(s.span, 4s);

    window_summary max;
    shard.collect(base + 5s, clock::duration::max(), max);
    EXPECT_EQ(max.requests, 4u);
}

TEST(pool_shard, unjudged_requests_count_in_totals_only) {
    pool_shard shard(1s, 8);
    const clock::time_point base = clock::now();
    for (int i = 0; i < 3; ++i) {
        shard.record(base, microseconds(500), outcome::success, 200, true);
    }
    shard.record(base, microseconds(500), outcome::upstream_5xx, 503, false);
    shard.record(base, microseconds(500), outcome::success, 200, false);

    window_summary s;
    shard.collect(base, 10s, s);
    EXPECT_EQ(s.requests, 3u);
    EXPECT_EQ(s.errors, 0u);
    EXPECT_EQ(s.latency.count(), 3u);

    totals t;
    shard.collect_totals(t);
    EXPECT_EQ(t.by_class[1], 4u);
    EXPECT_EQ(t.by_class[4], 1u);
    EXPECT_EQ(t.duration_count, 5u);
}

TEST(pool_shard, totals_by_class_durations_and_upstream_errors) {
    pool_shard shard(1s, 8);
    const clock::time_point base = clock::now();
    auto record = [&](unsigned status, microseconds latency) {
        shard.record(base, latency, status >= 500 ? outcome::upstream_5xx : outcome::success,
                     status, true);
    };
    record(101, 0us);               // le 0.001
    record(200, 1000us);            // le 0.001 (bounds are inclusive)
    record(204, 1001us);            // le 0.0025
    record(302, 100ms);             // le 0.1
    record(404, 30s);               // le 30
    record(503, 31s);               // +Inf
    record(0, 2ms);                 // no status sent: no class, but a duration
    record(700, 2ms);               // out of range: no class
    record(599, microseconds(-5));  // negative clock skew: 0
    shard.record_upstream_error(upstream_error_kind::connect);
    shard.record_upstream_error(upstream_error_kind::timeout);
    shard.record_upstream_error(upstream_error_kind::timeout);
    shard.record_upstream_error(upstream_error_kind::reset);

    totals t;
    shard.collect_totals(t);
    EXPECT_EQ(t.by_class, (std::array<std::uint64_t, 5>{1, 2, 1, 1, 2}));
    EXPECT_EQ(t.upstream_errors, (std::array<std::uint64_t, 3>{1, 2, 1}));
    std::array<std::uint64_t, totals::duration_bounds.size() + 1> expected{};
    expected[0] = 3;   // 0, 1000 µs, -5 µs
    expected[1] = 3;   // 1001 µs, 2 ms, 2 ms
    expected[6] = 1;   // 100 ms
    expected[13] = 1;  // 30 s
    expected[14] = 1;  // 31 s
    EXPECT_EQ(t.duration_buckets, expected);
    EXPECT_EQ(t.duration_count, 9u);
    EXPECT_NEAR(t.duration_sum_seconds, 0.001 + 0.001001 + 0.1 + 30 + 31 + 0.002 + 0.002, 1e-9);
}

// ---------------------------------------------------------------- registry

TEST(stats_registry, merges_all_workers) {
    stats_registry registry(4, 30s);
    const clock::time_point base = clock::now();
    registry.ensure(7);
    registry.ensure(7);  // idempotent
    ASSERT_EQ(&registry.shard(7, 2), &registry.shard(7, 2));
    for (unsigned w = 0; w < registry.workers(); ++w) {
        for (unsigned i = 0; i <= w; ++i) {
            registry.shard(7, w).record(base, microseconds(100 * (w + 1)),
                                        i == 0 ? outcome::timeout : outcome::success,
                                        i == 0 ? 504 : 200, true);
        }
        registry.shard(7, w).record_upstream_error(upstream_error_kind::reset);
    }

    const window_summary s = registry.summary(7, base + 1s, 30s);
    EXPECT_EQ(s.requests, 1u + 2u + 3u + 4u);
    EXPECT_EQ(s.errors, 4u);
    EXPECT_EQ(s.latency.count(), 10u);
    EXPECT_EQ(s.latency.percentile(0.0), 100.0);
    EXPECT_LT(relative_error(s.latency.percentile(1.0), 400.0), 0.01);
    // 1 s slots for a 30 s longest window: the window covers 30 s .. 31 s.
    EXPECT_GE(s.span, 30s);
    EXPECT_LE(s.span, 31s);
    EXPECT_NEAR(s.rps(), 10.0 / std::chrono::duration<double>(s.span).count(), 1e-9);

    const totals t = registry.pool_totals(7);
    EXPECT_EQ(t.by_class[1], 6u);
    EXPECT_EQ(t.by_class[4], 4u);
    EXPECT_EQ(t.upstream_errors[2], 4u);
    EXPECT_EQ(t.duration_count, 10u);
}

TEST(stats_registry, pools_are_separate_and_unknown_pools_are_empty) {
    stats_registry registry(2, 30s);
    const clock::time_point base = clock::now();
    registry.ensure(0);
    registry.ensure(routing::max_pools - 1);
    registry.shard(0, 1).record(base, microseconds(10), outcome::success, 200, true);
    registry.shard(routing::max_pools - 1, 0)
        .record(base, microseconds(10), outcome::success, 200, true);

    EXPECT_EQ(registry.summary(0, base, 30s).requests, 1u);
    EXPECT_EQ(registry.summary(routing::max_pools - 1, base, 30s).requests, 1u);

    const window_summary unknown = registry.summary(1, base, 30s);
    EXPECT_EQ(unknown.requests, 0u);
    EXPECT_EQ(unknown.latency.count(), 0u);
    EXPECT_EQ(unknown.rps(), 0.0);
    EXPECT_EQ(unknown.percentile_ms(0.95), 0.0);
    EXPECT_EQ(registry.pool_totals(1).duration_count, 0u);
    EXPECT_EQ(registry.summary(routing::max_pools, base, 30s).requests, 0u);
}

TEST(stats_registry, slot_width_follows_the_longest_window) {
    // Default 5 min: 5 s slots, so a 30 s window covers 30 s .. 35 s.
    stats_registry coarse(1);
    coarse.ensure(0);
    const clock::time_point base = clock::now();
    const window_summary s = coarse.summary(0, base, 30s);
    EXPECT_GE(s.span, 30s);
    EXPECT_LT(s.span, 35s);
    // The longest window itself is answerable.
    coarse.shard(0, 0).record(base, microseconds(10), outcome::success, 200, true);
    EXPECT_EQ(coarse.summary(0, base + 5min - 1ms, 5min).requests, 1u);

    // 10 s: 1 s slots.
    stats_registry fine(1, 10s);
    fine.ensure(0);
    const window_summary f = fine.summary(0, base, 10s);
    EXPECT_GE(f.span, 10s);
    EXPECT_LE(f.span, 11s);
}

TEST(stats_registry, concurrent_writers_and_reader) {
    constexpr int records_per_writer = 200'000;
    constexpr auto step = 500us;  // 100 s of traffic: the 32-slot ring wraps three times
    stats_registry registry(2, 30s);
    registry.ensure(3);
    const clock::time_point base = clock::now();

    std::atomic<int> writers_done{0};
    auto writer = [&](unsigned worker) {
        pool_shard& shard = registry.shard(3, worker);
        for (int i = 0; i < records_per_writer; ++i) {
            const bool error = i % 10 == 0;
            shard.record(base + i * step, microseconds(i % 1000),
                         error ? outcome::upstream_5xx : outcome::success, error ? 502 : 200, true);
            if (i % 1000 == 0) {
                shard.record_upstream_error(upstream_error_kind::timeout);
            }
        }
        writers_done.fetch_add(1);
    };

    std::uint64_t reads = 0;
    bool consistent = true;
    std::uint64_t last_total = 0;
    bool monotonic = true;
    auto reader = [&] {
        int round = 0;
        while (writers_done.load() < 2 || round < 100) {
            const clock::time_point now = base + (round % 400) * 250ms;
            const window_summary s = registry.summary(3, now, 30s);
            consistent = consistent && s.errors <= s.requests;
            const totals t = registry.pool_totals(3);
            const std::uint64_t total = t.by_class[1] + t.by_class[4];
            monotonic = monotonic && total >= last_total;
            last_total = total;
            ++round;
            ++reads;
        }
    };

    std::thread r(reader);
    std::thread w0(writer, 0u);
    std::thread w1(writer, 1u);
    w0.join();
    w1.join();
    r.join();
    EXPECT_GT(reads, 0u);
    EXPECT_TRUE(consistent);
    EXPECT_TRUE(monotonic);

    const totals t = registry.pool_totals(3);
    EXPECT_EQ(t.by_class[1], 2u * (records_per_writer - records_per_writer / 10));
    EXPECT_EQ(t.by_class[4], 2u * (records_per_writer / 10));
    EXPECT_EQ(t.duration_count, 2u * records_per_writer);
    EXPECT_EQ(t.upstream_errors[1], 2u * (records_per_writer / 1000));

    // The final window, counted by brute force (1 s slots for a 30 s window).
    const clock::time_point end = base + (records_per_writer - 1) * step;
    const std::int64_t oldest = epoch_of(end - 30s, 1s);
    const std::int64_t newest = epoch_of(end, 1s);
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;
    for (int i = 0; i < records_per_writer; ++i) {
        const std::int64_t e = epoch_of(base + i * step, 1s);
        if (e >= oldest && e <= newest) {
            ++requests;
            errors += i % 10 == 0 ? 1 : 0;
        }
    }
    const window_summary s = registry.summary(3, end, 30s);
    EXPECT_EQ(s.requests, 2 * requests);
    EXPECT_EQ(s.errors, 2 * errors);
    EXPECT_EQ(s.latency.count(), 2 * requests);
    EXPECT_EQ(s.latency.percentile(1.0),
              latency_histogram::bucket_value(latency_histogram::bucket_index(999)));
}

}  // namespace
}  // namespace switchyard::health
