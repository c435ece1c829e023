#pragma once
// Per-worker keep-alive pools of upstream connections, by endpoint id.
// Owned by one worker; never touched by another thread.
//
// A connection the upstream closed while it sat idle must never be handed to
// a request as if alive: lease() checks a candidate that has been idle for
// `recheck_after` or more with a non-blocking MSG_PEEK (EOF or unexpected
// bytes: discard), and the worker's periodic sweep peeks at every idle
// connection and drops the ones that died or idled too long.
//
// A connection given back less than `recheck_after` ago is leased without the
// peek, which would cost a syscall per request under load (where the pool
// turns over in microseconds). HAProxy and nginx behave alike: they learn of
// an idle connection's close or stray bytes only at their next poll. What the
// peek would have caught in that window is left to the same defences that
// cover a close racing the peek itself: a reused connection that closes
// before any response byte is retried once on a fresh one (session.cpp), and
// the sweep closes a connection that holds bytes nobody asked for.

#include <chrono>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "routing/snapshot.hpp"
#include "transport/stream.hpp"

namespace switchyard::proxy {

struct upstream_connection {
    explicit upstream_connection(transport::worker_stream::tcp_stream_type s)
        : stream(std::move(s)) {}
    transport::worker_stream stream;  // plain TCP or TLS (upstream_defaults.tls)
    // What the connection was made with: the worker's TLS client context, or
    // null for plain TCP. A connection is only reused under the same one, so a
    // reload that turns TLS on, off, or changes what is verified never hands
    // a request a connection made under the old rules.
    const void* made_with = nullptr;
    std::chrono::steady_clock::time_point idle_since{};
    std::uint64_t requests = 0;  // served on this connection
};

using upstream_ptr = std::unique_ptr<upstream_connection>;

class upstream_pool {
public:
    static constexpr std::chrono::microseconds recheck_after{1000};

    // A live idle connection to `id` made with `made_with`, or nullptr; `now`
    // is the caller's reading of the clock.
    upstream_ptr lease(routing::endpoint_id id, const void* made_with,
                       std::chrono::steady_clock::time_point now);
    // Returns a connection that finished a response cleanly; closes it when
    // the endpoint already holds `max_idle` idle connections.
    void give_back(routing::endpoint_id id, upstream_ptr conn, std::uint32_t max_idle);
    // Closes idle connections that died or idled past `max_idle_time`.
    void sweep(std::chrono::steady_clock::duration max_idle_time);
    void clear();
    std::size_t idle_count() const;

private:
    std::unordered_map<routing::endpoint_id, std::vector<upstream_ptr>> idle_;
};

// True when the socket is still open with nothing unread (the only state a
// pooled HTTP/1.1 connection may be in between responses).
bool idle_socket_alive(int fd);

}  // namespace switchyard::proxy
