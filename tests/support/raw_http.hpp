#pragma once
// Byte-level HTTP/1.1 helpers for the hostile-input, slow-client and
// upstream-fault end-to-end tests (SPEC §4).
//
// `request_length` frames one request at the start of a byte string
// (Content-Length or chunked, trailers included) without judging it, so a
// test can tell "the upstream got a complete request" from "it got a piece".
// `printable` renders bytes for failure messages.
//
// `scripted_upstream` is a plain-socket upstream on 127.0.0.1, port 0: it
// records every byte per connection, frames the requests it receives, and
// answers each complete request with whatever the test's script returns for
// (connection, request index, request bytes): any bytes (malformed status
// lines, interim 1xx, wrong lengths), then keep the connection, close it
// (FIN) or reset it (RST), or stay silent. Unlike raw_upstream it answers
// every request on a keep-alive connection, only once the request's body
// (and trailer) has fully arrived.
//
// Threads: an accept thread and one thread per connection, started by the
// constructor and joined by the destructor (which closes every socket). The
// public members may be called from any other thread; the script runs on a
// connection's thread, without the object's lock held.
// Failure: the constructor throws std::runtime_error when it cannot listen.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace switchyard::test {

inline bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

// True when `haystack` contains `needle`, ignoring ASCII case.
inline bool icontains(std::string_view haystack, std::string_view needle) {
    if (needle.empty()) {
        return true;
    }
    for (std::size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
        if (iequals(haystack.substr(i, needle.size()), needle)) {
            return true;
        }
    }
    return false;
}

// Bytes for a failure message: CR, LF, TAB and NUL escaped, other control
// bytes as \xNN; cut to `limit` characters with the total length noted.
inline std::string printable(std::string_view bytes, std::size_t limit = 600) {
    std::string out;
    for (std::size_t i = 0; i < bytes.size() && out.size() < limit; ++i) {
        const auto c = static_cast<unsigned char>(bytes[i]);
        if (c == '\r') {
            out += "\\r";
        } else if (c == '\n') {
            out += "\\n\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == 0) {
            out += "\\0";
        } else if (c < 0x20 || c >= 0x7f) {
            static const char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (out.size() >= limit) {
        out += "...";
    }
    return "[" + std::to_string(bytes.size()) + " bytes] " + out;
}

// The value of the first header field `name` in a request or response head
// (the bytes up to "\r\n\r\n"); nullopt when absent.
inline std::optional<std::string> head_field(std::string_view head, std::string_view name) {
    std::size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos + 2 < head.size()) {
        const std::size_t start = pos + 2;
        const std::size_t end = head.find("\r\n", start);
        const std::string_view line = head.substr(
            start, end == std::string_view::npos ? std::string_view::npos : end - start);
        if (line.empty()) {
            break;
        }
        const std::size_t colon = line.find(':');
        if (colon != std::string_view::npos && iequals(line.substr(0, colon), name)) {
            std::string_view value = line.substr(colon + 1);
            while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
                value.remove_prefix(1);
            }
            while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
                value.remove_suffix(1);
            }
            return std::string(value);
        }
        pos = end;
    }
    return std::nullopt;
}

