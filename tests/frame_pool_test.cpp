// proxy::pooled_frame and frame_cache: a coroutine whose promise is
// pooled_frame behaves as any Asio awaitable (values, exceptions, awaiting
// async operations and other awaitables, cancellation state), and its frame
// is reused from the thread's cache instead of being allocated per call.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "proxy/frame_pool.hpp"

namespace switchyard::proxy::test_frames {

namespace net = boost::asio;
using executor = net::io_context::executor_type;
template <class T>
using awaitable = net::awaitable<T, executor>;

// A tag in the signature selects the pooled promise (as session.cpp does for
// session::proxy_request).
struct pooled {};

}  // namespace switchyard::proxy::test_frames

template <class... Args>
struct std::coroutine_traits<switchyard::proxy::test_frames::awaitable<std::string>,
                             switchyard::proxy::test_frames::pooled, Args...> {
    using promise_type =
        switchyard::proxy::pooled_frame<std::string, switchyard::proxy::test_frames::executor>;
};

namespace switchyard::proxy::test_frames {
namespace {

using namespace std::chrono_literals;

awaitable<int> plain_wait(net::steady_timer& timer) {
    timer.expires_after(1ms);
    co_await timer.async_wait(net::use_awaitable_t<executor>{});
    co_return 40;
}

// Awaits a timer, a plain awaitable and this_coro state; throws on request.
awaitable<std::string> pooled_work(pooled, net::steady_timer& timer, bool fail) {
    const auto ex = co_await net::this_coro::executor;
    const int from_plain = co_await plain_wait(timer);
    timer.expires_after(1ms);
    co_await timer.async_wait(net::use_awaitable_t<executor>{});
    auto state = co_await net::this_coro::cancellation_state;
    if (fail) {
        throw std::runtime_error("asked to fail");
    }
    std::string out = std::to_string(from_plain + 2);
    if (state.cancelled() != net::cancellation_type::none) {
        out += " cancelled";
    }
    if (ex != timer.get_executor()) {
        out += " on another executor";
    }
    co_return out;
}

struct outcome {
    std::optional<std::string> value;
    std::string error;
};

outcome run_once(net::io_context& ioc, bool fail) {
    net::steady_timer timer(ioc);
    outcome out;
    net::co_spawn(ioc, pooled_work(pooled{}, timer, fail),
                  [&](std::exception_ptr e, std::string v) {
                      if (e) {
                          try {
                              std::rethrow_exception(e);
                          } catch (const std::exception& x) {
                              out.error = x.what();
                          }
                      } else {
                          out.value = std::move(v);
                      }
                  });
    ioc.restart();
    ioc.run();
    return out;
}

TEST(frame_pool, a_pooled_coroutine_awaits_and_returns_like_any_other) {
    net::io_context ioc;
    const outcome ok = run_once(ioc, false);
    ASSERT_TRUE(ok.value.has_value()) << ok.error;
    EXPECT_EQ(*ok.value, "42");
    const outcome failed = run_once(ioc, true);
    EXPECT_FALSE(failed.value.has_value());
    EXPECT_EQ(failed.error, "asked to fail");
}

TEST(frame_pool, the_frame_is_reused_from_the_threads_cache) {
    net::io_context ioc;
    auto& cache = frame_cache::local();
    ASSERT_TRUE(run_once(ioc, false).value.has_value());
    // The frame went back to the cache, which now holds frames of its size.
    const std::size_t size = cache.frame_size();
    ASSERT_NE(size, 0u);
    const std::size_t cached = cache.cached();
    ASSERT_GE(cached, 1u);
    // Later calls take it and give it back: the cache neither grows nor
    // shrinks, so nothing was allocated for them.
    for (int i = 0; i < 20; ++i) {
        ASSERT_TRUE(run_once(ioc, i % 2 == 1).value.has_value() == (i % 2 == 0));
        EXPECT_EQ(cache.cached(), cached);
    }
    EXPECT_EQ(cache.frame_size(), size);
}

TEST(frame_pool, the_cache_keeps_one_size_and_a_bounded_number) {
    frame_cache cache;
    void* a = cache.allocate(3000);
    void* b = cache.allocate(3000);
    void* other = cache.allocate(100);
    cache.deallocate(a, 3000);  // fixes the size: 3000
    cache.deallocate(other, 100);  // another size: freed, not kept
    EXPECT_EQ(cache.frame_size(), 3000u);
    EXPECT_EQ(cache.cached(), 1u);
    EXPECT_EQ(cache.allocate(3000), a);  // the same block again
    cache.deallocate(a, 3000);
    cache.deallocate(b, 3000);
    EXPECT_EQ(cache.cached(), 2u);

    std::vector<void*> many;
    for (std::size_t i = 0; i < frame_cache::keep + 10; ++i) {
        many.push_back(cache.allocate(3000));
    }
    for (void* p : many) {
        cache.deallocate(p, 3000);
    }
    EXPECT_EQ(cache.cached(), frame_cache::keep);
}

}  // namespace
}  // namespace switchyard::proxy::test_frames
