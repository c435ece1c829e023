#include "tests/support/upstream.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cstdio>
#include <functional>
#include <future>
#include <list>
#include <mutex>
#include <random>
#include <thread>

namespace switchyard::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t piece_size = 64 * 1024;
constexpr auto stop_grace = std::chrono::seconds(5);

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

// 64 KiB of the generated pattern; a multiple of the pattern length, so every
// piece of a generated body can start at the beginning of this buffer.
const std::string& pattern_piece() {
    static const std::string piece = [] {
        std::string s(piece_size, '\0');
        for (std::size_t i = 0; i < s.size(); ++i) {
            s[i] = generated_body_byte(i);
        }
        return s;
    }();
    return piece;
}
static_assert(piece_size % generated_body_pattern.size() == 0);

void log_session_failure(std::exception_ptr e) {
    if (!e) {
        return;
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        std::fprintf(stderr, "test upstream: session failed: %s\n", x.what());
    }
}

// The acceptor, io_context and thread shared by both servers, plus a registry
// of live connections (io thread only) so that stop and close-idle can reach
// their sockets. Declared as the last member of its owner: it is destroyed
// first, so every session frame ends while the owner's state still exists.
class server_core {
public:
    enum class phase { reading, busy, finishing };

    struct connection {
        tcp::socket* socket = nullptr;
        net::steady_timer* timer = nullptr;
        phase state = phase::reading;
        bool idle = false;  // waiting for a request, nothing buffered
        bool close_when_idle = false;
    };

    // Lives in a session frame; unregisters on destruction.
    class registration {
    public:
        registration(server_core& core, std::list<connection>::iterator it)
            : core_(&core), it_(it) {}
        registration(const registration&) = delete;
        registration& operator=(const registration&) = delete;
        ~registration() {
            core_->connections_.erase(it_);
            core_->open_.fetch_sub(1, std::memory_order_relaxed);
        }
        connection& get() { return *it_; }
        bool stopping() const { return core_->stopping_; }

    private:
        server_core* core_;
        std::list<connection>::iterator it_;
    };

    using session_factory = std::function<net::awaitable<void>(tcp::socket, std::size_t)>;

    explicit server_core(session_factory factory) : factory_(std::move(factory)) {
        tcp::endpoint endpoint(net::ip::make_address_v4("127.0.0.1"), 0);
        acceptor_.open(endpoint.protocol());
        acceptor_.set_option(tcp::acceptor::reuse_address(true));
        acceptor_.bind(endpoint);
        acceptor_.listen(net::socket_base::max_listen_connections);
        port_ = acceptor_.local_endpoint().port();
        net::co_spawn(ioc_, accept_loop(), log_session_failure);
        done_ = finished_.get_future();
        thread_ = std::thread([this] {
            try {
                ioc_.run();
            } catch (const std::exception& x) {
                std::fprintf(stderr, "test upstream: io thread failed: %s\n", x.what());
            }
            finished_.set_value();
        });
    }

    ~server_core() {
        net::post(ioc_, [this] {
            stopping_ = true;
            beast::error_code ec;
            acceptor_.close(ec);
            for (auto& c : connections_) {
                close(c);
            }
        });
        // Every session ends once its socket is closed, so run() returns by
        // itself; stop() only guards against a bug keeping work alive.
        if (done_.wait_for(stop_grace) != std::future_status::ready) {
            std::fprintf(stderr, "test upstream: sessions did not end; stopping\n");
            ioc_.stop();
        }
        thread_.join();
    }

    server_core(const server_core&) = delete;
    server_core& operator=(const server_core&) = delete;

    std::uint16_t port() const { return port_; }
    std::size_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
    std::size_t open() const { return open_.load(std::memory_order_relaxed); }

    // Io thread only. A connection accepted just before stop closes at once.
    registration enroll(tcp::socket& socket, net::steady_timer& timer) {
        open_.fetch_add(1, std::memory_order_relaxed);
        auto it = connections_.insert(connections_.end(), connection{&socket, &timer});
        if (stopping_) {
            close(*it);
        }
        return registration(*this, it);
    }

