#include "health/stats.hpp"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <limits>
#include <optional>

namespace switchyard::health {

namespace {

constexpr auto relaxed = std::memory_order_relaxed;

// The single writer owns these counters, so load + store is exact and avoids
// the locked read-modify-write (`lock xadd`) a fetch_add would cost on the
// request path.
template <class T>
inline void bump(std::atomic<T>& counter, T by = 1) {
    counter.store(counter.load(relaxed) + by, relaxed);
}

// Slot epochs: which slot_width interval a slot holds. These two are below
// any real epoch, so readers skip them like any slot outside their window.
constexpr std::int64_t never_used = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t resetting = never_used + 1;

// Floor division: time points before the clock's epoch (only ever seen in
// tests) must still map to the interval that contains them.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    std::int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) {
        --q;
    }
    return q;
}

constexpr unsigned sub_buckets = 1u << latency_histogram::sub_bucket_bits;

constexpr std::uint64_t bucket_lower(unsigned index) {
    if (index < 2 * sub_buckets) {
        return index;  // the linear range and octave 1 are 1 µs wide
    }
    const unsigned octave = index >> latency_histogram::sub_bucket_bits;
    const std::uint64_t sub = index & (sub_buckets - 1);
    return (sub_buckets + sub) << (octave - 1);
}

constexpr std::uint64_t bucket_width(unsigned index) {
    if (index < 2 * sub_buckets) {
        return 1;
    }
    return std::uint64_t{1} << ((index >> latency_histogram::sub_bucket_bits) - 1);
}

// Prometheus bounds in whole microseconds, so that the per-request bucket
// choice is integer compares; every bound is a whole number of µs.
constexpr std::array<std::uint64_t, totals::duration_bounds.size()> duration_bounds_micros = [] {
    std::array<std::uint64_t, totals::duration_bounds.size()> out{};
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<std::uint64_t>(totals::duration_bounds[i] * 1e6 + 0.5);
    }
    return out;
}();

// Index of the first bucket whose `le` bound holds `micros`; the last is +Inf.
// Counting instead of searching keeps it branch-free.
inline unsigned duration_bucket(std::uint64_t micros) {
    unsigned index = 0;
    for (const std::uint64_t bound : duration_bounds_micros) {
        index += micros > bound ? 1u : 0u;
    }
    return index;
}

// Slot widths preferred by the registry: round numbers, so that a window
// moves in whole seconds, in step with the guard's `evaluate_every` (1 s by
// default), and a 30 s window is read at 1 s resolution.
constexpr std::array<clock::duration, 14> slot_width_ladder{
    std::chrono::seconds(1),  std::chrono::seconds(2),  std::chrono::seconds(5),
    std::chrono::seconds(10), std::chrono::seconds(15), std::chrono::seconds(30),
    std::chrono::minutes(1),  std::chrono::minutes(2),  std::chrono::minutes(5),
    std::chrono::minutes(10), std::chrono::minutes(15), std::chrono::minutes(30),
    std::chrono::hours(1),    std::chrono::hours(2)};

// Slots a window may need: the slot its start falls in is only partly inside,
// hence +1; a spare keeps the slot a writer resets (its clock may be one slot
// ahead of a reader's) out of every window a reader is still reading, hence +1.
constexpr unsigned max_window_slots = 62;
constexpr unsigned extra_slots = 2;

// How many `b` cover `a` (0 for a non-positive `a`).
std::int64_t ceil_div(clock::duration a, clock::duration b) {
    return a.count() <= 0 ? 0 : (a.count() + b.count() - 1) / b.count();
}

clock::duration pick_slot_width(clock::duration longest_window) {
    for (const clock::duration width : slot_width_ladder) {
        if (ceil_div(longest_window, width) <= max_window_slots) {
            return width;
        }
    }
    return clock::duration((longest_window.count() + max_window_slots - 1) / max_window_slots);
}

}  // namespace

// ---------------------------------------------------------------- histogram

unsigned latency_histogram::bucket_index(std::uint64_t micros) {
    if (micros < sub_buckets) {
        return static_cast<unsigned>(micros);
    }
    const unsigned msb = static_cast<unsigned>(std::bit_width(micros)) - 1;  // >= sub_bucket_bits
    const unsigned octave = msb - sub_bucket_bits + 1;
    if (octave >= octaves) {
        return bucket_count - 1;
    }
    // The top sub_bucket_bits + 1 bits of the value: its leading 1 (worth
    // sub_buckets) and the sub-bucket number below it.
    const auto top = static_cast<unsigned>(micros >> (msb - sub_bucket_bits));
    return (octave << sub_bucket_bits) + top - sub_buckets;
}

