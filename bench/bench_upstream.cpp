// bench_upstream: the upstream that bench/compare.sh and bench/memory.sh put
// behind every proxy. One thread, epoll, non-blocking sockets, keep-alive.
//
//   bench_upstream PORT
//
// Any request (after its Content-Length body, which is read and discarded)
// gets a fixed 200 with a 13-byte body, except GET /bytes/N, which gets N
// zero bytes (streamed from one static buffer, so that the upstream holds no
// memory proportional to N). Pipelined requests are answered in order.
// Chunked request bodies are decoded and discarded (extensions and trailers
// skipped, never checked). Loopback benchmarks only; not a web server.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>

namespace {

constexpr std::string_view small_response =
    "HTTP/1.1 200 OK\r\n"
    "Server: bench-upstream\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, world\n";

constexpr std::size_t max_header = 64 * 1024;
char zeros[256 * 1024];

struct connection {
    int fd = -1;
    std::string in;              // bytes read and not yet consumed
    std::string out;             // response bytes not yet written
    std::uint64_t body_in = 0;   // request body bytes still to discard
    std::uint64_t body_out = 0;  // response body zeros still to write
    bool reading_body = false;
    // Chunked request body: 0 = not chunked, 1 = size line, 2 = data
    // (body_in bytes left), 3 = CRLF after data, 4 = trailer lines.
    int chunk_state = 0;
    bool close_after = false;
    bool want_out = false;  // registered for EPOLLOUT instead of EPOLLIN
};

int epfd = -1;
std::unordered_map<int, connection> conns;

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

void close_conn(connection& c) {
    ::close(c.fd);
    conns.erase(c.fd);
}

void set_interest(connection& c, bool out) {
    if (c.want_out == out) {
        return;
    }
    c.want_out = out;
    epoll_event ev{};
    ev.events = out ? EPOLLOUT : EPOLLIN;
    ev.data.fd = c.fd;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
}

// Parses one request header at the front of c.in. Returns false when more
// bytes are needed; sets c.close_after on an unsupported request.
bool take_header(connection& c) {
    const auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) {
        if (c.in.size() > max_header) {
            c.close_after = true;
            c.out.append(
                "HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        return false;
    }
    const std::string_view head(c.in.data(), end + 2);
    const auto line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    std::uint64_t content_length = 0;
    bool chunked = false;
    std::size_t pos = line_end + 2;
    while (pos < head.size()) {
        const auto eol = head.find("\r\n", pos);
        const std::string_view field = head.substr(pos, eol - pos);
        if (iequals_prefix(field, "content-length:")) {
            auto v = field.substr(15);
            while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
                v.remove_prefix(1);
            }
            std::from_chars(v.data(), v.data() + v.size(), content_length);
        } else if (iequals_prefix(field, "transfer-encoding:")) {
            chunked = true;
        } else if (iequals_prefix(field, "connection:") &&
                   field.find("close") != std::string_view::npos) {
            c.close_after = true;
        }
        pos = eol + 2;
    }
    c.in.erase(0, end + 4);
    // The response is decided now and sent once the body has been read.
    const auto sp1 = line.find(' ');
    const auto sp2 = line.find(' ', sp1 + 1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::uint64_t n = 0;
    if (target.starts_with("/bytes/")) {
        std::from_chars(target.data() + 7, target.data() + target.size(), n);
        char header[160];
        const int len = std::snprintf(header, sizeof header,
                                      "HTTP/1.1 200 OK\r\nServer: bench-upstream\r\n"
                                      "Content-Type: application/octet-stream\r\n"
                                      "Content-Length: %llu\r\n\r\n",
                                      static_cast<unsigned long long>(n));
        c.out.append(header, static_cast<std::size_t>(len));
        c.body_out = n;
    } else {
        c.out.append(small_response);
    }
    c.body_in = chunked ? 0 : content_length;
    c.chunk_state = chunked ? 1 : 0;
    c.reading_body = chunked || content_length > 0;
    return true;
}

// Discards chunked body bytes from the front of c.in; true when the body
// (with its trailer) is complete.
bool skip_chunked(connection& c) {
    for (;;) {
        switch (c.chunk_state) {
            case 1: {
                const auto eol = c.in.find("\r\n");
                if (eol == std::string::npos) {
                    return false;
                }
                std::uint64_t size = 0;
                std::from_chars(c.in.data(), c.in.data() + eol, size, 16);
                c.in.erase(0, eol + 2);
                c.body_in = size;
                c.chunk_state = size == 0 ? 4 : 2;
                break;
            }
            case 2: {
                const std::uint64_t take = c.body_in < c.in.size() ? c.body_in : c.in.size();
                c.in.erase(0, take);
                c.body_in -= take;
                if (c.body_in > 0) {
                    return false;
                }
                c.chunk_state = 3;
                break;
            }
            case 3:
                if (c.in.size() < 2) {
                    return false;
                }
                c.in.erase(0, 2);
                c.chunk_state = 1;
                break;
            case 4: {
                const auto eol = c.in.find("\r\n");
                if (eol == std::string::npos) {
                    return false;
                }
                c.in.erase(0, eol + 2);
                if (eol == 0) {
                    c.chunk_state = 0;
                    return true;
                }
                break;
            }
            default:
                return true;
        }
    }
}

// Writes what is pending; false when the connection was closed.
bool flush(connection& c) {
    while (!c.out.empty() || c.body_out > 0) {
        ssize_t n;
        if (!c.out.empty()) {
            n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        } else {
            const std::size_t len = c.body_out < sizeof zeros ? c.body_out : sizeof zeros;
            n = ::send(c.fd, zeros, len, MSG_NOSIGNAL);
        }
        if (n < 0) {
            if (errno == EAGAIN) {
                set_interest(c, true);
                return true;
            }
            close_conn(c);
            return false;
        }
        if (!c.out.empty()) {
            c.out.erase(0, static_cast<std::size_t>(n));
        } else {
            c.body_out -= static_cast<std::uint64_t>(n);
        }
    }
    if (c.close_after) {
        close_conn(c);
        return false;
    }
    set_interest(c, false);
    return true;
}

// Consumes buffered input while no response is pending.
bool process(connection& c) {
    for (;;) {
        if (c.reading_body && c.chunk_state != 0) {
            if (!skip_chunked(c)) {
                return true;
            }
            c.reading_body = false;
        }
        if (c.reading_body) {
            const std::uint64_t take = c.body_in < c.in.size() ? c.body_in : c.in.size();
            c.in.erase(0, take);
            c.body_in -= take;
            if (c.body_in > 0) {
                return true;
            }
            c.reading_body = false;
        }
        if (!c.out.empty() || c.body_out > 0) {
            // The response is held until the body is read (done above), then sent.
            if (!flush(c)) {
                return false;
            }
            if (c.want_out) {
                return true;
            }
        }
        if (c.in.empty() || !take_header(c)) {
            if (!c.out.empty()) {
                return flush(c);
            }
            return true;
        }
    }
}

void on_readable(connection& c) {
    char buf[64 * 1024];
    for (;;) {
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (c.reading_body && c.chunk_state == 0 && c.in.empty()) {
                // Discard body bytes without copying them.
                const auto take = std::min<std::uint64_t>(c.body_in, static_cast<std::uint64_t>(n));
                c.body_in -= take;
                c.in.append(buf + take, static_cast<std::size_t>(n) - take);
                if (c.body_in == 0) {
                    c.reading_body = false;
                }
            } else {
                c.in.append(buf, static_cast<std::size_t>(n));
            }
            if (!process(c)) {
                return;
            }
            if (c.want_out || static_cast<std::size_t>(n) < sizeof buf) {
                return;
            }
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return;
        }
        close_conn(c);
        return;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: bench_upstream PORT\n");
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    const int port = std::atoi(argv[1]);
    const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(lfd, 4096) != 0) {
        std::perror("bench_upstream: bind/listen");
        return 1;
    }
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    std::fprintf(stderr, "bench_upstream: listening on 127.0.0.1:%d\n", port);

    epoll_event events[256];
    for (;;) {
        const int n = ::epoll_wait(epfd, events, 256, -1);
        if (n < 0 && errno != EINTR) {
            std::perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; ++i) {
            const int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    const int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) {
                        break;
                    }
                    ::setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    auto& c = conns[cfd];
                    c.fd = cfd;
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = cfd;
                    epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            const auto it = conns.find(fd);
            if (it == conns.end()) {
                continue;
            }
            connection& c = it->second;
            if (c.want_out) {
                if (flush(c) && !c.want_out) {
                    process(c);
                }
            } else {
                on_readable(c);
            }
        }
    }
}
