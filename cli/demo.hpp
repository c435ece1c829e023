#pragma once
// `switchyard demo`: the proxy on an embedded config in front of three
// in-process upstreams (blue, green, canary), a small load generator, and one
// status line per second.

#include <cstdint>
#include <optional>

#include "config/config.hpp"

namespace switchyard::cli {

struct demo_options {
    std::uint16_t port = 8080;
    std::uint16_t admin_port = 9901;
    std::optional<config::duration> duration;  // none: until Ctrl-C
};

int run_demo(const demo_options& options);

}  // namespace switchyard::cli
