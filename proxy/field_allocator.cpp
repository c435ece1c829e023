#include "proxy/field_allocator.hpp"

namespace switchyard::proxy {

field_cache::~field_cache() {
    for (std::size_t c = 0; c < classes; ++c) {
        while (node* n = free_[c]) {
#if defined(SWITCHYARD_ASAN)
            ASAN_UNPOISON_MEMORY_REGION(n, (c + 1) * granule);
#endif
            free_[c] = n->next;
            ::operator delete(n);
        }
        count_[c] = 0;
    }
}

std::size_t field_cache::cached() const noexcept {
    std::size_t n = 0;
    for (const auto k : count_) {
        n += k;
    }
    return n;
}

}  // namespace switchyard::proxy
