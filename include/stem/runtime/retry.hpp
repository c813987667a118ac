// stem/runtime: producer, worker, task context, retries, lifecycle.
// retry.hpp — the default retry strategy and the per-task retry policy calculation.
#pragma once

#include <stem/contracts/retry_strategy.hpp>
#include <stem/core/task_id.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace stem {

namespace detail {
/// Uniform draw in [lo, hi] from the thread's id generator.
inline std::chrono::milliseconds draw(std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
    if (hi <= lo) return lo;
    auto span = static_cast<std::uint64_t>((hi - lo).count()) + 1;
    return lo + std::chrono::milliseconds{static_cast<std::int64_t>(thread_id_random().next() % span)};
}
/// min(cap, base * 2^attempt) without overflow.
inline std::chrono::milliseconds exp_delay(std::chrono::milliseconds base, std::chrono::milliseconds cap, int attempt) {
    double d = double(base.count()) * std::pow(2.0, std::clamp(attempt, 0, 62));
    return d >= double(cap.count()) ? cap : std::chrono::milliseconds{static_cast<std::int64_t>(d)};
}
}  // namespace detail

/// The worker's default: delay = min(max, base * 2^attempt), then a uniform
/// draw from [delay/2, delay] so retries of many tasks spread out.
struct exponential_jitter_retry {
    std::chrono::milliseconds base{2000};
    std::chrono::milliseconds max{300'000};
    std::chrono::milliseconds operator()(const retry_info& i) const {
        auto d = detail::exp_delay(base, max, i.env.attempt);
        return detail::draw(d / 2, d);
    }
};

/// The delay a task's own retry policy gives for the failed attempt `attempt`:
/// default_delay * 2^attempt (when backoff) capped at backoff_max, then a uniform
/// draw from [0, delay] when jitter is on.
inline std::chrono::milliseconds policy_delay(const retry_policy& p, int attempt) {
    auto d = p.backoff ? detail::exp_delay(p.default_delay, p.backoff_max, attempt) : std::min(p.default_delay, p.backoff_max);
    return p.jitter ? detail::draw(std::chrono::milliseconds{0}, d) : d;
}

static_assert(retry_strategy<exponential_jitter_retry>);

}  // namespace stem
