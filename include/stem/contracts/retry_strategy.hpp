// stem/contracts: one concept per contract, and its type-erased twin.
// retry_strategy.hpp — how long to wait before the next attempt of a failed task.
#pragma once

#include <stem/core/envelope.hpp>
#include <stem/core/task_status.hpp>

#include <chrono>
#include <concepts>
#include <functional>

namespace stem {

/// What a retry strategy is told about a failure.
struct retry_info {
    const envelope& env;     ///< the envelope whose attempt failed (env.attempt is 0-based)
    const task_error& error;
};

/// A callable giving the delay before the next attempt.
template <class S>
concept retry_strategy = std::copy_constructible<S> && requires(S& s, const retry_info& i) {
    { s(i) } -> std::convertible_to<std::chrono::milliseconds>;
};

/// Type-erased retry strategy, as workers hold it.
using any_retry_strategy = std::function<std::chrono::milliseconds(const retry_info&)>;

}  // namespace stem
