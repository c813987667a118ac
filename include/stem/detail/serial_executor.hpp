// stem/detail: internals, never included by users directly.
// serial_executor.hpp — a strand, held so that passing it around costs little.
#pragma once

#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace stem::detail {

/// A strand of `ex`, as an any_io_executor. An io_context's own executor is stranded
/// directly rather than through the type-erased wrapper: that strand fits in the
/// any_io_executor's inline storage, so copying it and asking it for tracked work (every
/// suspension, post and completion does both) allocate nothing.
inline boost::asio::any_io_executor serial_executor(boost::asio::any_io_executor ex) {
    if (auto* io = ex.target<boost::asio::io_context::executor_type>()) return boost::asio::make_strand(*io);
    return boost::asio::make_strand(std::move(ex));
}

}  // namespace stem::detail
