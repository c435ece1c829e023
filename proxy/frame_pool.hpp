#pragma once
// Frames of the data path's large coroutines from a per-thread cache.
//
// Asio recycles coroutine frames through a small per-thread cache, but only
// frames of up to 255 chunks (about 1 KB). session::proxy_request's frame is
// about 3.8 KB with GCC 12 (every local that lives across a co_await has its
// own slot), so each request took it from malloc and gave it back to free,
// and each such miss also made Asio evict one cached small frame, so that the
// next small frame missed too: about 1,000 instructions a proxied request
// (callgrind; BENCHMARKS.md, session 7).
//
// pooled_frame<T> is Asio's own promise type for awaitable<T> with only
// operator new and delete added, and no state: the promise sits where Asio's
// would, so Asio's handles to its own frame type, made from this frame's
// address, are handles to this frame (the awaiters Asio's await_transform
// returns take such a handle; pooled_frame's await_transform passes them
// one). A coroutine opts in with a std::coroutine_traits specialization for
// its signature (session.cpp does it for proxy_request).
// Its frames come from frame_cache: per thread, one frame size (the first
// one freed; others go to operator new), at most `keep` frames kept.
//
// Thread: a frame is freed on the thread that runs its coroutine, which is
// the worker that allocated it; a frame freed elsewhere just joins that
// thread's cache. Under AddressSanitizer a cached frame is poisoned until it
// is handed out again.

#include <boost/asio/awaitable.hpp>

#include <coroutine>
#include <cstddef>
#include <new>
#include <utility>
#include <vector>

#include "proxy/asan.hpp"

namespace switchyard::proxy {

class frame_cache {
public:
    static constexpr std::size_t keep = 256;

    frame_cache() { free_.reserve(keep); }
    frame_cache(const frame_cache&) = delete;
    frame_cache& operator=(const frame_cache&) = delete;
    ~frame_cache() {
        for (void* p : free_) {
            unpoison(p);
            ::operator delete(p);
        }
    }

    // The calling thread's cache.
    static frame_cache& local() {
        static thread_local frame_cache cache;
        return cache;
    }

    void* allocate(std::size_t size) {
        if (size == size_ && !free_.empty()) {
            void* p = free_.back();
            free_.pop_back();
            unpoison(p);
            return p;
        }
        return ::operator new(size);
    }

    void deallocate(void* p, std::size_t size) noexcept {
        if (size_ == 0) {
            size_ = size;
        }
        if (size == size_ && free_.size() < keep) {
            poison(p);
            free_.push_back(p);  // within the reserved capacity: no allocation
            return;
        }
        ::operator delete(p);
    }

    std::size_t cached() const { return free_.size(); }
    std::size_t frame_size() const { return size_; }

private:
    void poison([[maybe_unused]] void* p) const {
#if defined(SWITCHYARD_ASAN)
        ASAN_POISON_MEMORY_REGION(p, size_);
#endif
    }
    void unpoison([[maybe_unused]] void* p) const {
#if defined(SWITCHYARD_ASAN)
        ASAN_UNPOISON_MEMORY_REGION(p, size_);
#endif
    }

    std::size_t size_ = 0;  // the one frame size cached (0: none yet)
    std::vector<void*> free_;
};

template <class T, class Executor>
class pooled_frame : public boost::asio::detail::awaitable_frame<T, Executor> {
    using base_frame = boost::asio::detail::awaitable_frame<T, Executor>;

public:
    static void* operator new(std::size_t size) { return frame_cache::local().allocate(size); }
    static void operator delete(void* p, std::size_t size) noexcept {
        frame_cache::local().deallocate(p, size);
    }

    // Everything awaited is Asio's await_transform's, whose awaiters take a
    // handle to Asio's frame type: they get one to this same frame.
    template <class U>
    auto await_transform(U&& u) {
        using awaiter = decltype(base_frame::await_transform(std::forward<U>(u)));
        return handle_adapter<awaiter>{base_frame::await_transform(std::forward<U>(u))};
    }

private:
    template <class Awaiter>
    struct handle_adapter {
        Awaiter inner;
        bool await_ready() { return inner.await_ready(); }
        template <class Promise>
        auto await_suspend(std::coroutine_handle<Promise> h) {
            return inner.await_suspend(std::coroutine_handle<base_frame>::from_address(h.address()));
        }
        decltype(auto) await_resume() { return inner.await_resume(); }
    };
};

}  // namespace switchyard::proxy