    // Any thread except the io thread.
    void close_idle() {
        auto done = std::make_shared<std::promise<void>>();
        auto future = done->get_future();
        net::post(ioc_, [this, done] {
            for (auto& c : connections_) {
                if (c.idle) {
                    close(c);
                } else if (c.state == phase::finishing) {
                    c.close_when_idle = true;
                }
            }
            done->set_value();
        });
        future.wait_for(stop_grace);
    }

    static void close(connection& c) {
        beast::error_code ec;
        c.socket->shutdown(tcp::socket::shutdown_both, ec);
        c.socket->close(ec);
        c.timer->cancel();
    }

private:
    net::awaitable<void> accept_loop() {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
            if (ec == net::error::operation_aborted || !acceptor_.is_open()) {
                co_return;
            }
            if (ec) {
                continue;
            }
            std::size_t index = accepted_.fetch_add(1, std::memory_order_relaxed);
            net::co_spawn(ioc_, factory_(std::move(socket), index), log_session_failure);
        }
    }

    session_factory factory_;
    std::list<connection> connections_;
    bool stopping_ = false;
    std::atomic<std::size_t> accepted_{0};
    std::atomic<std::size_t> open_{0};
    std::uint16_t port_ = 0;
    std::promise<void> finished_;
    std::future<void> done_;
    // Destroyed before the registry: pending frames unregister into it.
    net::io_context ioc_{1};
    tcp::acceptor acceptor_{ioc_};
    std::thread thread_;
};

struct fnv1a {
    std::uint64_t value = 14695981039346656037ull;
    void add(const char* data, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) {
            value ^= static_cast<unsigned char>(data[i]);
            value *= 1099511628211ull;
        }
    }
};

bool status_has_body(unsigned status) {
    return !(status / 100 == 1 || status == 204 || status == 304);
}

}  // namespace

bool matches_generated_body(std::string_view data, std::uint64_t offset) {
    // Pattern-sized memcmp steps: tests check hundreds of MiB with this.
    std::size_t at = offset % generated_body_pattern.size();
    while (!data.empty()) {
        const std::size_t n = std::min(data.size(), generated_body_pattern.size() - at);
        if (data.substr(0, n) != generated_body_pattern.substr(at, n)) {
            return false;
        }
        data.remove_prefix(n);
        at = 0;
    }
    return true;
}

// ---------------------------------------------------------------------------
// upstream

std::string upstream::recorded_request::header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
        if (ascii_iequals(n, name)) {
            return v;
        }
    }
    return {};
}

int upstream::recorded_request::header_count(std::string_view name) const {
    int count = 0;
    for (const auto& h : headers) {
        if (ascii_iequals(h.first, name)) {
            ++count;
        }
    }
    return count;
}

struct upstream::impl {
    struct settings {
        unsigned status = 200;
        std::string body;
        bool generated = false;
        std::uint64_t generated_size = 0;
        bool chunked = false;
        std::chrono::milliseconds delay{0};
        double error_rate = 0;
        unsigned error_status = 500;
        unsigned health_status = 200;
        std::size_t record_limit = 4096;
        fault failure = fault::none;
        bool echo = false;
        header_list extra_headers;
    };

    explicit impl(std::string n) : name(std::move(n)) { current.body = name + "\n"; }

    // A copy of the settings for one response, with the error draw made.
    settings snapshot(bool& failed) {
        std::lock_guard lock(mutex);
        failed = current.error_rate > 0 &&
                 std::bernoulli_distribution(std::min(current.error_rate, 1.0))(rng);
        return current;
    }

    std::size_t record_limit() {
        std::lock_guard lock(mutex);
        return current.record_limit;
    }

    void record(recorded_request r, bool health) {
        std::lock_guard lock(mutex);
        if (health) {
            ++health_checks;
        } else {
            recorded.push_back(std::move(r));
        }
    }

    net::awaitable<void> session(tcp::socket socket, std::size_t index);
    net::awaitable<bool> respond(tcp::socket& socket, const recorded_request& req, bool head,
                                 bool keep_alive, std::string& echoed,
                                 server_core::connection& conn);
    net::awaitable<bool> write_generated(tcp::socket& socket,
                                         http::response<http::buffer_body>& res,
                                         std::uint64_t size);

