#pragma once
// Per-pool request statistics, written per worker and merged by the reader
// (STYLE rule 3).
//
// Every worker owns one `pool_shard` per pool: the worker thread is its only
// writer, so recording is a handful of relaxed stores on memory nobody else
// writes: no lock, no read-modify-write shared across workers, no allocation.
// The control thread (guard, admin, metrics scrape) reads every worker's shard
// with relaxed loads and merges them. A reader may see a request counted
// without its latency for an instant; nothing more.
//
// The shard keeps two things:
//  * a sliding window of time slots, each with request and error counts and a
//    log-linear latency histogram (HdrHistogram style, 64 sub-buckets per
//    power of two, reported at the bucket midpoint: relative error < 1 %),
//    read by the guard and the admin API;
//  * monotonic totals for Prometheus: requests by status class, upstream
//    errors by kind, and a latency histogram on fixed buckets.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "routing/snapshot.hpp"

namespace switchyard::health {

using clock = std::chrono::steady_clock;

// Log-linear histogram of latencies in microseconds. Buckets 0..63 hold the
// values 0..63 exactly; above that, octave k (1..27) splits [2^(k+5), 2^(k+6))
// into 64 equal sub-buckets, so a bucket is never wider than 1/64 of its lower
// bound and its midpoint is within 1/128 (< 1 %) of any value in it. The top
// bucket ends at 2^33 µs (~2.4 h); larger values land in it. Plain
// (non-atomic) counts: used for merged results on the reader side.
class latency_histogram {
public:
    static constexpr unsigned sub_bucket_bits = 6;  // 64 sub-buckets per octave
    static constexpr unsigned octaves = 28;
    static constexpr unsigned bucket_count = octaves << sub_bucket_bits;

    static unsigned bucket_index(std::uint64_t micros);
    // Midpoint of the bucket, in microseconds.
    static double bucket_value(unsigned index);

    void record(std::uint64_t micros, std::uint64_t count = 1);
    void add(const latency_histogram& other);
    void clear();
    std::uint64_t count() const { return total_; }
    // q in [0,1]; 0 when empty. Result in microseconds.
    double percentile(double q) const;
    // How many recorded values are strictly greater than `micros`
    // (at bucket resolution: buckets whose lower bound is above it).
    std::uint64_t count_above(std::uint64_t micros) const;
    const std::array<std::uint64_t, bucket_count>& buckets() const { return buckets_; }

private:
    friend class pool_shard;  // merges its per-slot buckets by index

    std::array<std::uint64_t, bucket_count> buckets_{};
    std::uint64_t total_ = 0;
};

// Outcome class of one request as the guard counts it.
enum class outcome : std::uint8_t {
    success,         // any response below 500
    upstream_5xx,    // the upstream answered 5xx
    connect_error,   // could not connect (after retries)
    timeout,         // response_timeout / read_timeout
    reset,           // connection reset or closed before a full response
};

enum class upstream_error_kind : std::uint8_t { connect = 0, timeout = 1, reset = 2 };

// Merged figures of one pool over a window.
struct window_summary {
    std::uint64_t requests = 0;
    std::uint64_t errors = 0;
    latency_histogram latency;  // microseconds
    clock::duration span{};     // time actually covered (for rps)

    double error_rate() const { return requests ? double(errors) / double(requests) : 0.0; }
    double percentile_ms(double q) const { return latency.percentile(q) / 1000.0; }
    double rps() const;
};

// Monotonic totals, merged for Prometheus.
struct totals {
    static constexpr std::array<double, 14> duration_bounds{  // seconds, Prometheus `le`
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    std::array<std::uint64_t, 5> by_class{};  // 1xx..5xx
    std::array<std::uint64_t, 3> upstream_errors{};  // by upstream_error_kind
    std::array<std::uint64_t, duration_bounds.size() + 1> duration_buckets{};  // non-cumulative, last = +Inf
    double duration_sum_seconds = 0;
    std::uint64_t duration_count = 0;
};

// One worker's statistics for one pool. Single writer (the owning worker),
// any number of readers.
class pool_shard {
public:
    // `slot_width` x `slot_count` is the longest window it can answer.
    // Allocates all slot memory here, once. A `slot_width` below one clock tick
    // or a `slot_count` of 0 is raised to 1.
    pool_shard(clock::duration slot_width, unsigned slot_count);
    ~pool_shard();
    pool_shard(const pool_shard&) = delete;
    pool_shard& operator=(const pool_shard&) = delete;

