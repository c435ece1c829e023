#include "tests/support/client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "tests/support/upstream.hpp"

namespace switchyard::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::size_t piece_size = 64 * 1024;

bool ascii_iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

template <bool isRequest, class Fields>
void copy_head(const http::header<isRequest, Fields>& head, http_response& out) {
    for (const auto& field : head) {
        out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
}

long long millis(std::chrono::milliseconds d) {
    return static_cast<long long>(d.count());
}

int poll_one(int fd, short events, clock_type::time_point deadline) {
    for (;;) {
        auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now());
        if (left.count() < 0) {
            left = std::chrono::milliseconds(0);
        }
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, static_cast<int>(left.count()));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return r > 0 ? p.revents : r;
    }
}

}  // namespace

std::string http_response::header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
        if (ascii_iequals(n, name)) {
            return v;
        }
    }
    return {};
}

int http_response::header_count(std::string_view name) const {
    int count = 0;
    for (const auto& h : headers) {
        if (ascii_iequals(h.first, name)) {
            ++count;
        }
    }
    return count;
}

// ---------------------------------------------------------------------------
// http_client

struct http_client::impl {
    // Beast reads max(512, free capacity) per call: room for 64 KiB reads.
    explicit impl(std::uint16_t p) : port(p) { buffer.reserve(piece_size); }

    using piece_sink = std::function<void(const char*, std::size_t)>;

    // Runs one asynchronous operation to completion. The stream's expiry
    // (set to the deadline before each operation) makes every operation end
    // by then; run_until is only the backstop.
    template <class Start>
    beast::error_code run(Start&& start, clock_type::time_point deadline) {
        beast::error_code result = net::error::would_block;
        bool done = false;
        stream.expires_at(deadline);
        start([&result, &done](beast::error_code ec, auto&&...) {
            result = ec;
            done = true;
        });
        ioc.restart();
        ioc.run_until(deadline + std::chrono::seconds(2));
        if (!done) {
            beast::error_code ignored;
            stream.socket().close(ignored);
            ioc.restart();
            ioc.run();
            result = beast::error::timeout;
        }
        return result;
    }

    [[noreturn]] void fail(std::string_view what, beast::error_code ec,
                           std::chrono::milliseconds timeout) {
        beast::error_code ignored;
        stream.socket().close(ignored);
        buffer.clear();
        std::string message =
            "http_client: " + std::string(what) + " on 127.0.0.1:" + std::to_string(port) + ": ";
        if (ec == beast::error::timeout) {
            message += "timed out after " + std::to_string(millis(timeout)) + " ms";
        } else {
            message += ec.message();
        }
        throw std::runtime_error(message);
    }

    void ensure_connected(std::string_view what, clock_type::time_point deadline,
                          std::chrono::milliseconds timeout) {
        if (stream.socket().is_open()) {
            return;
        }
        buffer.clear();
        tcp::endpoint endpoint(net::ip::make_address_v4("127.0.0.1"), port);
        auto ec = run([&](auto handler) { stream.async_connect(endpoint, std::move(handler)); },
                      deadline);
        if (ec) {
            fail(std::string(what) + " (connect)", ec, timeout);
        }
        ++connections;
        beast::error_code ignored;
        stream.socket().set_option(tcp::no_delay(true), ignored);
    }

    template <class Body>
    void prepare(http::request<Body>& req, std::string_view method, std::string_view target,
                 const header_list& headers) {
        req.method_string(method);
        req.target(target);
        req.version(11);
        bool host = false;
        for (const auto& [n, v] : headers) {
            req.insert(n, v);
            host = host || ascii_iequals(n, "host");
        }
        if (!host) {
            req.set(http::field::host, "localhost");
        }
    }

    static bool has_framing(const header_list& headers) {
        for (const auto& h : headers) {
            if (ascii_iequals(h.first, "content-length") ||
                ascii_iequals(h.first, "transfer-encoding")) {
                return true;
            }
        }
        return false;
    }

    http_response read(std::string_view what, bool head, const piece_sink& sink,
                       clock_type::time_point deadline, std::chrono::milliseconds timeout) {
        std::optional<http::response_parser<http::buffer_body>> parser;
        for (;;) {
            parser.emplace();
            parser->body_limit(boost::none);
            parser->header_limit(1024 * 1024);
            if (head) {
                parser->skip(true);
            }
            auto ec = run(
                [&](auto handler) {
                    http::async_read_header(stream, buffer, *parser, std::move(handler));
                },
                deadline);
            if (ec) {
                fail(std::string(what) + " (reading the response header)", ec, timeout);
            }
            const unsigned status = parser->get().result_int();
            if (status / 100 != 1 || status == 101) {
                break;
            }
        }
        auto& msg = parser->get();
        http_response out;
        out.status = msg.result_int();
        out.version = msg.version();
        copy_head(msg.base(), out);
        std::vector<char> piece(piece_size);
        while (!parser->is_done()) {
            msg.body().data = piece.data();
            msg.body().size = piece.size();
            auto ec = run(
                [&](auto handler) {
                    http::async_read(stream, buffer, *parser, std::move(handler));
                },
                deadline);
            if (ec == http::error::need_buffer) {
                ec = {};
            }
            if (ec) {
                fail(std::string(what) + " (reading the response body)", ec, timeout);
            }
            const std::size_t got = piece.size() - msg.body().size;
            out.body_bytes += got;
            sink(piece.data(), got);
        }
        out.keep_alive = msg.keep_alive();
        if (!out.keep_alive) {
            beast::error_code ignored;
            stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
            stream.socket().close(ignored);
        }
        return out;
    }

