// idle_conns: opens N keep-alive connections to a server, makes one request
// on each (so that each is a served, idle keep-alive connection rather than a
// fresh accept), then holds them all open until stdin closes or --hold
// seconds pass. Used by bench/memory.sh to measure the proxy's resident
// memory per idle connection.
//
//   idle_conns --port P [--host 127.0.0.1] [--count 10000] [--hold 30]
//
// Prints "ready N" on stdout once every connection has had its response.
// The caller raises `ulimit -n` above N.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

int connect_to(const char* host, int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        std::perror("idle_conns: socket (raise ulimit -n)");
        std::exit(1);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, host, &addr.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        std::perror("idle_conns: connect");
        std::exit(1);
    }
    return fd;
}

// Reads until a whole response with a Content-Length body has arrived.
bool read_response(int fd) {
    std::string in;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            return false;
        }
        in.append(buf, static_cast<std::size_t>(n));
        const auto end = in.find("\r\n\r\n");
        if (end == std::string::npos) {
            continue;
        }
        std::string lower(in, 0, end);
        for (auto& ch : lower) {
            if (ch >= 'A' && ch <= 'Z') {
                ch = static_cast<char>(ch - 'A' + 'a');
            }
        }
        const auto cl = lower.find("\r\ncontent-length:");
        const std::size_t length =
            cl == std::string::npos ? 0 : std::strtoull(lower.c_str() + cl + 17, nullptr, 10);
        if (in.size() >= end + 4 + length) {
            return in.compare(9, 3, "200") == 0;
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const char* host = "127.0.0.1";
    int port = 0;
    int count = 10000;
    int hold = 30;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view k = argv[i];
        if (k == "--host") {
            host = argv[i + 1];
        } else if (k == "--port") {
            port = std::atoi(argv[i + 1]);
        } else if (k == "--count") {
            count = std::atoi(argv[i + 1]);
        } else if (k == "--hold") {
            hold = std::atoi(argv[i + 1]);
        } else {
            std::fprintf(stderr, "idle_conns: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (port == 0 || count <= 0) {
        std::fprintf(stderr, "usage: idle_conns --port P [--count N] [--hold S]\n");
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    const std::string request =
        std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\nUser-Agent: idle_conns\r\n\r\n";
    std::vector<int> fds;
    fds.reserve(static_cast<std::size_t>(count));
    constexpr int batch = 200;
    for (int done = 0; done < count;) {
        const int n = std::min(batch, count - done);
        const std::size_t first = fds.size();
        for (int i = 0; i < n; ++i) {
            fds.push_back(connect_to(host, port));
        }
        for (std::size_t i = first; i < fds.size(); ++i) {
            if (::send(fds[i], request.data(), request.size(), MSG_NOSIGNAL) !=
                static_cast<ssize_t>(request.size())) {
                std::fprintf(stderr, "idle_conns: send failed\n");
                return 1;
            }
        }
        for (std::size_t i = first; i < fds.size(); ++i) {
            if (!read_response(fds[i])) {
                std::fprintf(stderr, "idle_conns: bad response on connection %zu\n", i);
                return 1;
            }
        }
        done += n;
    }
    std::printf("ready %d\n", count);
    std::fflush(stdout);
    // Hold until stdin closes (the caller is done) or the time is up.
    pollfd p{0, POLLIN, 0};
    ::poll(&p, 1, hold * 1000);
    // Count connections the server closed while they sat idle.
    int closed = 0;
    for (const int fd : fds) {
        char c;
        const ssize_t r = ::recv(fd, &c, 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            ++closed;
        }
    }
    std::printf("closed_by_server %d\n", closed);
    return 0;
}
