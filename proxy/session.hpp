#pragma once
// One downstream connection: a coroutine frame that owns the socket, reads
// requests one at a time (pipelined requests are answered in order because
// the next one is not parsed before the current response is written), routes
// each, relays it to an upstream connection leased from the worker's pool and
// streams the response back through a fixed buffer (STYLE rules 5 and 7).
//
// Thread: the owning worker's only. Failure: expected I/O failures are values
// (as_tuple); each maps to a status, a stats outcome and, for the client, a
// short body that says the proxy made the response.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/intrusive/list_hook.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "proxy/request_parser.hpp"
#include "transport/stream.hpp"
#include "proxy/upstream_pool.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

class worker;
struct route_epoch;

// The data path's coroutines run on their worker's io_context and say so in
// their type: an awaitable on the concrete executor does without
// any_io_executor's type erasure (a copy, move or destruction of it per
// completion was ~2.9 k instructions per request, callgrind).
using executor_type = net::io_context::executor_type;
// The client's and the upstreams' connections, on that same executor.
using duplex_stream = transport::worker_stream;
using client_socket = duplex_stream::socket_type;
template <class T>
using awaitable = net::awaitable<T, executor_type>;
// Completion token of the data path: results as a tuple, errors as values.
constexpr auto use_tuple = net::as_tuple(net::use_awaitable_t<executor_type>{});

using session_hook =
    boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

// A deadline for reads that cancels them instead of closing the socket
// (Beast's tcp_stream closes on timeout, which leaves no way to answer 408).
// Arming costs a timer only when a read must wait.
class read_deadline {
public:
    explicit read_deadline(const executor_type& executor);
    ~read_deadline();
    read_deadline(const read_deadline&) = delete;
    read_deadline& operator=(const read_deadline&) = delete;

    // Cancels `socket`'s pending operations once `after` has passed.
    void arm(client_socket& socket, std::chrono::steady_clock::duration after);
    void disarm();
    // The last armed deadline passed (and cancelled the read).
    bool fired() const { return state_->fired; }

private:
    struct state {
        explicit state(const executor_type& executor) : timer(executor) {}
        net::basic_waitable_timer<std::chrono::steady_clock,
                                  net::wait_traits<std::chrono::steady_clock>, executor_type>
            timer;
        client_socket* socket = nullptr;
        std::uint64_t generation = 0;
        bool fired = false;
    };
    std::shared_ptr<state> state_;  // shared with the pending wait's handler
};

class session : public session_hook {
public:
    session(worker& owner, client_socket socket, std::size_t listener);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    awaitable<void> run();

    // Worker thread: finish the request in progress (its response carries
    // Connection: close), or close now when idle.
    void drain();
    // Worker thread: closes both sides now (shutdown of the worker).
    void abort();

private:
    // Serves one request; false when the connection must close.
    awaitable<bool> serve_one();
    awaitable<bool> proxy_request(const route_epoch& epoch, const routing::service& svc);
    awaitable<void> respond_error(unsigned status, std::string_view why, bool close,
                                  const char* retry_after = nullptr);
    awaitable<void> lingering_close();
    // Reads request body bytes into `buf` (read_some: as soon as the parser
    // moved) under an inactivity deadline; timeouts come back as
    // beast::error::timeout, a full buffer as success.
    awaitable<boost::system::error_code> read_body(char* buf, std::size_t size,
                                                   std::chrono::milliseconds timeout, bool some);
    // The answer to a broken or late request body (413, 408, 400, 431, or
    // nothing when the client left).
    awaitable<void> respond_body_error(boost::system::error_code ec);
    // TLS listeners: the server handshake (false: the connection is done).
    awaitable<bool> handshake(net::ssl::context& context, const config::limits& limits);
    // After a 101 to a WebSocket handshake: bytes both ways until either side
    // closes or neither sends for `idle` (SPEC §4).
    awaitable<void> tunnel(duplex_stream& upstream, std::chrono::steady_clock::duration idle,
                           std::chrono::steady_clock::duration send_timeout);
    // Appends the request just answered to the worker's access log (when on).
    void log_access();
    // A new upstream connection (TCP, then the TLS handshake when
    // upstream_defaults.tls is on, with `tls` this worker's client context),
    // all within connect_timeout; null with `ec` set on failure.
    awaitable<upstream_ptr> connect(const routing::endpoint& ep,
                                    const config::upstream_defaults& upstream,
                                    net::ssl::context* tls, boost::system::error_code& ec);

    // What reading a request header ended with: 0 = a header is parsed;
    // otherwise the status to answer (and close), or `silent` to close
    // without a word (the client went away, or an idle connection drained).
    struct header_outcome {
        static constexpr unsigned silent = 1;
        unsigned status = 0;
        std::string_view why;
        std::size_t header_bytes = 0;
    };
    // Reads and parses one request header under the SPEC §2 limits, with its
    // own read loop so that the raw header block can be checked (obs-fold,
    // request line length) before the parser folds it away.
    awaitable<header_outcome> read_header(const config::limits& limits);

    worker& worker_;
    duplex_stream stream_;         // the client: plain TCP or TLS
    read_deadline deadline_;       // header_timeout and body_timeout
    beast::flat_buffer buffer_;    // downstream bytes read but not yet parsed
    beast::flat_buffer upbuf_;     // upstream bytes read but not yet parsed
    std::optional<request_parser> parser_;
    std::size_t listener_;
    bool tls_ = false;
    char client_ip_[64] = {};
    std::size_t client_ip_len_ = 0;
    upstream_connection* upstream_ = nullptr;  // the one in use, for abort()
    bool idle_ = true;
    bool drain_ = false;

    // What the access log says about the request in progress. Pointers are
    // into the snapshot the request's route_lease pins; the line is written
    // before that lease ends.
    struct access_record {
        std::chrono::steady_clock::time_point started;  // first byte of the header
        const routing::service* service = nullptr;
        const routing::pool* pool = nullptr;
        const routing::endpoint* endpoint = nullptr;
        std::int64_t upstream_us = -1;
        std::uint64_t bytes_sent = 0;
        std::uint64_t bytes_received = 0;
        unsigned status = 0;  // 0: no response was attempted, nothing is logged
        bool parsed = false;  // the request header was parsed
    };
    access_record log_;
};

}  // namespace switchyard::proxy