// The length of the complete request at the start of `bytes` (head, body by
// Content-Length or chunked, trailer), or nullopt when it has not fully
// arrived. Framing only, as a lenient receiver would read it.
inline std::optional<std::size_t> request_length(std::string_view bytes) {
    const std::size_t head_end = bytes.find("\r\n\r\n");
    if (head_end == std::string_view::npos) {
        return std::nullopt;
    }
    const std::string_view head = bytes.substr(0, head_end + 2);
    std::size_t at = head_end + 4;
    const auto te = head_field(head, "Transfer-Encoding");
    if (te && icontains(*te, "chunked")) {
        for (;;) {
            const std::size_t eol = bytes.find("\r\n", at);
            if (eol == std::string_view::npos) {
                return std::nullopt;
            }
            std::uint64_t size = 0;
            std::size_t i = at;
            for (; i < eol && std::isxdigit(static_cast<unsigned char>(bytes[i])) != 0; ++i) {
                size = size * 16 +
                       static_cast<std::uint64_t>(
                           std::isdigit(static_cast<unsigned char>(bytes[i])) != 0
                               ? bytes[i] - '0'
                               : std::tolower(static_cast<unsigned char>(bytes[i])) - 'a' + 10);
            }
            at = eol + 2;
            if (size == 0) {
                // Trailer fields, then the empty line.
                for (;;) {
                    const std::size_t line_end = bytes.find("\r\n", at);
                    if (line_end == std::string_view::npos) {
                        return std::nullopt;
                    }
                    const bool empty = line_end == at;
                    at = line_end + 2;
                    if (empty) {
                        return at;
                    }
                }
            }
            if (bytes.size() < at + size + 2) {
                return std::nullopt;
            }
            at += size + 2;
        }
    }
    std::uint64_t length = 0;
    if (const auto cl = head_field(head, "Content-Length")) {
        length = std::strtoull(cl->c_str(), nullptr, 10);
    }
    if (bytes.size() < at + length) {
        return std::nullopt;
    }
    return at + length;
}

// How many complete requests `bytes` (one connection's stream) holds.
inline std::size_t complete_requests(std::string_view bytes) {
    std::size_t n = 0;
    while (auto len = request_length(bytes)) {
        ++n;
        bytes.remove_prefix(*len);
    }
    return n;
}

class scripted_upstream {
  public:
    struct request {
        std::size_t connection = 0;  // 0-based, counting since construction
        std::size_t index = 0;       // 0-based within its connection
        std::string bytes;           // head, body and trailer as received
        std::string line() const { return bytes.substr(0, bytes.find("\r\n")); }
        std::string head() const { return bytes.substr(0, bytes.find("\r\n\r\n") + 4); }
    };
    enum class then { keep_open, close, reset };
    struct reply {
        std::string bytes;  // empty with keep_open: never answer this request
        then after = then::keep_open;
        // Sent on the same connection, unasked, when the test calls
        // release_later() (the connection sitting idle in the proxy's pool).
        std::string later;
    };
    using script = std::function<reply(const request&)>;