double latency_histogram::bucket_value(unsigned index) {
    index = std::min(index, bucket_count - 1);
    // Midpoint of the integers the bucket holds: exact for 1 µs buckets and
    // within (width - 1) / 2 of any member, which is < 1/128 of its lower bound.
    return static_cast<double>(bucket_lower(index)) +
           static_cast<double>(bucket_width(index) - 1) / 2.0;
}

void latency_histogram::record(std::uint64_t micros, std::uint64_t count) {
    buckets_[bucket_index(micros)] += count;
    total_ += count;
}

void latency_histogram::add(const latency_histogram& other) {
    for (unsigned i = 0; i < bucket_count; ++i) {
        buckets_[i] += other.buckets_[i];
    }
    total_ += other.total_;
}

void latency_histogram::clear() {
    buckets_.fill(0);
    total_ = 0;
}

double latency_histogram::percentile(double q) const {
    if (total_ == 0) {
        return 0.0;
    }
    if (!(q > 0.0)) {  // also NaN
        q = 0.0;
    }
    q = std::min(q, 1.0);
    // Nearest rank: the ceil(q * n)-th smallest value (the first for q = 0).
    // The tolerance keeps representation error from bumping an exact rank
    // (0.07 * 100 is 7.000000000000001 in doubles) to the next one.
    const double exact = q * static_cast<double>(total_);
    std::uint64_t rank = total_;
    if (exact < static_cast<double>(total_)) {
        rank = static_cast<std::uint64_t>(std::ceil(exact * (1.0 - 1e-12)));
    }
    rank = std::clamp<std::uint64_t>(rank, 1, total_);
    std::uint64_t seen = 0;
    for (unsigned i = 0; i < bucket_count; ++i) {
        seen += buckets_[i];
        if (seen >= rank) {
            return bucket_value(i);
        }
    }
    return bucket_value(bucket_count - 1);  // only if total_ disagrees with the buckets
}

std::uint64_t latency_histogram::count_above(std::uint64_t micros) const {
    // The bucket holding `micros` is left out whole: exact below 128 µs,
    // otherwise values less than 1/64 above `micros` may be missed.
    std::uint64_t above = 0;
    for (unsigned i = bucket_index(micros) + 1; i < bucket_count; ++i) {
        above += buckets_[i];
    }
    return above;
}

double window_summary::rps() const {
    const double seconds = std::chrono::duration<double>(span).count();
    return seconds > 0.0 ? static_cast<double>(requests) / seconds : 0.0;
}

// ---------------------------------------------------------------- pool_shard

// One slot_width interval of the window. Only the owning worker writes it.
//
// Reuse protocol (a seqlock whose sequence is the epoch): the writer stores
// `resetting`, zeroes the counts, then stores the new epoch with release. A
// reader loads the epoch (acquire), copies the counts, then re-loads the epoch
// after an acquire fence and drops the copy if it changed, so a slot reset
// under a reader is skipped rather than read half old, half zero. Records
// made while a reader copies are not fenced: the copy may hold a request
// without its error or latency, at most the few requests in flight.
struct alignas(64) pool_shard::slot {
    std::atomic<std::int64_t> epoch{never_used};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> errors{0};
    // Range of latency buckets used in this epoch, so that readers and the
    // reset touch only the buckets in use, not all 1792. Empty: lowest > highest.
    std::atomic<std::uint32_t> lowest{latency_histogram::bucket_count};
    std::atomic<std::uint32_t> highest{0};
    std::array<std::atomic<std::uint32_t>, latency_histogram::bucket_count> latency{};
};

pool_shard::pool_shard(clock::duration slot_width, unsigned slot_count)
    : slot_width_(std::max(slot_width, clock::duration(1))),
      slot_count_(std::max(slot_count, 1u)),
      slots_(std::make_unique<slot[]>(slot_count_)) {}

pool_shard::~pool_shard() = default;

pool_shard::slot* pool_shard::slot_for(clock::time_point now) {
    const clock::rep ticks = now.time_since_epoch().count();
    if (ticks >= current_begin_ && ticks < current_end_) [[likely]] {
        return current_;
    }
    return advance(ticks);
}

