// stem/canvas: chains, groups and chords of typed tasks.
// chord_handle.hpp — what dispatching a chord returns.
#pragma once

#include <stem/canvas/chain_handle.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace stem {

/// A dispatched chord: its group (the header), the header's task ids, and the callback's
/// id, all fixed at dispatch. `R` is the callback's result type. Cheap to copy.
template <class R>
class chord_handle {
public:
    chord_handle(std::string group_id, std::vector<std::string> ids, std::string callback_id, std::shared_ptr<detail::result_source> src)
        : group_id_(std::move(group_id)), ids_(std::move(ids)), callback_id_(std::move(callback_id)), src_(std::move(src)) {}

    /// The callback's task id.
    const std::string& id() const noexcept { return callback_id_; }
    const std::string& group_id() const noexcept { return group_id_; }
    /// The header's task ids, in signature order.
    const std::vector<std::string>& ids() const noexcept { return ids_; }

    /// Waits (without polling) for the callback's outcome. A failed branch fails the chord
    /// without running the callback: `failure` then names the branch (index, id, name) and
    /// its error; a failed callback gives index == header size.
    awaitable<canvas_result<R>> wait(std::chrono::milliseconds timeout) const {
        canvas_result<R> out;
        out.id = callback_id_;
        auto st = co_await src_->wait(callback_id_, timeout);
        if (!st || !is_terminal(st->state)) {
            out.timed_out = true;
        } else if (st->state == task_state::succeeded) {
            out.value = detail::to_result<R>(callback_id_, st, src_->encoders()).value;
        } else if (st->error && st->error->type == "chord_branch_failed") {
            auto& c = st->error->context;
            canvas_failure f;
            if (auto* b = c.if_contains("branch"); b && b->is_int64()) f.index = std::size_t(b->get_int64());
            else if (b && b->is_uint64()) f.index = std::size_t(b->get_uint64());
            if (auto* i = c.if_contains("branch_id"); i && i->is_string()) f.task_id = i->get_string();
            if (auto* n = c.if_contains("branch_name"); n && n->is_string()) f.task_name = n->get_string();
            f.error = *st->error;
            out.failure = std::move(f);
        } else {
            out.failure = detail::failure_of(ids_.size(), *st);
        }
        co_return out;
    }

private:
    std::string group_id_;
    std::vector<std::string> ids_;
    std::string callback_id_;
    std::shared_ptr<detail::result_source> src_;
};

}  // namespace stem
