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
// Timeouts. Over TLS they are Beast's tcp_stream's, armed per operation.
// Over plain TCP, reads and writes go straight to the socket (one recv or
// send per call for a single buffer, where Beast's buffers_prefix_view made
// every call a recvmsg or sendmsg) under a lazy deadline: expires_after()
// only records the time; one timer per connection is re-armed when a
// deadline comes earlier than the armed one or when it fires early, so a
// busy keep-alive connection does not arm and cancel a timer per operation.
// When the deadline passes, pending operations end as with Beast: the
// socket is closed and they complete with beast::error::timeout; with none
// pending, the next one started does.
//
// Thread: the owning session's. Failure: as the underlying stream's.

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

namespace switchyard::transport {

namespace net = boost::asio;
namespace beast = boost::beast;

namespace detail {

// The plain-TCP deadline of one connection, shared with its pending
// operations and timer wait (either may complete after the stream is gone).
template <class Executor>
struct deadline_state {
    using clock = std::chrono::steady_clock;
    using socket_type = net::basic_stream_socket<net::ip::tcp, Executor>;

    explicit deadline_state(const Executor& ex) : timer(ex) {}

    net::basic_waitable_timer<clock, net::wait_traits<clock>, Executor> timer;
    clock::time_point deadline = clock::time_point::max();  // max: none
    clock::time_point armed = clock::time_point::max();     // the pending wait's expiry
    std::uint64_t generation = 0;  // of the pending wait; older completions are ignored
    socket_type* socket = nullptr;  // null once the stream is gone or in TLS
    unsigned pending = 0;           // plain reads and writes in flight
    bool expired = false;           // passed with nothing pending: the next op times out
    bool timed_out = false;         // the socket was closed for it
};

// A completion handler that maps errors after a timeout to
// beast::error::timeout; its associated executor, allocator and
// cancellation slot are the wrapped handler's (the associator below).
template <class Handler, class Executor>
struct timed_handler {
    Handler handler;
    std::shared_ptr<deadline_state<Executor>> state;

    void operator()(boost::system::error_code ec, std::size_t n) {
        --state->pending;
        if (ec && state->timed_out) {
            ec = beast::error::timeout;
        }
        state.reset();
        std::move(handler)(ec, n);
    }
};

}  // namespace detail

template <class Executor>
class basic_duplex_stream {
public:
    using executor_type = Executor;
    using tcp_stream_type = beast::basic_stream<net::ip::tcp, Executor, beast::unlimited_rate_policy>;
    using socket_type = typename tcp_stream_type::socket_type;
    using tls_stream = beast::ssl_stream<tcp_stream_type>;

    explicit basic_duplex_stream(tcp_stream_type tcp)
        : tcp_(std::move(tcp)),
          executor_(tcp_.get_executor()),
          deadline_(std::make_shared<deadline_state>(executor_)) {
        deadline_->socket = &tcp_.socket();
    }
    ~basic_duplex_stream() { detach_deadline(); }
    // The deadline state points at the socket: not movable.
    basic_duplex_stream(basic_duplex_stream&&) = delete;
    basic_duplex_stream& operator=(basic_duplex_stream&&) = delete;

    executor_type get_executor() const noexcept { return executor_; }

    // Wraps the TCP connection in TLS (before the handshake). Once. A plain
    // deadline still pending carries over to Beast's (it covers the
    // handshake).
    void start_tls(net::ssl::context& context) {
        const auto deadline = deadline_->deadline;
        detach_deadline();
        if (deadline != clock::time_point::max()) {
            tcp_.expires_at(deadline);
        }
        tls_ = std::make_unique<tls_stream>(std::move(tcp_), context);
    }
    bool is_tls() const { return tls_ != nullptr; }
    tls_stream& tls() { return *tls_; }

    tcp_stream_type& tcp() { return tls_ ? beast::get_lowest_layer(*tls_) : tcp_; }
    socket_type& socket() { return tcp().socket(); }

    template <class Duration>
    void expires_after(Duration d) {
        expires_at(clock::now() + std::chrono::duration_cast<clock::duration>(d));
    }
    void expires_at(std::chrono::steady_clock::time_point t) {
        if (tls_) {
            tcp().expires_at(t);
            return;
        }
        auto& st = *deadline_;
        st.deadline = t;
        st.expired = false;
        if (st.armed > t) {
            arm(t);
        }
    }
    void expires_never() {
        if (tls_) {
            tcp().expires_never();
            return;
        }
        // The armed wait, if any, finds no deadline and lapses.
        deadline_->deadline = clock::time_point::max();
        deadline_->expired = false;
    }
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
                    start_plain([&](auto timed) { tcp_.socket().async_read_some(b, std::move(timed)); },
                                std::move(handler));
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
                    start_plain([&](auto timed) { tcp_.socket().async_write_some(b, std::move(timed)); },
                                std::move(handler));
                }
            },
            token, buffers);
    }