pool_shard::slot* pool_shard::advance(clock::rep ticks) {
    const std::int64_t width = slot_width_.count();
    const std::int64_t epoch = floor_div(ticks, width);
    const auto count = static_cast<std::int64_t>(slot_count_);
    slot& s = slots_[static_cast<std::size_t>(((epoch % count) + count) % count)];
    const std::int64_t held = s.epoch.load(relaxed);  // we are its only writer
    if (held > epoch) {
        // `now` is older than the ring (a caller's clock went back by more
        // than the whole window): the slot belongs to a later interval.
        return nullptr;
    }
    if (held < epoch) {
        s.epoch.store(resetting, relaxed);
        // Orders the store above before the zeroing below for a reader that
        // sees any of the zeros (see the reuse protocol on `slot`).
        std::atomic_thread_fence(std::memory_order_release);
        const std::uint32_t highest = s.highest.load(relaxed);
        for (std::uint32_t i = s.lowest.load(relaxed); i <= highest; ++i) {
            s.latency[i].store(0, relaxed);
        }
        s.lowest.store(latency_histogram::bucket_count, relaxed);
        s.highest.store(0, relaxed);
        s.requests.store(0, relaxed);
        s.errors.store(0, relaxed);
        s.epoch.store(epoch, std::memory_order_release);
    }
    current_ = &s;
    current_begin_ = epoch * width;
    current_end_ = current_begin_ + width;
    return &s;
}

void pool_shard::record(clock::time_point now, std::chrono::microseconds latency, outcome result,
                        unsigned status, bool judged) {
    const std::uint64_t micros =
        latency.count() > 0 ? static_cast<std::uint64_t>(latency.count()) : 0;

    if (status >= 100 && status < 600) {
        bump(by_class_[status / 100 - 1]);
    }
    bump(duration_buckets_[duration_bucket(micros)]);
    bump(duration_sum_micros_, micros);

    if (!judged) {
        return;
    }
    slot* s = slot_for(now);
    if (s == nullptr) {
        return;
    }
    // Request first, latency last: a reader copies in the opposite order, so
    // (on x86's ordered stores) it never sees a latency or an error whose
    // request it has not seen.
    bump(s->requests);
    if (result != outcome::success) {
        bump(s->errors);
    }
    const unsigned index = latency_histogram::bucket_index(micros);
    bump(s->latency[index], std::uint32_t{1});
    if (index < s->lowest.load(relaxed)) {
        s->lowest.store(index, relaxed);
    }
    if (index > s->highest.load(relaxed)) {
        s->highest.store(index, relaxed);
    }
}

void pool_shard::record_upstream_error(upstream_error_kind kind) {
    bump(upstream_errors_[static_cast<std::size_t>(kind)]);
}

void pool_shard::record_local_response(unsigned status) {
    if (status >= 100 && status < 600) {
        bump(by_class_[status / 100 - 1]);
    }
}

