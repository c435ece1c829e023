#pragma once
// Counts heap allocations made through global operator new, so benchmarks can
// report allocations per operation. Linking switchyard_bench_support replaces
// the global operator new/delete of the benchmark executable.

#include <cstdint>

namespace switchyard::bench {

// Allocations made by any thread since the process started.
std::uint64_t allocations();

}  // namespace switchyard::bench
