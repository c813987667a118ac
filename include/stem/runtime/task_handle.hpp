// stem/runtime: producer, worker, task context, retries, lifecycle.
// task_handle.hpp — what enqueue returns: the task id, and a typed way to await its result.
#pragma once

#include <stem/contracts/result_backend.hpp>
#include <stem/core/codec.hpp>
#include <stem/core/payload_encoder.hpp>
#include <stem/core/task_definition.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace stem {

/// A task's outcome as seen by its producer.
template <class R>
struct task_result {
    std::string id;
    std::optional<task_state> state;            ///< nullopt: nothing recorded yet
    std::optional<stored_result_t<R>> value;    ///< set when succeeded
    std::optional<task_error> error;            ///< set when failed, retried or cancelled
    int attempt = 0;
    bool timed_out = false;                     ///< the wait ended before a terminal state

    bool succeeded() const noexcept { return state == task_state::succeeded; }
    bool failed() const noexcept { return state == task_state::failed; }
    /// The state's name (`succeeded`, `failed`...), or `unknown` when nothing was recorded.
    std::string_view state_name() const noexcept { return state ? to_string(*state) : std::string_view("unknown"); }
};

namespace detail {
/// Where handles read statuses from; made by the producer over its backend.
struct result_source {
    virtual ~result_source() = default;
    virtual awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds timeout) = 0;
    virtual awaitable<std::optional<task_status>> get(std::string id) = 0;
    virtual awaitable<std::optional<group_record>> get_group(std::string id) = 0;
    virtual const payload_encoder_registry& encoders() const = 0;
};

template <result_backend Backend>
class backend_results final : public result_source {
public:
    backend_results(Backend& b, const payload_encoder_registry& e) : b_(b), e_(e) {}
    awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds t) override {
        return b_.wait(std::move(id), t);
    }
    awaitable<std::optional<task_status>> get(std::string id) override { return b_.get(std::move(id)); }
    awaitable<std::optional<group_record>> get_group(std::string id) override { return b_.get_group(std::move(id)); }
    const payload_encoder_registry& encoders() const override { return e_; }

private:
    Backend& b_;
    const payload_encoder_registry& e_;
};

template <class R>
task_result<R> to_result(std::string id, const std::optional<task_status>& st, const payload_encoder_registry& enc) {
    task_result<R> r;
    r.id = std::move(id);
    if (!st) {
        r.timed_out = true;
        return r;
    }
    r.state = st->state;
    r.error = st->error;
    r.attempt = st->attempt;
    r.timed_out = !is_terminal(st->state);
    if (st->state == task_state::succeeded && st->result)
        r.value = decode_json<stored_result_t<R>>(enc.decode(st->result_encoder, *st->result), "result");
    return r;
}
}  // namespace detail

/// A handle on an enqueued task. Cheap to copy.
template <class R>
class task_handle {
public:
    task_handle(std::string id, std::shared_ptr<detail::result_source> src) : id_(std::move(id)), src_(std::move(src)) {}

    const std::string& id() const noexcept { return id_; }

    /// Waits (without polling) until the task reaches a terminal state or `timeout` passes.
    awaitable<task_result<R>> wait(std::chrono::milliseconds timeout) const {
        auto st = co_await src_->wait(id_, timeout);
        co_return detail::to_result<R>(id_, st, src_->encoders());
    }
    /// The task's latest recorded status, without waiting.
    awaitable<task_result<R>> get() const {
        auto st = co_await src_->get(id_);
        auto r = detail::to_result<R>(id_, st, src_->encoders());
        r.timed_out = false;
        co_return r;
    }

private:
    std::string id_;
    std::shared_ptr<detail::result_source> src_;
};

}  // namespace stem
