#include "transport/stream.hpp"

#include <span>

namespace switchyard::transport {

void duplex_stream::tls_read_some(net::mutable_buffer buffer, handler_type handler) {
    tls_->async_read_some(buffer, std::move(handler));
}

void duplex_stream::tls_write_some(const gathered& buffers, handler_type handler) {
    tls_->async_write_some(std::span<const net::const_buffer>(buffers.buffers.data(), buffers.count),
                           std::move(handler));
}

}  // namespace switchyard::transport
