#pragma once
// The allocator of the data path's header fields: per-thread free lists of
// small blocks, so that the dozen field elements a proxied request creates
// and destroys (basic_fields allocates one per field, and one for the
// target) are recycled by their worker instead of going through malloc and
// free each time (BENCHMARKS.md, session 6).
//
// Nothing is shared between threads: each thread has its own cache, and a
// block freed on another thread than the one that took it simply joins that
// thread's lists. Blocks over `largest` bytes go straight to operator new.
// Each class keeps at most `keep` free blocks; the rest are freed, so at
// most ~2.3 MiB stay cached per thread. The bound must cover the swing of a
// worker's requests in flight (a dozen fields each, request and response):
// at 128, 64 connections whose in-flight count swings by thirty overflowed
// and drained it, 0.4 mallocs per request.
//
// Under AddressSanitizer a cached block is poisoned (all but its first
// word, the free list's link) until it is handed out again, so a use after
// free is still caught.

#include <boost/beast/http/fields.hpp>

#include <cstddef>
#include <cstdint>
#include <new>

#include "proxy/asan.hpp"

namespace switchyard::proxy {

class field_cache {
public:
    static constexpr std::size_t granule = 64;
    static constexpr std::size_t classes = 8;
    static constexpr std::size_t largest = granule * classes;  // 512 bytes
    static constexpr std::uint32_t keep = 1024;

    constexpr field_cache() = default;
    field_cache(const field_cache&) = delete;
    field_cache& operator=(const field_cache&) = delete;
    ~field_cache();

    // The calling thread's cache.
    static field_cache& local() noexcept {
        static thread_local field_cache cache;
        return cache;
    }

    void* allocate(std::size_t bytes) {
        const std::size_t c = (bytes - 1) / granule;  // bytes == 0: huge, not cached
        if (c >= classes) {
            return ::operator new(bytes);
        }
        node* n = free_[c];
        if (n == nullptr) {
            return ::operator new((c + 1) * granule);
        }
#if defined(SWITCHYARD_ASAN)
        ASAN_UNPOISON_MEMORY_REGION(n, (c + 1) * granule);
#endif
        free_[c] = n->next;
        --count_[c];
        return n;
    }

    void deallocate(void* p, std::size_t bytes) noexcept {
        const std::size_t c = (bytes - 1) / granule;
        if (c >= classes || count_[c] >= keep) {
            ::operator delete(p);
            return;
        }
        node* n = ::new (p) node{free_[c]};
        free_[c] = n;
        ++count_[c];
#if defined(SWITCHYARD_ASAN)
        // All but the link: LeakSanitizer does not follow pointers kept in
        // poisoned memory, and would call the rest of the list leaked (a
        // live thread's cache at exit, as in the fuzz target).
        ASAN_POISON_MEMORY_REGION(reinterpret_cast<char*>(n) + sizeof(node),
                                  (c + 1) * granule - sizeof(node));
#endif
    }

    // Free blocks held, all classes (for tests).
    std::size_t cached() const noexcept;

private:
    struct node {
        node* next;
    };
    node* free_[classes] = {};
    std::uint32_t count_[classes] = {};
};

template <class T>
struct field_allocator {
    using value_type = T;

    field_allocator() noexcept = default;
    template <class U>
    field_allocator(const field_allocator<U>&) noexcept {}

    T* allocate(std::size_t n) {
        static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
        return static_cast<T*>(field_cache::local().allocate(n * sizeof(T)));
    }
    void deallocate(T* p, std::size_t n) noexcept {
        field_cache::local().deallocate(p, n * sizeof(T));
    }

    friend bool operator==(const field_allocator&, const field_allocator&) noexcept { return true; }
};

// The fields of every message on the data path.
using header_fields = boost::beast::http::basic_fields<field_allocator<char>>;

}  // namespace switchyard::proxy
