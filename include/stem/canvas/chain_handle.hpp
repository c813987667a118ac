// stem/canvas: chains, groups and chords of typed tasks.
// chain_handle.hpp — what dispatching a chain returns.
#pragma once

#include <stem/canvas/canvas_result.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace stem {

namespace detail {
inline std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point deadline) {
    return std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
}
}  // namespace detail

/// A dispatched chain: the ids of its steps (fixed at dispatch) and a typed wait for the
/// last step's result. `R` is the last step's result type. Cheap to copy.
template <class R>
class chain_handle {
public:
    chain_handle(std::vector<std::string> ids, std::shared_ptr<detail::result_source> src) : ids_(std::move(ids)), src_(std::move(src)) {}

    /// The last step's task id.
    const std::string& id() const noexcept { return ids_.back(); }
    /// Every step's task id, in order (a step that never ran has no status).
    const std::vector<std::string>& ids() const noexcept { return ids_; }

    /// Waits (without polling) until the last step succeeds, a step fails (`failure` names
    /// it: index, id, name, error), or `timeout` passes.
    awaitable<canvas_result<R>> wait(std::chrono::milliseconds timeout) const {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        canvas_result<R> out;
        out.id = ids_.back();
        for (std::size_t i = 0; i < ids_.size(); ++i) {
            auto st = co_await src_->wait(ids_[i], detail::left_until(deadline));
            if (!st || !is_terminal(st->state)) {
                out.timed_out = true;
                co_return out;
            }
            if (st->state != task_state::succeeded) {
                out.failure = detail::failure_of(i, *st);
                co_return out;
            }
            if (i + 1 == ids_.size()) out.value = detail::to_result<R>(ids_[i], st, src_->encoders()).value;
        }
        co_return out;
    }

private:
    std::vector<std::string> ids_;
    std::shared_ptr<detail::result_source> src_;
};

}  // namespace stem
