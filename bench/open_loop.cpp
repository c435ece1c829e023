// open_loop: a fixed-rate HTTP/1.1 load generator that measures latency from
// each request's INTENDED send time, so that a stall of the server counts
// against every request scheduled during it (no coordinated omission; what
// wrk2 does, which Debian does not package).
//
//   open_loop --port P [--host 127.0.0.1] --rate R --duration S
//             [--connections N] [--path /] [--warmup S]
//
// One thread, epoll, N keep-alive connections. Request i is due at
// start + i/R; it goes out on an idle connection as soon as it is due (or as
// soon as a connection frees up, the wait counting as latency). Responses must
// carry Content-Length (every peer in bench/compare.sh does). Prints one line:
//   open_loop rate=R sent=.. done=.. errors=.. achieved=.. p50_ms=.. p90_ms=..
//             p99_ms=.. p999_ms=.. max_ms=..

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::int64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct conn {
    int fd = -1;
    bool busy = false;
    std::int64_t intended = 0;  // due time of the request in flight
    std::string in;
};

bool iequals_prefix(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
        if (c != prefix[i]) {
            return false;
        }
    }
    return true;
}

// Size of the complete response at the front of `in`, 0 if incomplete,
// -1 if it cannot be framed (no Content-Length).
long complete_response(const std::string& in) {
    const auto end = in.find("\r\n\r\n");
    if (end == std::string::npos) {
        return 0;
    }
    const std::string_view head(in.data(), end + 2);
    std::size_t pos = head.find("\r\n") + 2;
    long length = -1;
    while (pos < head.size()) {
        const auto eol = head.find("\r\n", pos);
        const std::string_view field = head.substr(pos, eol - pos);
        if (iequals_prefix(field, "content-length:")) {
            auto v = field.substr(15);
            while (!v.empty() && v.front() == ' ') {
                v.remove_prefix(1);
            }
            length = 0;
            std::from_chars(v.data(), v.data() + v.size(), length);
        }
        pos = eol + 2;
    }
    if (length < 0) {
        return -1;
    }
    const auto total = static_cast<long>(end + 4) + length;
    return static_cast<long>(in.size()) >= total ? total : 0;
}