    const std::string name;
    mutable std::mutex mutex;
    settings current;
    std::mt19937_64 rng{1};
    std::vector<recorded_request> recorded;
    std::size_t health_checks = 0;
    std::size_t connection_base = 0;
    // Last member: destroyed first (see server_core).
    server_core core{[this](tcp::socket s, std::size_t i) { return session(std::move(s), i); }};
};

net::awaitable<void> upstream::impl::session(tcp::socket socket, std::size_t index) {
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    net::steady_timer timer(socket.get_executor());
    auto reg = core.enroll(socket, timer);
    auto& conn = reg.get();
    beast::flat_buffer buffer;
    std::vector<char> piece(piece_size);

    for (;;) {
        if (conn.close_when_idle) {
            break;
        }
        conn.state = server_core::phase::reading;
        conn.idle = buffer.size() == 0;
        http::request_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        parser.header_limit(1024 * 1024);
        auto [hec, hn] = co_await http::async_read_header(socket, buffer, parser, use_tuple);
        conn.idle = false;
        if (hec) {
            if (hec.category() == http::make_error_code(http::error::bad_method).category() &&
                hec != http::error::end_of_stream && hec != http::error::partial_message) {
                static const std::string bad =
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                co_await net::async_write(socket, net::buffer(bad), use_tuple);
            }
            break;
        }
        conn.state = server_core::phase::busy;

        auto& msg = parser.get();
        recorded_request req;
        req.method = std::string(msg.method_string());
        req.target = std::string(msg.target());
        req.version = msg.version();
        req.connection = index;
        for (const auto& field : msg) {
            req.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
        }
        const bool health = msg.method() == http::verb::get && msg.target() == "/healthz";
        const bool keep_alive = msg.keep_alive();
        const bool head = msg.method() == http::verb::head;
        bool echo = false;
        {
            std::lock_guard lock(mutex);
            echo = current.echo && !health;
        }
        std::string echoed;
        if (echo) {
            echoed = req.method + " " + req.target +
                     (req.version == 10 ? " HTTP/1.0" : " HTTP/1.1") + "\r\n";
            for (const auto& [n, v] : req.headers) {
                echoed += n + ": " + v + "\r\n";
            }
            echoed += "\r\n";
        }

        if (!parser.is_done() && msg.version() >= 11 &&
            ascii_iequals(msg[http::field::expect], "100-continue")) {
            static const std::string cont = "HTTP/1.1 100 Continue\r\n\r\n";
            auto [cec, cn] = co_await net::async_write(socket, net::buffer(cont), use_tuple);
            if (cec) {
                break;
            }
        }

        const std::size_t limit = record_limit();
        fnv1a hash;
        bool body_ok = true;
        if (!parser.is_done()) {
            // Beast reads max(512, free capacity) per call: without room the
            // body would arrive in ~1 KiB reads.
            buffer.reserve(piece_size);
        }
        while (!parser.is_done()) {
            msg.body().data = piece.data();
            msg.body().size = piece.size();
            auto [bec, bn] = co_await http::async_read(socket, buffer, parser, use_tuple);
            if (bec == http::error::need_buffer) {
                bec = {};
            }
            if (bec) {
                body_ok = false;
                break;
            }
            const std::size_t got = piece.size() - msg.body().size;
            req.body_bytes += got;
            hash.add(piece.data(), got);
            if (req.body_prefix.size() < limit) {
                req.body_prefix.append(piece.data(), std::min(got, limit - req.body_prefix.size()));
            }
            if (echo) {
                echoed.append(piece.data(), got);
            }
        }
        req.body_hash = hash.value;
        if (!body_ok) {
            // What arrived still counts: tests look at truncated uploads.
            record(std::move(req), health);
            break;
        }

        if (health) {
            unsigned status;
            {
                std::lock_guard lock(mutex);
                status = current.health_status;
            }
            record(std::move(req), true);
            http::response<http::string_body> res{http::status::ok, msg.version()};
            res.result(status);
            res.set(http::field::content_type, "text/plain");
            res.body() = "ok\n";
            res.keep_alive(keep_alive);
            res.prepare_payload();
            auto [wec, wn] = co_await http::async_write(socket, res, use_tuple);
            if (wec || !keep_alive) {
                break;
            }
            continue;
        }

        record(req, false);
        if (!co_await respond(socket, req, head, keep_alive, echoed, conn)) {
            co_return;  // respond closed or lost the socket
        }
        if (!keep_alive) {
            break;
        }
    }
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
}

