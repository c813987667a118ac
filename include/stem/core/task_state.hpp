// stem/core: vocabulary shared by every room, with no I/O.
// task_state.hpp — the lifecycle states of a task and their names.
#pragma once

#include <stem/core/error.hpp>

#include <optional>
#include <string_view>

#include <fmt/format.h>

namespace stem {

/// Where a task is in its life. Terminal: succeeded, failed, cancelled.
enum class task_state { queued, running, retried, succeeded, failed, cancelled };

/// The state's name as operators see it (`succeeded`, `failed`...).
constexpr std::string_view to_string(task_state s) noexcept {
    switch (s) {
    case task_state::queued: return "queued";
    case task_state::running: return "running";
    case task_state::retried: return "retried";
    case task_state::succeeded: return "succeeded";
    case task_state::failed: return "failed";
    case task_state::cancelled: return "cancelled";
    }
    return "unknown";
}

/// The state named `name`, or nullopt.
constexpr std::optional<task_state> task_state_from_string(std::string_view name) noexcept {
    for (auto s : {task_state::queued, task_state::running, task_state::retried, task_state::succeeded,
                   task_state::failed, task_state::cancelled})
        if (to_string(s) == name) return s;
    return std::nullopt;
}

/// True for succeeded, failed and cancelled: nothing happens to the task afterwards.
constexpr bool is_terminal(task_state s) noexcept {
    return s == task_state::succeeded || s == task_state::failed || s == task_state::cancelled;
}

}  // namespace stem

template <>
struct fmt::formatter<stem::task_state> : fmt::formatter<std::string_view> {
    auto format(stem::task_state s, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(stem::to_string(s), ctx);
    }
};