private:
    using clock = std::chrono::steady_clock;
    using deadline_state = detail::deadline_state<Executor>;

    // A plain read or write: started on the socket with a timed_handler, or,
    // when the deadline has already passed, completed with timeout at once.
    template <class Start, class Handler>
    void start_plain(Start&& start, Handler&& handler) {
        auto& st = *deadline_;
        if (st.expired || st.timed_out) {
            st.timed_out = true;
            ++st.pending;
            if (st.socket != nullptr) {
                boost::system::error_code ignored;
                st.socket->close(ignored);
            }
            auto timed = detail::timed_handler<std::decay_t<Handler>, Executor>{
                std::forward<Handler>(handler), deadline_};
            net::post(executor_, [timed = std::move(timed)]() mutable {
                std::move(timed)(net::error::operation_aborted, 0);
            });
            return;
        }
        ++st.pending;
        start(detail::timed_handler<std::decay_t<Handler>, Executor>{std::forward<Handler>(handler),
                                                                      deadline_});
    }

    void arm(clock::time_point t) { arm(deadline_, t); }

    // The wait holds the state: it may complete after the stream is gone.
    static void arm(const std::shared_ptr<deadline_state>& state, clock::time_point t) {
        auto& st = *state;
        st.armed = t;
        const auto generation = ++st.generation;
        st.timer.expires_at(t);
        st.timer.async_wait([state, generation](boost::system::error_code ec) {
            on_timer(state, generation, ec);
        });
    }

    static void on_timer(const std::shared_ptr<deadline_state>& state, std::uint64_t generation,
                         boost::system::error_code ec) {
        auto& st = *state;
        if (ec || generation != st.generation) {
            return;  // cancelled, or re-armed since
        }
        st.armed = clock::time_point::max();
        if (st.socket == nullptr || st.deadline == clock::time_point::max()) {
            return;
        }
        if (clock::now() < st.deadline) {
            arm(state, st.deadline);  // moved later since this wait was armed
            return;
        }
        if (st.pending == 0) {
            st.expired = true;
            return;
        }
        st.timed_out = true;
        boost::system::error_code ignored;
        st.socket->close(ignored);
    }

    // The stream is going away or turning TLS: the deadline no longer
    // touches the socket, and its wait is cancelled.
    void detach_deadline() {
        deadline_->socket = nullptr;
        deadline_->deadline = clock::time_point::max();
        ++deadline_->generation;
        deadline_->armed = clock::time_point::max();
        deadline_->timer.cancel();
    }

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
    std::shared_ptr<deadline_state> deadline_;  // plain TCP only
    std::unique_ptr<tls_stream> tls_;
};

}  // namespace switchyard::transport

namespace boost::asio {

// timed_handler is transparent to Asio's associations (as its own append
// and prepend handlers are): the executor, allocator and cancellation slot
// are the wrapped handler's.
template <template <typename, typename> class Associator, typename Handler, typename Executor,
          typename DefaultCandidate>
struct associator<Associator, switchyard::transport::detail::timed_handler<Handler, Executor>,
                  DefaultCandidate> : Associator<Handler, DefaultCandidate> {
    static typename Associator<Handler, DefaultCandidate>::type get(
        const switchyard::transport::detail::timed_handler<Handler, Executor>& h) noexcept {
        return Associator<Handler, DefaultCandidate>::get(h.handler);
    }
    static auto get(const switchyard::transport::detail::timed_handler<Handler, Executor>& h,
                    const DefaultCandidate& c) noexcept
        -> decltype(Associator<Handler, DefaultCandidate>::get(h.handler, c)) {
        return Associator<Handler, DefaultCandidate>::get(h.handler, c);
    }
};

}  // namespace boost::asio

namespace switchyard::transport {

// Both forms' TLS operations are compiled in stream.cpp.
extern template class basic_duplex_stream<net::any_io_executor>;
extern template class basic_duplex_stream<net::io_context::executor_type>;

using duplex_stream = basic_duplex_stream<net::any_io_executor>;
using worker_stream = basic_duplex_stream<net::io_context::executor_type>;

}  // namespace switchyard::transport