// Writes the response (or the fault); false when the connection must end
// without the graceful shutdown of the caller.
net::awaitable<bool> upstream::impl::respond(tcp::socket& socket, const recorded_request& req,
                                             bool head, bool keep_alive, std::string& echoed,
                                             server_core::connection& conn) {
    bool failed = false;
    settings s = snapshot(failed);
    beast::error_code ignored;

    if (s.delay.count() > 0) {
        conn.timer->expires_after(s.delay);
        auto [tec] = co_await conn.timer->async_wait(use_tuple);
        if (tec || !socket.is_open()) {
            co_return false;
        }
    }

    const unsigned version = req.version;
    const std::string line_version = version == 10 ? "HTTP/1.0" : "HTTP/1.1";
    const std::uint64_t content_size = s.generated ? s.generated_size : s.body.size();

    switch (s.failure) {
        case fault::none:
            break;
        case fault::reset_before_response:
            socket.set_option(net::socket_base::linger(true, 0), ignored);
            socket.close(ignored);
            co_return false;
        case fault::close_before_response:
            socket.shutdown(tcp::socket::shutdown_send, ignored);
            socket.close(ignored);
            co_return false;
        case fault::stall: {
            // Drain whatever else arrives until the peer (or the destructor) closes.
            std::array<char, 4096> sink;
            for (;;) {
                auto [rec, rn] = co_await socket.async_read_some(net::buffer(sink), use_tuple);
                if (rec) {
                    co_return false;
                }
            }
        }
        case fault::close_mid_body: {
            const std::uint64_t full = content_size >= 2 ? content_size : 1024;
            std::string header = line_version + " 200 OK\r\nX-Upstream: " + name +
                                 "\r\nContent-Length: " + std::to_string(full) + "\r\n\r\n";
            conn.state = server_core::phase::finishing;
            auto [hec, hn] = co_await net::async_write(socket, net::buffer(header), use_tuple);
            std::uint64_t half = full / 2;
            if (!hec && !s.generated && content_size >= 2) {
                std::string part = s.body.substr(0, half);
                co_await net::async_write(socket, net::buffer(part), use_tuple);
            } else if (!hec) {
                while (half > 0) {
                    const std::size_t n = std::min<std::uint64_t>(half, piece_size);
                    auto [pec, pn] = co_await net::async_write(
                        socket, net::buffer(pattern_piece().data(), n), use_tuple);
                    if (pec) {
                        break;
                    }
                    half -= n;
                }
            }
            socket.shutdown(tcp::socket::shutdown_send, ignored);
            socket.close(ignored);
            co_return false;
        }
        case fault::bad_status_line: {
            std::string raw = line_version + " 2OO OK\r\nX-Upstream: " + name +
                              "\r\nContent-Length: " + std::to_string(s.body.size()) +
                              "\r\nConnection: close\r\n\r\n" + s.body;
            conn.state = server_core::phase::finishing;
            co_await net::async_write(socket, net::buffer(raw), use_tuple);
            socket.shutdown(tcp::socket::shutdown_send, ignored);
            socket.close(ignored);
            co_return false;
        }
        case fault::extra_bytes_after_body: {
            std::string raw = line_version + " 200 OK\r\nX-Upstream: " + name +
                              "\r\nContent-Length: " + std::to_string(s.body.size()) + "\r\n" +
                              (keep_alive ? "" : "Connection: close\r\n") + "\r\n" + s.body +
                              "EXTRA-BYTES-AFTER-BODY\r\n";
            conn.state = server_core::phase::finishing;
            auto [xec, xn] = co_await net::async_write(socket, net::buffer(raw), use_tuple);
            co_return !xec;
        }
    }

    conn.state = server_core::phase::finishing;
    const unsigned status = s.echo ? 200u : (failed ? s.error_status : s.status);
    const bool with_body = status_has_body(status);

    if (s.generated && !s.echo && with_body) {
        http::response<http::buffer_body> res{http::status::ok, version};
        res.result(status);
        res.set(http::field::content_type, "text/plain");
        res.set("X-Upstream", name);
        for (const auto& [n, v] : s.extra_headers) {
            res.insert(n, v);
        }
        if (s.chunked && version >= 11) {
            res.chunked(true);
        } else {
            res.content_length(s.generated_size);
        }
        res.keep_alive(keep_alive);
        if (head) {
            http::response<http::empty_body> hres{std::move(res.base())};
            auto [hec, hn] = co_await http::async_write(socket, hres, use_tuple);
            co_return !hec;
        }
        co_return co_await write_generated(socket, res, s.generated_size);
    }

    http::response<http::string_body> res{http::status::ok, version};
    res.result(status);
    res.set(http::field::content_type, "text/plain");
    res.set("X-Upstream", name);
    for (const auto& [n, v] : s.extra_headers) {
        res.insert(n, v);
    }
    res.keep_alive(keep_alive);
    if (with_body) {
        res.body() = s.echo ? std::move(echoed) : std::move(s.body);
        res.prepare_payload();
    }
    if (head) {
        http::response<http::empty_body> hres{std::move(res.base())};
        auto [wec, wn] = co_await http::async_write(socket, hres, use_tuple);
        co_return !wec;
    }
    auto [wec, wn] = co_await http::async_write(socket, res, use_tuple);
    co_return !wec;
}

