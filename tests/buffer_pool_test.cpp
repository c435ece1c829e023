// proxy::buffer_pool: relay buffers are reused last-in first-out, the pool
// keeps what a burst needed while bursts recur, and each trim frees the
// buffers that stayed free for a whole interval.

#include <gtest/gtest.h>

#include <vector>

#include "proxy/worker.hpp"

namespace switchyard::proxy {
namespace {

std::vector<buffer_pool::buffer> take(buffer_pool& pool, std::size_t n) {
    std::vector<buffer_pool::buffer> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back(pool.acquire());
    }
    return out;
}

void give(buffer_pool& pool, std::vector<buffer_pool::buffer>& bufs) {
    for (auto& b : bufs) {
        pool.release(std::move(b));
    }
    bufs.clear();
}

TEST(buffer_pool, reuses_the_last_released_buffer) {
    buffer_pool pool;
    auto a = pool.acquire();
    const char* first = a.get();
    pool.release(std::move(a));
    EXPECT_EQ(pool.free_count(), 1u);
    auto b = pool.acquire();
    EXPECT_EQ(b.get(), first);
    EXPECT_EQ(pool.free_count(), 0u);
}

TEST(buffer_pool, keeps_a_burst_while_it_recurs_and_frees_it_after) {
    buffer_pool pool;
    // A burst of 40 requests in flight (80 buffers), then quiet.
    auto burst = take(pool, 80);
    give(pool, burst);
    EXPECT_EQ(pool.free_count(), 80u);

    // The burst recurs within the interval: the trim keeps all it used.
    pool.trim();
    burst = take(pool, 80);
    give(pool, burst);
    pool.trim();
    EXPECT_EQ(pool.free_count(), 80u);

    // Only 10 are needed in the next interval: the 70 never taken go.
    auto small = take(pool, 10);
    give(pool, small);
    pool.trim();
    EXPECT_EQ(pool.free_count(), 10u);

    // A quiet interval frees the rest.
    pool.trim();
    EXPECT_EQ(pool.free_count(), 0u);
}

TEST(buffer_pool, trim_keeps_the_buffers_in_use_out_of_the_count) {
    buffer_pool pool;
    auto warm = take(pool, 6);
    give(pool, warm);
    pool.trim();  // the interval before: all 6 were used
    // Four taken and still held across the trim: the two that stayed free go.
    auto held = take(pool, 4);
    pool.trim();
    EXPECT_EQ(pool.free_count(), 0u);
    give(pool, held);
    EXPECT_EQ(pool.free_count(), 4u);
}

TEST(buffer_pool, bounds_what_it_keeps) {
    buffer_pool pool;
    auto many = take(pool, buffer_pool::max_free + 5);
    give(pool, many);
    EXPECT_EQ(pool.free_count(), buffer_pool::max_free);
}

}  // namespace
}  // namespace switchyard::proxy
