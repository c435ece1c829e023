#pragma once
// A connection that is plain TCP or TLS over TCP, decided at run time, behind
// one type the session reads and writes with Beast's algorithms (it is an
// AsyncReadStream and an AsyncWriteStream).
//
// Beast's tcp_stream is the lowest layer in both cases, so its timeouts
// (expires_after) govern TLS records too. TLS uses beast::ssl_stream rather
// than asio::ssl::stream because it gathers a write's buffers into one TLS
// record instead of one record per buffer.
//
// Two forms: duplex_stream, on any executor (the health probes, on the
// control thread's context), and worker_stream, on an io_context's own
// executor type (the data path: each operation's executor copies and work
// guards are then a pointer, not Asio's type-erased any_io_executor).
//
// Thread: the owning session's. Failure: as the underlying stream's.

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <chrono>
#include <memory>
#include <utility>

namespace switchyard::transport {

namespace net = boost::asio;
namespace beast = boost::beast;

template <class Executor>
class basic_duplex_stream {
public:
    using executor_type = Executor;
    using tcp_stream_type = beast::basic_stream<net::ip::tcp, Executor, beast::unlimited_rate_policy>;
    using socket_type = typename tcp_stream_type::socket_type;
    using tls_stream = beast::ssl_stream<tcp_stream_type>;

    explicit basic_duplex_stream(tcp_stream_type tcp)
        : tcp_(std::move(tcp)), executor_(tcp_.get_executor()) {}

    executor_type get_executor() const noexcept { return executor_; }

    // Wraps the TCP connection in TLS (before the handshake). Once.
    void start_tls(net::ssl::context& context) {
        tls_ = std::make_unique<tls_stream>(std::move(tcp_), context);
    }
    bool is_tls() const { return tls_ != nullptr; }
    tls_stream& tls() { return *tls_; }

    tcp_stream_type& tcp() { return tls_ ? beast::get_lowest_layer(*tls_) : tcp_; }
    socket_type& socket() { return tcp().socket(); }

    template <class Duration>
    void expires_after(Duration d) {
        tcp().expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(d));
    }
    void expires_never() { tcp().expires_never(); }
    void cancel() { tcp().cancel(); }
    void close() { tcp().close(); }

    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
        return net::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
            [this](auto handler, const MutableBufferSequence& b) {
                if (tls_) {
                    // A read may fill less than asked: the first buffer is enough.
                    tls_read_some(*net::buffer_sequence_begin(b), handler_type(std::move(handler), executor_));
                } else {
                    tcp_.async_read_some(b, std::move(handler));
                }
            },
            token, buffers);
    }

    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        return net::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
            [this](auto handler, const ConstBufferSequence& b) {
                if (tls_) {
                    // A write may send less than given: up to `gather` buffers.
                    gathered g;
                    for (auto it = net::buffer_sequence_begin(b);
                         it != net::buffer_sequence_end(b) && g.count < g.buffers.size(); ++it) {
                        if (net::const_buffer piece(*it); piece.size() != 0) {
                            g.buffers[g.count++] = piece;
                        }
                    }
                    tls_write_some(g, handler_type(std::move(handler), executor_));
                } else {
                    tcp_.async_write_some(b, std::move(handler));
                }
            },
            token, buffers);
    }

private:
    // A completion handler behind one concrete type (one allocation per TLS
    // operation). Not net::any_completion_handler: in Boost 1.81 its
    // executor cannot be required to be blocking.never, which Beast's
    // tcp_stream does.
    class handler_type {
    public:
        using executor_type = net::any_io_executor;
        template <class Handler>
        handler_type(Handler&& h, const executor_type& fallback)
            : executor_(net::get_associated_executor(h, fallback)),
              impl_(std::make_unique<model<std::decay_t<Handler>>>(std::forward<Handler>(h))) {}
        executor_type get_executor() const noexcept { return executor_; }
        void operator()(boost::system::error_code ec, std::size_t n) {
            auto impl = std::move(impl_);
            impl->call(ec, n);
        }

    private:
        struct base {
            virtual ~base() = default;
            virtual void call(boost::system::error_code ec, std::size_t n) = 0;
        };
        template <class Handler>
        struct model final : base {
            explicit model(Handler&& h) : handler(std::move(h)) {}
            void call(boost::system::error_code ec, std::size_t n) override {
                std::move(handler)(ec, n);
            }
            Handler handler;
        };
        executor_type executor_;
        std::unique_ptr<base> impl_;
    };
    struct gathered {
        std::array<net::const_buffer, 16> buffers;
        std::size_t count = 0;
    };
    // The TLS operations are compiled once, in stream.cpp, for one erased
    // handler type: instantiating OpenSSL's composed operations for every
    // Beast operation's handler would multiply the session's compile cost.
    void tls_read_some(net::mutable_buffer buffer, handler_type handler);
    void tls_write_some(const gathered& buffers, handler_type handler);

    tcp_stream_type tcp_;  // moved into tls_ when TLS starts
    executor_type executor_;
    std::unique_ptr<tls_stream> tls_;
};

// Both forms' TLS operations are compiled in stream.cpp.
extern template class basic_duplex_stream<net::any_io_executor>;
extern template class basic_duplex_stream<net::io_context::executor_type>;

using duplex_stream = basic_duplex_stream<net::any_io_executor>;
using worker_stream = basic_duplex_stream<net::io_context::executor_type>;

}  // namespace switchyard::transport