    // Writer side. `judged` = false for requests routed by override_header:
    // they count in totals but not in the window the guard judges.
    // `status` is the status sent downstream (0 when none was sent).
    void record(clock::time_point now, std::chrono::microseconds latency, outcome result,
                unsigned status, bool judged);
    void record_upstream_error(upstream_error_kind kind);
    // A response the proxy made itself for this pool, with no upstream
    // exchange (503: no usable endpoint). Counts in the totals by status
    // class only: not in the durations, not in the guard's window.
    void record_local_response(unsigned status);

    // Reader side: adds the slots that overlap (now - window, now] to `out`
    // (whole slots: at least the current one, at most `slot_count`) and sets
    // out.span to the time they cover, at least one slot width.
    void collect(clock::time_point now, clock::duration window, window_summary& out) const;
    void collect_totals(totals& out) const;

private:
    struct slot;
    slot* slot_for(clock::time_point now);  // writer only; nullptr if too old
    slot* advance(clock::rep ticks);        // writer only, cold path of slot_for

    clock::duration slot_width_;
    unsigned slot_count_;
    std::unique_ptr<slot[]> slots_;
    // Writer-only cache of the slot being filled and the clock ticks it
    // covers, [current_begin_, current_end_): saves two divisions per record.
    // Readers never touch these.
    slot* current_ = nullptr;
    clock::rep current_begin_ = 0;
    clock::rep current_end_ = 0;
    // totals (relaxed atomics, single writer)
    std::array<std::atomic<std::uint64_t>, 5> by_class_{};
    std::array<std::atomic<std::uint64_t>, 3> upstream_errors_{};
    std::array<std::atomic<std::uint64_t>, totals::duration_bounds.size() + 1> duration_buckets_{};
    std::atomic<std::uint64_t> duration_sum_micros_{0};
};

// All shards of all pools: pool_id x worker. The control thread creates a
// pool's shards (ensure) before it publishes a snapshot naming that pool, so
// a worker never sees a missing one. Workers call shard(); readers summary().
class stats_registry {
public:
    // `longest_window`: the largest guard window any service may use. Slots
    // are 1 s wide while 62 of them cover it (windows up to 62 s), else the
    // next of 2 s, 5 s, 10 s, 15 s, 30 s, 1 min ... that does; a shard keeps
    // two slots more than the window needs (at most 64). Pass the largest
    // configured guard window: the 5 min default means 5 s slots, so a 30 s
    // window would move in 5 s steps.
    stats_registry(unsigned workers, clock::duration longest_window = std::chrono::minutes(5));
    ~stats_registry();
    stats_registry(const stats_registry&) = delete;
    stats_registry& operator=(const stats_registry&) = delete;

    unsigned workers() const { return workers_; }

    // Control thread. Idempotent.
    void ensure(routing::pool_id id);

    // Worker `worker` only (or a reader, for const use). The pool must have been ensured.
    pool_shard& shard(routing::pool_id id, unsigned worker);

    // Any thread.
    window_summary summary(routing::pool_id id, clock::time_point now, clock::duration window) const;
    totals pool_totals(routing::pool_id id) const;

private:
    struct pool_shards;
    unsigned workers_;
    clock::duration slot_width_;
    unsigned slot_count_;
    std::unique_ptr<std::atomic<pool_shards*>[]> pools_;  // routing::max_pools entries
};

}  // namespace switchyard::health
