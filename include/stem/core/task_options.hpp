// stem/core: vocabulary shared by every room, with no I/O.
// task_options.hpp — per-task defaults (compile-time) and per-call enqueue overrides.
#pragma once

#include <stem/core/clock.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

namespace stem {

class signature;

/// How a task's retries are spaced. Delay of retry n (0-based) is
/// `default_delay * 2^n` when `backoff`, capped at `backoff_max`; `jitter`
/// draws uniformly from [0, delay] ("full jitter").
struct retry_policy {
    bool backoff = true;
    std::chrono::milliseconds default_delay{2000};
    std::chrono::milliseconds backoff_max{300'000};
    bool jitter = true;
    friend constexpr bool operator==(const retry_policy&, const retry_policy&) = default;
};

/// Where a handler runs: inline on the worker's event loop (I/O-bound
/// coroutines), or on the worker's thread pool (CPU-bound work).
enum class execution_mode { inline_, pool };

/// A task's defaults, usually a `static constexpr` member of its definition.
struct task_options {
    std::string_view queue = "default";
    int max_retries = 3;                             ///< retries after the first attempt
    int priority = 0;                                ///< 0 (lowest) to 9 (highest)
    std::chrono::milliseconds soft_time_limit{0};    ///< 0: none
    std::chrono::milliseconds hard_time_limit{0};    ///< 0: none
    std::chrono::milliseconds visibility_timeout{0}; ///< 0: the worker's default
    std::string_view rate_limit{};                   ///< e.g. "10/s"; empty: none
    bool unique = false;
    std::chrono::seconds unique_for{0};
    std::optional<retry_policy> retry{};             ///< nullopt: the worker's retry strategy
    execution_mode execution = execution_mode::inline_;
    bool acks_late = true;                           ///< ack after the handler finished (false: on receipt)
};

/// Per-call overrides given to `enqueue`.
struct enqueue_options {
    std::optional<std::chrono::milliseconds> countdown{};  ///< run no sooner than now + countdown
    std::optional<time_point> eta{};                       ///< run no sooner than this instant
    std::optional<std::chrono::milliseconds> expires{};    ///< skip if not started within this long
    std::optional<std::string> queue{};
    std::optional<int> priority{};
    std::optional<int> max_retries{};
    std::map<std::string, std::string> headers{};
    boost::json::object meta{};
    std::optional<std::string> task_id{};                  ///< use this id instead of a new UUIDv7
    std::optional<retry_policy> retry{};
    std::optional<std::chrono::milliseconds> visibility_timeout{};
    std::vector<signature> link{};        ///< enqueued when the task succeeds (see signature)
    std::vector<signature> link_error{};  ///< enqueued when the task finally fails
};

}  // namespace stem

#include <stem/core/signature.hpp>  // completes enqueue_options::link
