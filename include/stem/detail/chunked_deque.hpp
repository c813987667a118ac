// stem/detail: internals, never included by users directly.
// chunked_deque.hpp — a deque that stores large elements (envelopes, deliveries) in blocks of 64.
#pragma once

#include <boost/container/deque.hpp>
#include <boost/container/options.hpp>

namespace stem::detail {

/// std::deque keeps one 500-byte element per allocation; this one keeps 64, so pushing
/// and popping envelopes does not allocate each time.
template <class T>
using chunked_deque =
    boost::container::deque<T, void, boost::container::deque_options_t<boost::container::block_size<64u>>>;

}  // namespace stem::detail
