#include "proxy/upstream_pool.hpp"

#include <sys/socket.h>

#include <cerrno>

namespace switchyard::proxy {

bool idle_socket_alive(int fd) {
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    // 0: the upstream closed; > 0: bytes nobody asked for (a broken upstream).
    return false;
}

upstream_ptr upstream_pool::lease(routing::endpoint_id id, const void* made_with,
                                  std::chrono::steady_clock::time_point now) {
    auto it = idle_.find(id);
    if (it == idle_.end()) {
        return nullptr;
    }
    auto& stack = it->second;
    while (!stack.empty()) {
        upstream_ptr conn = std::move(stack.back());
        stack.pop_back();
        if (conn->made_with == made_with &&
            (now - conn->idle_since < recheck_after ||
             idle_socket_alive(conn->stream.socket().native_handle()))) {
            return conn;
        }
        // Dead or made under other TLS settings: dropping it closes it.
    }
    return nullptr;
}

void upstream_pool::give_back(routing::endpoint_id id, upstream_ptr conn, std::uint32_t max_idle) {
    auto& stack = idle_[id];
    if (stack.size() >= max_idle) {
        return;  // closes conn
    }
    conn->idle_since = std::chrono::steady_clock::now();
    stack.push_back(std::move(conn));
}

void upstream_pool::sweep(std::chrono::steady_clock::duration max_idle_time) {
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, stack] : idle_) {
        std::erase_if(stack, [&](const upstream_ptr& c) {
            return now - c->idle_since > max_idle_time ||
                   !idle_socket_alive(c->stream.socket().native_handle());
        });
    }
}

void upstream_pool::clear() { idle_.clear(); }

std::size_t upstream_pool::idle_count() const {
    std::size_t n = 0;
    for (const auto& [id, stack] : idle_) {
        n += stack.size();
    }
    return n;
}

}  // namespace switchyard::proxy