// Streams `size` generated bytes through a buffer_body serializer, 64 KiB at
// a time, so a response of any size costs one static buffer.
net::awaitable<bool> upstream::impl::write_generated(tcp::socket& socket,
                                                     http::response<http::buffer_body>& res,
                                                     std::uint64_t size) {
    res.body().data = nullptr;
    res.body().more = size > 0;
    http::response_serializer<http::buffer_body> sr{res};
    auto [hec, hn] = co_await http::async_write_header(socket, sr, use_tuple);
    if (hec) {
        co_return false;
    }
    std::uint64_t remaining = size;
    while (remaining > 0) {
        const std::size_t n = std::min<std::uint64_t>(remaining, piece_size);
        res.body().data = const_cast<char*>(pattern_piece().data());
        res.body().size = n;
        res.body().more = true;
        auto [wec, wn] = co_await http::async_write(socket, sr, use_tuple);
        if (wec == http::error::need_buffer) {
            wec = {};
        }
        if (wec) {
            co_return false;
        }
        remaining -= n;
    }
    if (!sr.is_done()) {
        res.body().data = nullptr;
        res.body().size = 0;
        res.body().more = false;
        auto [fec, fn] = co_await http::async_write(socket, sr, use_tuple);
        if (fec) {
            co_return false;
        }
    }
    co_return true;
}

upstream::upstream(std::string name) : impl_(std::make_unique<impl>(std::move(name))) {}
upstream::~upstream() = default;

std::uint16_t upstream::port() const {
    return impl_->core.port();
}
std::string upstream::address() const {
    return "127.0.0.1:" + std::to_string(port());
}
const std::string& upstream::name() const {
    return impl_->name;
}

void upstream::set_status(unsigned status) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.status = status;
}

void upstream::set_body(std::string body) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.body = std::move(body);
    impl_->current.generated = false;
}

void upstream::set_delay(std::chrono::milliseconds delay) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.delay = delay;
}

void upstream::set_error_rate(double p, unsigned status, std::uint64_t seed) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.error_rate = p;
    impl_->current.error_status = status;
    impl_->rng.seed(seed);
}

void upstream::set_health_status(unsigned status) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.health_status = status;
}

void upstream::set_response_size(std::uint64_t bytes, bool chunked) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.generated = true;
    impl_->current.generated_size = bytes;
    impl_->current.chunked = chunked;
}

void upstream::set_record_body_limit(std::size_t bytes) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.record_limit = bytes;
}

void upstream::set_fault(fault f) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.failure = f;
}

void upstream::set_echo(bool on) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.echo = on;
}

void upstream::set_response_headers(header_list headers) {
    std::lock_guard lock(impl_->mutex);
    impl_->current.extra_headers = std::move(headers);
}

