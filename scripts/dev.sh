#!/usr/bin/env bash
# The two commands of the README:
#   scripts/dev.sh demo   install what is missing, build (release), run `switchyard demo`
#   scripts/dev.sh test   install what is missing, build (ASan+UBSan), run every test
# Also: scripts/dev.sh setup | build | bench
#   scripts/dev.sh fuzz [SECONDS] [LIBFUZZER_FLAG...]   the request fuzzer (tests/fuzz/README.md)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian bookworm packages the build and the tests need (SPEC stack, plus the
# toolchain). Installed only when missing; needs root (or sudo) the first time.
packages=(
  build-essential cmake ninja-build ccache pkg-config
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev libyaml-cpp-dev prometheus-cpp-dev libgtest-dev libbenchmark-dev
  openssl curl
)

# The tests also check the /metrics exposition with promtool (Debian package
# `prometheus`); the demo does not need it.
test_packages=(prometheus)

# The fuzz target needs clang and its libFuzzer runtime (bookworm: clang 14).
fuzz_packages=(clang libclang-rt-14-dev)

setup() {  # setup [EXTRA_PACKAGE...]
  local missing=()
  for p in "${packages[@]}" "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  echo "setup: installing ${missing[*]}" >&2
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

jobs() { nproc 2>/dev/null || echo 2; }

# ccache hits across checkouts in different folders (CI clones afresh).
export CCACHE_BASEDIR="$PWD"

build() {  # build DIR TYPE SANITIZE [CMAKE_ARG...]
  local dir=$1 type=$2 sanitize=$3
  shift 3
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" -DSWITCHYARD_SANITIZE="$sanitize" \
        -DSWITCHYARD_BUILD_TESTS="$sanitize" -DSWITCHYARD_BUILD_BENCH=OFF "$@" >/dev/null
  cmake --build "$dir" -j "$(jobs)"
}

case "${1:-}" in
  setup) setup ;;
  build) setup; build build/release Release OFF ;;
  demo)
    shift
    setup
    build build/release Release OFF
    exec build/release/cli/switchyard demo "$@"
    ;;
  test)
    setup "${test_packages[@]}"
    # -O1 -g1 (line tables: ASan's stacks keep file:line), asserts on: half
    # the compile time of -O2 -g on a cold 2-core machine (session.cpp 267 s
    # -> 116 s), and the usual optimisation level for ASan.
    build build/test RelWithDebInfo ON "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
    # Sanitizer settings: fail on the first report, keep leaks checked.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    # promtool was installed above: the /metrics checks must run, not skip.
    export SWITCHYARD_REQUIRE_PROMTOOL=1
    ctest --test-dir build/test --output-on-failure -j "$(jobs)" --timeout 600
    ;;
  bench)
    # scripts/dev.sh bench [micro|compare|memory]  (BENCHMARKS.md)
    #   micro    Google Benchmark hot-path pieces, allocs_per_op counters (default)
    #   compare  bench/compare.sh: switchyard vs nginx vs HAProxy, end to end
    #   memory   bench/memory.sh: 1 GiB bodies and 10,000 idle connections
    case "${2:-micro}" in
      compare) exec bench/compare.sh ;;
      memory) exec bench/memory.sh ;;
      micro) ;;
      *) echo "usage: scripts/dev.sh bench [micro|compare|memory]" >&2; exit 2 ;;
    esac
    setup
    generator=()
    if [[ ! -f build/bench/CMakeCache.txt ]]; then generator=(-G Ninja); fi
    cmake -S . -B build/bench "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSWITCHYARD_BUILD_TESTS=OFF \
          -DSWITCHYARD_BUILD_BENCH=ON >/dev/null
    cmake --build build/bench -j "$(jobs)"
    for b in build/bench/bench/*_benchmark; do "$b"; done
    ;;
  fuzz)
    # Runs tests/fuzz/request_fuzzer for SECONDS (default 600) from the seeds
    # in tests/fuzz/corpus; inputs it finds interesting go to build/fuzz/corpus
    # (the seeds stay untouched), findings to build/fuzz/artifacts/. It stops
    # at the first finding (exit code non-zero); extra arguments go to libFuzzer.
    shift
    seconds=${1:-600}
    shift || true
    setup "${fuzz_packages[@]}"
    CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSWITCHYARD_SANITIZE=ON -DSWITCHYARD_FUZZ=ON -DSWITCHYARD_BUILD_TESTS=OFF \
        -DSWITCHYARD_BUILD_BENCH=OFF >/dev/null
    cmake --build build/fuzz -j "$(jobs)" --target request_fuzzer
    mkdir -p build/fuzz/corpus build/fuzz/artifacts
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    exec build/fuzz/tests/fuzz/request_fuzzer -max_total_time="$seconds" -timeout=20 \
        -artifact_prefix=build/fuzz/artifacts/ -print_final_stats=1 -print_funcs=0 "$@" \
        build/fuzz/corpus tests/fuzz/corpus
    ;;
  *)
    echo "usage: scripts/dev.sh demo|test|setup|build|bench|fuzz [SECONDS]" >&2
    exit 2
    ;;
esac
