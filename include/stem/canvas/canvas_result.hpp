// stem/canvas: chains, groups and chords of typed tasks.
// canvas_result.hpp — what waiting on a chain, group or chord gives.
#pragma once

#include <stem/core/task_status.hpp>
#include <stem/runtime/task_handle.hpp>

#include <cstddef>
#include <optional>
#include <string>

namespace stem {

/// The step (chain), branch (group, chord) or callback (chord) that failed, and why.
struct canvas_failure {
    std::size_t index = 0;  ///< step or branch position; a chord's callback is header size
    std::string task_id;
    std::string task_name;
    task_error error;
};

/// The outcome of a chain, group or chord.
template <class R>
struct canvas_result {
    std::string id;                         ///< the chain's last step, the group, the chord's callback
    std::optional<R> value;                 ///< set when everything succeeded
    std::optional<canvas_failure> failure;  ///< set when a step or branch failed
    bool timed_out = false;                 ///< the wait ended before the outcome was known

    bool succeeded() const noexcept { return value.has_value(); }
};

namespace detail {
/// A failure record for `st`, at `index`.
inline canvas_failure failure_of(std::size_t index, const task_status& st) {
    return {index, st.id, st.name, st.error.value_or(task_error{std::string(to_string(st.state)), "no error recorded", {}, false})};
}
}  // namespace detail

}  // namespace stem