    std::uint16_t port;
    net::io_context ioc{1};
    beast::tcp_stream stream{ioc};
    beast::flat_buffer buffer;
    std::size_t connections = 0;
};

http_client::http_client(std::uint16_t port) : impl_(std::make_unique<impl>(port)) {}
http_client::~http_client() = default;

http_response http_client::request(std::string_view method, std::string_view target,
                                   header_list headers, std::string body,
                                   std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    const std::string what = std::string(method) + " " + std::string(target);
    impl_->ensure_connected(what, deadline, timeout);

    http::request<http::string_body> req;
    impl_->prepare(req, method, target, headers);
    if (!impl::has_framing(headers) &&
        (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")) {
        req.content_length(body.size());
    }
    req.body() = std::move(body);
    auto ec = impl_->run(
        [&](auto handler) { http::async_write(impl_->stream, req, std::move(handler)); }, deadline);
    if (ec) {
        impl_->fail(what + " (sending)", ec, timeout);
    }
    std::string received;
    auto out = impl_->read(
        what, method == "HEAD",
        [&received](const char* data, std::size_t n) { received.append(data, n); }, deadline,
        timeout);
    out.body = std::move(received);
    return out;
}

http_response http_client::stream(std::string_view method, std::string_view target,
                                  const std::function<void(std::string_view)>& on_body,
                                  header_list headers, std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    const std::string what = std::string(method) + " " + std::string(target);
    impl_->ensure_connected(what, deadline, timeout);

    http::request<http::string_body> req;
    impl_->prepare(req, method, target, headers);
    auto ec = impl_->run(
        [&](auto handler) { http::async_write(impl_->stream, req, std::move(handler)); }, deadline);
    if (ec) {
        impl_->fail(what + " (sending)", ec, timeout);
    }
    return impl_->read(
        what, method == "HEAD",
        [&on_body](const char* data, std::size_t n) { on_body(std::string_view(data, n)); },
        deadline, timeout);
}

http_response http_client::upload(std::string_view method, std::string_view target,
                                  std::uint64_t bytes, bool chunked, header_list headers,
                                  std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    const std::string what = std::string(method) + " " + std::string(target);
    impl_->ensure_connected(what, deadline, timeout);

    std::string piece(piece_size, '\0');
    for (std::size_t i = 0; i < piece.size(); ++i) {
        piece[i] = generated_body_byte(i);
    }
    http::request<http::buffer_body> req;
    impl_->prepare(req, method, target, headers);
    if (chunked) {
        req.chunked(true);
    } else {
        req.content_length(bytes);
    }
    req.body().data = nullptr;
    req.body().more = bytes > 0;
    http::request_serializer<http::buffer_body> sr{req};
    auto ec = impl_->run(
        [&](auto handler) { http::async_write_header(impl_->stream, sr, std::move(handler)); },
        deadline);
    std::uint64_t remaining = bytes;
    while (!ec && remaining > 0) {
        const std::size_t n = std::min<std::uint64_t>(remaining, piece.size());
        req.body().data = piece.data();
        req.body().size = n;
        req.body().more = true;
        ec = impl_->run(
            [&](auto handler) { http::async_write(impl_->stream, sr, std::move(handler)); },
            deadline);
        if (ec == http::error::need_buffer) {
            ec = {};
        }
        remaining -= n;
    }
    if (!ec && !sr.is_done()) {
        req.body().data = nullptr;
        req.body().size = 0;
        req.body().more = false;
        ec = impl_->run(
            [&](auto handler) { http::async_write(impl_->stream, sr, std::move(handler)); },
            deadline);
    }
    if (ec) {
        impl_->fail(what + " (sending the body)", ec, timeout);
    }
    std::string received;
    auto out = impl_->read(
        what, method == "HEAD",
        [&received](const char* data, std::size_t n) { received.append(data, n); }, deadline,
        timeout);
    out.body = std::move(received);
    return out;
}

bool http_client::connected() const {
    auto& socket = impl_->stream.socket();
    if (!socket.is_open()) {
        return false;
    }
    pollfd p{socket.native_handle(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) {
        return true;
    }
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP)) {
        return false;
    }
    char c;
    return ::recv(p.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) != 0;
}

std::size_t http_client::connections_made() const {
    return impl_->connections;
}

void http_client::close() {
    beast::error_code ignored;
    impl_->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    impl_->stream.socket().close(ignored);
    impl_->buffer.clear();
}