std::vector<upstream::recorded_request> upstream::requests() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->recorded;
}

std::size_t upstream::request_count() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->recorded.size();
}

std::size_t upstream::health_check_count() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->health_checks;
}

std::size_t upstream::connection_count() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->core.accepted() - impl_->connection_base;
}

std::size_t upstream::open_connections() const {
    return impl_->core.open();
}

void upstream::clear() {
    std::lock_guard lock(impl_->mutex);
    impl_->recorded.clear();
    impl_->health_checks = 0;
    impl_->connection_base = impl_->core.accepted();
}

void upstream::close_idle_connections() {
    impl_->core.close_idle();
}

// ---------------------------------------------------------------------------
// raw_upstream

struct raw_upstream::impl {
    net::awaitable<void> session(tcp::socket socket, std::size_t index);

    void received_bytes(std::size_t index, const char* data, std::size_t n) {
        std::lock_guard lock(mutex);
        all.append(data, n);
        if (index >= connection_base) {
            const std::size_t slot = index - connection_base;
            if (per_connection.size() <= slot) {
                per_connection.resize(slot + 1);
            }
            per_connection[slot].append(data, n);
        }
    }

    mutable std::mutex mutex;
    std::string reply;
    bool close_after_reply = false;
    std::string all;
    std::vector<std::string> per_connection;
    std::size_t connection_base = 0;
    server_core core{[this](tcp::socket s, std::size_t i) { return session(std::move(s), i); }};
};

net::awaitable<void> raw_upstream::impl::session(tcp::socket socket, std::size_t index) {
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    net::steady_timer timer(socket.get_executor());
    auto reg = core.enroll(socket, timer);
    {
        std::lock_guard lock(mutex);
        if (index >= connection_base && per_connection.size() <= index - connection_base) {
            per_connection.resize(index - connection_base + 1);
        }
    }
    std::array<char, 16 * 1024> data;
    std::string head;  // bytes until the reply went out, to spot "\r\n\r\n"
    bool replied = false;
    for (;;) {
        auto [ec, n] = co_await socket.async_read_some(net::buffer(data), use_tuple);
        if (ec) {
            break;
        }
        received_bytes(index, data.data(), n);
        if (replied) {
            continue;
        }
        const std::size_t from = head.size() >= 3 ? head.size() - 3 : 0;
        head.append(data.data(), n);
        if (head.find("\r\n\r\n", from) == std::string::npos) {
            continue;
        }
        std::string answer;
        bool close_after = false;
        {
            std::lock_guard lock(mutex);
            answer = reply;
            close_after = close_after_reply;
        }
        if (answer.empty()) {
            continue;
        }
        replied = true;
        head.clear();
        auto [wec, wn] = co_await net::async_write(socket, net::buffer(answer), use_tuple);
        if (wec || close_after) {
            break;
        }
    }
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
}

raw_upstream::raw_upstream() : impl_(std::make_unique<impl>()) {}
raw_upstream::~raw_upstream() = default;

std::uint16_t raw_upstream::port() const {
    return impl_->core.port();
}
std::string raw_upstream::address() const {
    return "127.0.0.1:" + std::to_string(port());
}

void raw_upstream::set_reply(std::string raw) {
    std::lock_guard lock(impl_->mutex);
    impl_->reply = std::move(raw);
}

void raw_upstream::set_close_after_reply(bool close) {
    std::lock_guard lock(impl_->mutex);
    impl_->close_after_reply = close;
}

std::string raw_upstream::received() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->all;
}

std::string raw_upstream::received(std::size_t connection) const {
    std::lock_guard lock(impl_->mutex);
    return connection < impl_->per_connection.size() ? impl_->per_connection[connection]
                                                     : std::string();
}

std::size_t raw_upstream::connection_count() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->core.accepted() - impl_->connection_base;
}

std::size_t raw_upstream::open_connections() const {
    return impl_->core.open();
}

void raw_upstream::clear() {
    std::lock_guard lock(impl_->mutex);
    impl_->all.clear();
    impl_->per_connection.clear();
    impl_->connection_base = impl_->core.accepted();
}

}  // namespace switchyard::test