    // 200, Content-Length 3, body "ok\n", keep-alive.
    static reply ok() { return {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"}; }

    explicit scripted_upstream(script s = [](const request&) { return ok(); })
        : state_(std::make_shared<state>()) {
        state_->run = std::move(s);
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (listen_fd_ < 0 ||
            ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::listen(listen_fd_, 1024) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
            const std::string why = std::strerror(errno);
            if (listen_fd_ >= 0) {
                ::close(listen_fd_);
            }
            throw std::runtime_error("scripted_upstream: cannot listen: " + why);
        }
        port_ = ntohs(addr.sin_port);
        acceptor_ = std::thread([this] { accept_loop(); });
    }

    ~scripted_upstream() {
        stop_ = true;
        acceptor_.join();
        std::vector<std::thread> threads;
        {
            std::lock_guard lock(state_->mutex);
            threads.swap(threads_);
        }
        for (auto& t : threads) {
            t.join();
        }
        ::close(listen_fd_);
    }
    scripted_upstream(const scripted_upstream&) = delete;
    scripted_upstream& operator=(const scripted_upstream&) = delete;

    std::uint16_t port() const { return port_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    void set_script(script s) {
        std::lock_guard lock(state_->mutex);
        state_->run = std::move(s);
    }

    // Every byte received since construction or clear(), in arrival order.
    std::string received() const {
        std::lock_guard lock(state_->mutex);
        return state_->all;
    }
    // One connection's bytes since clear() ("" if none).
    std::string received(std::size_t connection) const {
        std::lock_guard lock(state_->mutex);
        return connection < state_->conns.size() ? state_->conns[connection].recorded
                                                 : std::string();
    }
    // Complete requests since clear().
    std::vector<request> requests() const {
        std::lock_guard lock(state_->mutex);
        return state_->requests;
    }
    std::size_t request_count() const {
        std::lock_guard lock(state_->mutex);
        return state_->requests.size();
    }
    std::size_t connection_count() const {  // accepted, ever
        std::lock_guard lock(state_->mutex);
        return state_->conns.size();
    }
    std::size_t open_connections() const {
        std::lock_guard lock(state_->mutex);
        std::size_t n = 0;
        for (const auto& c : state_->conns) {
            n += c.open ? 1 : 0;
        }
        return n;
    }
    // Open connections holding bytes of a request that has not completed.
    std::size_t open_with_partial_request() const {
        std::lock_guard lock(state_->mutex);
        std::size_t n = 0;
        for (const auto& c : state_->conns) {
            n += c.open && !c.pending.empty() ? 1 : 0;
        }
        return n;
    }
    // Sends every reply's `later` bytes held so far; later_sent() counts them.
    void release_later() {
        std::lock_guard lock(state_->mutex);
        state_->release_later = true;
    }
    std::size_t later_sent() const {
        std::lock_guard lock(state_->mutex);
        return state_->later_sent;
    }
    // Forgets recorded bytes and requests (connections stay as they are).
    void clear() {
        std::lock_guard lock(state_->mutex);
        state_->all.clear();
        state_->requests.clear();
        for (auto& c : state_->conns) {
            c.recorded.clear();
        }
    }

  private:
    struct connection_state {
        bool open = true;
        std::string recorded;  // since clear()
        std::string pending;   // bytes of the request not complete yet
        std::size_t next_index = 0;
    };
    struct state {
        mutable std::mutex mutex;
        script run;
        std::string all;
        std::vector<request> requests;
        std::vector<connection_state> conns;
        bool release_later = false;
        std::size_t later_sent = 0;
    };

    void accept_loop() {
        while (!stop_) {
            pollfd p{listen_fd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) {
                continue;
            }
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                continue;
            }
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            std::lock_guard lock(state_->mutex);
            const std::size_t index = state_->conns.size();
            state_->conns.emplace_back();
            threads_.emplace_back([this, fd, index] { serve(fd, index); });
        }
    }

    static bool send_all(int fd, std::string_view bytes) {
        while (!bytes.empty()) {
            const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return false;
            }
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    void serve(int fd, std::size_t index) {
        then how = then::close;
        char data[16 * 1024];
        std::string later;  // held for release_later()
        while (!stop_) {
            if (!later.empty()) {
                bool release = false;
                {
                    std::lock_guard lock(state_->mutex);
                    release = state_->release_later;
                }
                if (release) {
                    const bool sent = send_all(fd, later);
                    later.clear();
                    std::lock_guard lock(state_->mutex);
                    state_->later_sent += sent ? 1 : 0;
                }
            }
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0) {
                continue;
            }
            const ssize_t n = ::recv(fd, data, sizeof data, 0);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;  // EOF or reset from the proxy
            }
            std::vector<request> complete;
            script s;
            {
                std::lock_guard lock(state_->mutex);
                auto& c = state_->conns[index];
                state_->all.append(data, static_cast<std::size_t>(n));
                c.recorded.append(data, static_cast<std::size_t>(n));
                c.pending.append(data, static_cast<std::size_t>(n));
                while (auto len = request_length(c.pending)) {
                    request r{index, c.next_index++, c.pending.substr(0, *len)};
                    c.pending.erase(0, *len);
                    state_->requests.push_back(r);
                    complete.push_back(std::move(r));
                }
                s = state_->run;
            }
            bool done = false;
            for (const auto& r : complete) {
                const reply answer = s(r);
                if (!answer.bytes.empty() && !send_all(fd, answer.bytes)) {
                    done = true;
                    break;
                }
                later += answer.later;
                if (answer.after != then::keep_open) {
                    how = answer.after;
                    done = true;
                    break;
                }
            }
            if (done) {
                break;
            }
        }
        if (how == then::reset) {
            linger l{1, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        } else {
            ::shutdown(fd, SHUT_WR);
        }
        ::close(fd);
        std::lock_guard lock(state_->mutex);
        state_->conns[index].open = false;
    }

    std::shared_ptr<state> state_;
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread acceptor_;
    std::vector<std::thread> threads_;  // guarded by state_->mutex
};

}  // namespace switchyard::test
