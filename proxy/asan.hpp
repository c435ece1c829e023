#pragma once
// SWITCHYARD_ASAN: defined when AddressSanitizer instruments this build (GCC
// or clang), with ASan's interface included, for the per-thread caches that
// poison what they hold (field_allocator.hpp, frame_pool.hpp).

#if defined(__SANITIZE_ADDRESS__)
#define SWITCHYARD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SWITCHYARD_ASAN 1
#endif
#endif
#if defined(SWITCHYARD_ASAN)
#include <sanitizer/asan_interface.h>
#endif
