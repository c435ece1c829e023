#include "transport/stream.hpp"

#include <span>

namespace switchyard::transport {

template <class Executor>
void basic_duplex_stream<Executor>::tls_read_some(net::mutable_buffer buffer, handler_type handler) {
    tls_->async_read_some(buffer, std::move(handler));
}

template <class Executor>
void basic_duplex_stream<Executor>::tls_write_some(const gathered& buffers, handler_type handler) {
    tls_->async_write_some(std::span<const net::const_buffer>(buffers.buffers.data(), buffers.count),
                           std::move(handler));
}

template class basic_duplex_stream<net::any_io_executor>;
template class basic_duplex_stream<net::io_context::executor_type>;

}  // namespace switchyard::transport
