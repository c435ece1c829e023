// proxy::field_allocator and its per-thread field_cache: blocks are recycled
// by size class, the cache keeps a bounded number per class, large blocks
// bypass it, each thread has its own, and basic_fields works on top of it.

#include <gtest/gtest.h>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "proxy/field_allocator.hpp"

#if defined(SWITCHYARD_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace switchyard::proxy {
namespace {

namespace http = boost::beast::http;

// Empties the calling thread's cache before and after each test, so that
// counts start from zero whatever ran before on this thread.
class field_cache_test : public ::testing::Test {
protected:
    void SetUp() override { drain(); }
    void TearDown() override { drain(); }

    static void drain() {
        auto& cache = field_cache::local();
        // Take every cached block of every class out, then free it.
        std::vector<std::pair<void*, std::size_t>> taken;
        for (std::size_t c = 0; c < field_cache::classes; ++c) {
            const std::size_t bytes = (c + 1) * field_cache::granule;
            for (;;) {
                const std::size_t before = cache.cached();
                void* p = cache.allocate(bytes);
                taken.emplace_back(p, bytes);
                if (cache.cached() == before) {
                    break;  // that one came from operator new: the class is empty
                }
            }
        }
        for (auto& [p, bytes] : taken) {
            ::operator delete(p);
        }
        ASSERT_EQ(cache.cached(), 0u);
    }
};

TEST_F(field_cache_test, a_freed_block_is_handed_out_again_for_the_same_class) {
    auto& cache = field_cache::local();
    void* a = cache.allocate(100);  // class 128
    cache.deallocate(a, 100);
    EXPECT_EQ(cache.cached(), 1u);
    EXPECT_EQ(cache.allocate(70), a) << "70 bytes is the same 128-byte class";
    EXPECT_EQ(cache.cached(), 0u);
    void* b = cache.allocate(40);  // class 64: not the cached 128-byte block
    cache.deallocate(a, 70);
    void* c = cache.allocate(64);
    EXPECT_NE(c, a);
    cache.deallocate(b, 40);
    cache.deallocate(c, 64);
    EXPECT_EQ(cache.cached(), 3u);
}

TEST_F(field_cache_test, last_freed_first_reused) {
    auto& cache = field_cache::local();
    void* a = cache.allocate(200);
    void* b = cache.allocate(200);
    cache.deallocate(a, 200);
    cache.deallocate(b, 200);
    EXPECT_EQ(cache.allocate(200), b);
    EXPECT_EQ(cache.allocate(200), a);
    cache.deallocate(a, 200);
    cache.deallocate(b, 200);
}

TEST_F(field_cache_test, blocks_over_the_largest_class_bypass_the_cache) {
    auto& cache = field_cache::local();
    void* big = cache.allocate(field_cache::largest + 1);
    cache.deallocate(big, field_cache::largest + 1);
    EXPECT_EQ(cache.cached(), 0u);
    void* edge = cache.allocate(field_cache::largest);
    cache.deallocate(edge, field_cache::largest);
    EXPECT_EQ(cache.cached(), 1u);
}

TEST_F(field_cache_test, each_class_keeps_at_most_keep_blocks) {
    auto& cache = field_cache::local();
    std::vector<void*> blocks;
    for (std::uint32_t i = 0; i < field_cache::keep + 10; ++i) {
        blocks.push_back(cache.allocate(300));
    }
    for (void* p : blocks) {
        cache.deallocate(p, 300);
    }
    EXPECT_EQ(cache.cached(), field_cache::keep);
}

TEST_F(field_cache_test, each_thread_has_its_own_cache) {
    auto& mine = field_cache::local();
    void* a = mine.allocate(100);
    mine.deallocate(a, 100);
    std::size_t theirs_before = 99;
    void* theirs_got = nullptr;
    std::thread([&] {
        auto& theirs = field_cache::local();
        theirs_before = theirs.cached();
        theirs_got = theirs.allocate(100);
        theirs.deallocate(theirs_got, 100);
    }).join();  // the thread's cache is freed as it exits (LeakSanitizer checks)
    EXPECT_EQ(theirs_before, 0u);
    EXPECT_NE(theirs_got, a) << "the other thread took a block cached here";
    EXPECT_EQ(mine.cached(), 1u);
}

#if defined(SWITCHYARD_ASAN)
TEST_F(field_cache_test, a_cached_block_is_poisoned_until_handed_out) {
    auto& cache = field_cache::local();
    char* p = static_cast<char*>(cache.allocate(100));
    cache.deallocate(p, 100);
    // All but the first word (the free list's link, which LeakSanitizer
    // must be able to follow).
    EXPECT_FALSE(__asan_address_is_poisoned(p));
    EXPECT_TRUE(__asan_address_is_poisoned(p + sizeof(void*)));
    EXPECT_TRUE(__asan_address_is_poisoned(p + 127));
    char* again = static_cast<char*>(cache.allocate(100));
    ASSERT_EQ(again, p);
    EXPECT_FALSE(__asan_address_is_poisoned(p));
    EXPECT_FALSE(__asan_address_is_poisoned(p + 99));
    cache.deallocate(again, 100);
}
#endif

TEST_F(field_cache_test, fields_on_it_recycle_their_elements) {
    const auto fill = [] {
        http::request<http::string_body, header_fields> req{http::verb::get, "/a/path", 11};
        req.set(http::field::host, "app.example");
        req.insert("X-Custom", "one");
        req.insert("X-Custom", "two");
        req.set(http::field::user_agent, std::string(300, 'u'));
        EXPECT_EQ(req.count("x-custom"), 2u);
        EXPECT_EQ(req[http::field::host], "app.example");
        req.erase("X-Custom");
        EXPECT_EQ(req.count("x-custom"), 0u);
        return std::string(req[http::field::user_agent]);
    };
    EXPECT_EQ(fill(), std::string(300, 'u'));
    const std::size_t after_first = field_cache::local().cached();
    EXPECT_GE(after_first, 4u) << "the elements went back to the cache";
    fill();
    EXPECT_EQ(field_cache::local().cached(), after_first)
        << "the second message took exactly the blocks the first gave back";
}

}  // namespace
}  // namespace switchyard::proxy