void pool_shard::collect(clock::time_point now, clock::duration window, window_summary& out) const {
    const std::int64_t width = slot_width_.count();
    const auto count = static_cast<std::int64_t>(slot_count_);
    const clock::rep ticks = now.time_since_epoch().count();
    const std::int64_t newest = floor_div(ticks, width);
    // The ring holds `count` slots; a longer window (or one that would
    // overflow `ticks - window`) reads them all.
    std::int64_t oldest = newest - count + 1;
    if (window.count() < count * width) {
        oldest =
            std::max(oldest, floor_div(ticks - std::max<clock::rep>(window.count(), 0), width));
    }
    out.span = std::max({out.span, clock::duration(ticks - oldest * width), slot_width_});

    std::array<std::uint32_t, latency_histogram::bucket_count> copy;  // filled lowest..highest
    for (std::int64_t epoch = oldest; epoch <= newest; ++epoch) {
        const slot& s = slots_[static_cast<std::size_t>(((epoch % count) + count) % count)];
        if (s.epoch.load(std::memory_order_acquire) != epoch) {
            continue;  // never used, being reset, or holding another interval
        }
        // Any mix of old and new range ends stays within the array; a mix
        // from before and after a reset is dropped by the check below.
        const std::size_t lowest = s.lowest.load(relaxed);
        const std::size_t end = std::size_t{s.highest.load(relaxed)} + 1;
        for (std::size_t i = lowest; i < end; ++i) {
            copy[i] = s.latency[i].load(relaxed);
        }
        const std::uint64_t errors = s.errors.load(relaxed);
        const std::uint64_t requests = s.requests.load(relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (s.epoch.load(relaxed) != epoch) {
            continue;  // reset while we copied
        }
        out.requests += requests;
        out.errors += std::min(errors, requests);
        // Plain arrays from here on, so this loop vectorizes.
        std::uint64_t* merged = out.latency.buckets_.data();
        std::uint64_t added = 0;
        for (std::size_t i = lowest; i < end; ++i) {
            merged[i] += copy[i];
            added += copy[i];
        }
        out.latency.total_ += added;
    }
}

void pool_shard::collect_totals(totals& out) const {
    for (std::size_t i = 0; i < by_class_.size(); ++i) {
        out.by_class[i] += by_class_[i].load(relaxed);
    }
    for (std::size_t i = 0; i < upstream_errors_.size(); ++i) {
        out.upstream_errors[i] += upstream_errors_[i].load(relaxed);
    }
    // Every request lands in exactly one bucket, so their sum is the count.
    std::uint64_t count = 0;
    for (std::size_t i = 0; i < duration_buckets_.size(); ++i) {
        const std::uint64_t n = duration_buckets_[i].load(relaxed);
        out.duration_buckets[i] += n;
        count += n;
    }
    out.duration_count += count;
    out.duration_sum_seconds += static_cast<double>(duration_sum_micros_.load(relaxed)) / 1e6;
}

// ---------------------------------------------------------------- registry

// One pool's shards, one per worker. Each on its own cache line(s): adjacent
// workers write their totals and writer caches at the same time.
struct stats_registry::pool_shards {
    struct alignas(64) padded {
        std::optional<pool_shard>
            shard;  // optional: pool_shard is neither default-constructible nor movable
    };

    pool_shards(unsigned workers, clock::duration slot_width, unsigned slot_count)
        : shards(std::make_unique<padded[]>(workers)) {
        for (unsigned i = 0; i < workers; ++i) {
            shards[i].shard.emplace(slot_width, slot_count);
        }
    }

    std::unique_ptr<padded[]> shards;
};

stats_registry::stats_registry(unsigned workers, clock::duration longest_window)
    : workers_(workers),
      slot_width_(pick_slot_width(longest_window)),
      slot_count_(
          static_cast<unsigned>(std::max<std::int64_t>(ceil_div(longest_window, slot_width_), 1)) +
          extra_slots),
      pools_(std::make_unique<std::atomic<pool_shards*>[]>(routing::max_pools)) {}

stats_registry::~stats_registry() {
    for (std::uint32_t id = 0; id < routing::max_pools; ++id) {
        delete pools_[id].load(std::memory_order_acquire);
    }
}

void stats_registry::ensure(routing::pool_id id) {
    assert(id < routing::max_pools);
    if (id >= routing::max_pools || pools_[id].load(std::memory_order_acquire) != nullptr) {
        return;
    }
    auto fresh = std::make_unique<pool_shards>(workers_, slot_width_, slot_count_);
    // A compare-exchange, so that two threads racing on one id leak nothing;
    // release publishes the constructed shards to shard() and summary().
    pool_shards* expected = nullptr;
    if (pools_[id].compare_exchange_strong(expected, fresh.get(), std::memory_order_release,
                                           std::memory_order_acquire)) {
        fresh.release();
    }
}

pool_shard& stats_registry::shard(routing::pool_id id, unsigned worker) {
    assert(id < routing::max_pools && worker < workers_);
    // Acquire, although the snapshot naming the pool is posted to the worker
    // after ensure() (which already orders it): free on x86, and it keeps a
    // worker correct however the id reached it.
    pool_shards* pool = pools_[id].load(std::memory_order_acquire);
    assert(pool != nullptr && "stats_registry::ensure() was not called for this pool");
    return *pool->shards[worker].shard;
}

window_summary stats_registry::summary(routing::pool_id id, clock::time_point now,
                                       clock::duration window) const {
    window_summary out;
    if (id >= routing::max_pools) {
        return out;
    }
    const pool_shards* pool = pools_[id].load(std::memory_order_acquire);
    if (pool == nullptr) {
        return out;
    }
    for (unsigned i = 0; i < workers_; ++i) {
        pool->shards[i].shard->collect(now, window, out);
    }
    return out;
}

totals stats_registry::pool_totals(routing::pool_id id) const {
    totals out;
    if (id >= routing::max_pools) {
        return out;
    }
    const pool_shards* pool = pools_[id].load(std::memory_order_acquire);
    if (pool == nullptr) {
        return out;
    }
    for (unsigned i = 0; i < workers_; ++i) {
        pool->shards[i].shard->collect_totals(out);
    }
    return out;
}

}  // namespace switchyard::health