int connect_to(const char* host, int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host, &addr.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        std::perror("open_loop: connect");
        std::exit(1);
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

double percentile_ms(const std::vector<std::int64_t>& sorted, double q) {
    if (sorted.empty()) {
        return 0.0;
    }
    auto idx = static_cast<std::size_t>(q * static_cast<double>(sorted.size()));
    idx = std::min(idx, sorted.size() - 1);
    return static_cast<double>(sorted[idx]) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
    const char* host = "127.0.0.1";
    int port = 0;
    double rate = 1000;
    double duration = 10;
    double warmup = 1;
    int connections = 64;
    std::string path = "/";
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view k = argv[i];
        const char* v = argv[i + 1];
        if (k == "--host") {
            host = v;
        } else if (k == "--port") {
            port = std::atoi(v);
        } else if (k == "--rate") {
            rate = std::atof(v);
        } else if (k == "--duration") {
            duration = std::atof(v);
        } else if (k == "--warmup") {
            warmup = std::atof(v);
        } else if (k == "--connections") {
            connections = std::atoi(v);
        } else if (k == "--path") {
            path = v;
        } else {
            std::fprintf(stderr, "open_loop: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (port == 0 || rate <= 0 || duration <= 0 || connections <= 0) {
        std::fprintf(stderr,
                     "usage: open_loop --port P --rate R --duration S [--connections N] "
                     "[--path /] [--warmup S] [--host 127.0.0.1]\n");
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    // Wake-ups on time: the default 50 µs slack would delay every send.
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + host +
                                "\r\nUser-Agent: open_loop\r\nAccept: */*\r\n\r\n";
    const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
    std::vector<conn> conns(static_cast<std::size_t>(connections));
    std::vector<int> idle;
    for (int i = 0; i < connections; ++i) {
        auto& c = conns[static_cast<std::size_t>(i)];
        c.fd = connect_to(host, port);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = static_cast<std::uint32_t>(i);
        epoll_ctl(epfd, EPOLL_CTL_ADD, c.fd, &ev);
        idle.push_back(i);
    }

    const auto interval = static_cast<std::int64_t>(1e9 / rate);
    const std::int64_t start = now_ns() + 10'000'000;
    const auto warm_end = start + static_cast<std::int64_t>(warmup * 1e9);
    const auto stop = warm_end + static_cast<std::int64_t>(duration * 1e9);
    std::int64_t next_due = start;
    std::uint64_t sent = 0;
    std::uint64_t done = 0;
    std::uint64_t errors = 0;
    std::size_t max_backlog = 0;
    std::vector<std::int64_t> latencies;
    latencies.reserve(static_cast<std::size_t>(rate * duration * 1.1) + 16);

    epoll_event events[256];
    char buf[64 * 1024];
    std::int64_t drain_deadline = 0;
    for (;;) {
        std::int64_t now = now_ns();
        // Send everything that is due, while connections are free.
        while (next_due < stop && next_due <= now && !idle.empty()) {
            conn& c = conns[static_cast<std::size_t>(idle.back())];
            idle.pop_back();
            const ssize_t n = ::send(c.fd, request.data(), request.size(), MSG_NOSIGNAL);
            if (n != static_cast<ssize_t>(request.size())) {
                std::fprintf(stderr, "open_loop: send failed\n");
                return 1;
            }
            c.busy = true;
            c.intended = next_due;
            ++sent;
            next_due += interval;
        }
        if (next_due <= now && next_due < stop) {
            const auto backlog = static_cast<std::size_t>((now - next_due) / interval) + 1;
            max_backlog = std::max(max_backlog, backlog);
        }
        const bool all_idle = idle.size() == conns.size();
        if (next_due >= stop) {
            if (all_idle) {
                break;
            }
            if (drain_deadline == 0) {
                drain_deadline = now + 5'000'000'000;
            } else if (now > drain_deadline) {
                errors += conns.size() - idle.size();
                break;
            }
        }
        timespec timeout{};
        std::int64_t wait = 10'000'000;
        if (next_due < stop && !idle.empty()) {
            wait = std::max<std::int64_t>(0, next_due - now);
        }
        timeout.tv_sec = static_cast<time_t>(wait / 1'000'000'000);
        timeout.tv_nsec = static_cast<long>(wait % 1'000'000'000);
        const int n = ::epoll_pwait2(epfd, events, 256, &timeout, nullptr);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            std::perror("epoll_pwait2");
            return 1;
        }
        for (int i = 0; i < n; ++i) {
            const auto index = events[i].data.u32;
            conn& c = conns[index];
            const ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) {
                    continue;
                }
                std::fprintf(stderr, "open_loop: connection closed by the server\n");
                return 1;
            }
            c.in.append(buf, static_cast<std::size_t>(r));
            const long size = complete_response(c.in);
            if (size < 0) {
                std::fprintf(stderr, "open_loop: response without Content-Length\n");
                return 1;
            }
            if (size == 0) {
                continue;
            }
            const std::int64_t t = now_ns();
            if (c.in.compare(9, 3, "200") != 0) {
                ++errors;
            }
            c.in.erase(0, static_cast<std::size_t>(size));
            if (c.busy) {
                c.busy = false;
                ++done;
                if (c.intended >= warm_end) {
                    latencies.push_back(t - c.intended);
                }
                idle.push_back(static_cast<int>(index));
            }
        }
    }
    std::sort(latencies.begin(), latencies.end());
    const double achieved = static_cast<double>(latencies.size()) / duration;
    std::printf(
        "open_loop rate=%.0f sent=%llu done=%llu errors=%llu achieved=%.0f max_backlog=%zu "
        "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
        rate, static_cast<unsigned long long>(sent), static_cast<unsigned long long>(done),
        static_cast<unsigned long long>(errors), achieved, max_backlog,
        percentile_ms(latencies, 0.50), percentile_ms(latencies, 0.90),
        percentile_ms(latencies, 0.99), percentile_ms(latencies, 0.999),
        latencies.empty() ? 0.0 : static_cast<double>(latencies.back()) / 1e6);
    return errors == 0 ? 0 : 3;
}