http_response http_get(std::uint16_t port, std::string_view target, header_list headers) {
    http_client client(port);
    return client.request("GET", target, std::move(headers));
}

// ---------------------------------------------------------------------------
// raw_connection

raw_connection::raw_connection(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) {
        throw std::runtime_error(std::string("raw_connection: socket: ") + std::strerror(errno));
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    int err = r == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
        if (poll_one(fd_, POLLOUT, clock_type::now() + std::chrono::seconds(10)) <= 0) {
            err = ETIMEDOUT;
        } else {
            socklen_t len = sizeof err;
            ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        }
    }
    if (err != 0) {
        ::close(fd_);
        fd_ = -1;
        throw std::runtime_error("raw_connection: connect to 127.0.0.1:" + std::to_string(port) +
                                 ": " + std::strerror(err));
    }
}

raw_connection::~raw_connection() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

bool raw_connection::send(std::string_view bytes, std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    while (!bytes.empty()) {
        if (fd_ < 0) {
            return false;
        }
        ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n > 0) {
            bytes.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int revents = poll_one(fd_, POLLOUT, deadline);
            if (revents == 0) {
                throw std::runtime_error("raw_connection: send timed out after " +
                                         std::to_string(millis(timeout)) +
                                         " ms (the peer stopped reading)");
            }
            continue;
        }
        return false;  // EPIPE, ECONNRESET: the peer is gone
    }
    return true;
}

bool raw_connection::fill(clock_type::time_point deadline) {
    if (fd_ < 0 || closed_) {
        return false;
    }
    for (;;) {
        int revents = poll_one(fd_, POLLIN, deadline);
        if (revents <= 0) {
            return false;
        }
        char data[64 * 1024];
        ssize_t n = ::recv(fd_, data, sizeof data, 0);
        if (n > 0) {
            buffer_.append(data, static_cast<std::size_t>(n));
            return true;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            continue;
        }
        closed_ = true;  // EOF or reset
        return false;
    }
}

std::string raw_connection::read_some(std::chrono::milliseconds timeout) {
    if (buffer_.empty()) {
        fill(clock_type::now() + timeout);
    }
    return std::exchange(buffer_, std::string());
}

std::string raw_connection::read_until_close(std::chrono::milliseconds timeout) {
    const auto deadline = clock_type::now() + timeout;
    while (!closed_ && fd_ >= 0 && clock_type::now() < deadline) {
        fill(deadline);
    }
    return std::exchange(buffer_, std::string());
}

std::optional<http_response> raw_connection::read_response(std::chrono::milliseconds timeout,
                                                           bool head_request) {
    const auto deadline = clock_type::now() + timeout;
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(boost::none);
    parser.header_limit(1024 * 1024);
    if (head_request) {
        parser.skip(true);
    }
    std::size_t used = 0;
    auto finish = [&]() {
        auto& msg = parser.get();
        http_response out;
        out.status = msg.result_int();
        out.version = msg.version();
        copy_head(msg.base(), out);
        out.body = std::move(msg.body());
        out.body_bytes = out.body.size();
        out.keep_alive = msg.keep_alive();
        buffer_.erase(0, used);
        return out;
    };
    for (;;) {
        while (used < buffer_.size()) {
            beast::error_code ec;
            const std::size_t n =
                parser.put(net::buffer(buffer_.data() + used, buffer_.size() - used), ec);
            used += n;
            if (ec == http::error::need_more) {
                ec = {};
            }
            if (ec) {
                throw std::runtime_error("raw_connection: malformed response (" + ec.message() +
                                         "): " + buffer_.substr(0, 200));
            }
            if (parser.is_done()) {
                return finish();
            }
            if (n == 0) {
                break;
            }
        }
        if (closed_) {
            if (!parser.got_some() || used < buffer_.size()) {
                return std::nullopt;
            }
            beast::error_code ec;
            parser.put_eof(ec);
            if (ec || !parser.is_done()) {
                return std::nullopt;
            }
            return finish();
        }
        if (!fill(deadline) && !closed_) {
            return std::nullopt;  // timeout
        }
    }
}

bool raw_connection::closed() const {
    return closed_;
}

void raw_connection::shutdown_write() {
    if (fd_ >= 0) {
        ::shutdown(fd_, SHUT_WR);
    }
}

void raw_connection::close() {
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
}

void raw_connection::reset() {
    if (fd_ >= 0) {
        linger l{1, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        ::close(fd_);
        fd_ = -1;
    }
}

int raw_connection::native_handle() const {
    return fd_;
}

// ---------------------------------------------------------------------------

testing::AssertionResult wait_until(const std::function<bool()>& condition,
                                    std::chrono::milliseconds deadline, std::string_view what) {
    const auto end = clock_type::now() + deadline;
    for (;;) {
        if (condition()) {
            return testing::AssertionSuccess();
        }
        if (clock_type::now() >= end) {
            return testing::AssertionFailure()
                   << "timed out after " << deadline.count() << " ms waiting for " << what;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace switchyard::test
