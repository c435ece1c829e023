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

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/intrusive/list_hook.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "proxy/upstream_pool.hpp"
#include "routing/snapshot.hpp"

namespace switchyard::proxy {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

class worker;
struct route_epoch;

using session_hook =
    boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class session : public session_hook {
public:
    session(worker& owner, net::ip::tcp::socket socket, std::size_t listener);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    net::awaitable<void> run();

    // Worker thread: finish the request in progress (its response carries
    // Connection: close), or close now when idle.
    void drain();
    // Worker thread: closes both sides now (shutdown of the worker).
    void abort();

private:
    // Serves one request; false when the connection must close.
    net::awaitable<bool> serve_one();
    net::awaitable<bool> proxy_request(const route_epoch& epoch, const routing::service& svc);
    net::awaitable<void> respond_error(unsigned status, std::string_view why, bool close,
                                       const char* retry_after = nullptr);
    net::awaitable<void> lingering_close();
    // Appends the request just answered to the worker's access log (when on).
    void log_access();
    net::awaitable<upstream_ptr> connect(const routing::endpoint& ep,
                                         std::chrono::milliseconds timeout,
                                         boost::system::error_code& ec);

    struct chunk_guard {
        bool bad = false;
        void operator()(std::uint64_t size, beast::string_view extensions,
                        boost::system::error_code& ec);
    };

    worker& worker_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;    // downstream bytes read but not yet parsed
    beast::flat_buffer upbuf_;     // upstream bytes read but not yet parsed
    std::optional<http::request_parser<http::buffer_body>> parser_;
    chunk_guard chunk_guard_;
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
