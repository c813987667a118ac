// stem/runtime: producer, worker, task context, retries, lifecycle.
// task_context.hpp — what a running handler sees: attempt, lease, progress, retry, follow-ups.
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/core/codec.hpp>
#include <stem/core/task_definition.hpp>
#include <stem/detail/build_envelope.hpp>
#include <stem/detail/waiter.hpp>
#include <stem/runtime/task_handle.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value.hpp>

namespace stem {

/// Thrown by task_context::retry: the worker schedules the next attempt.
struct retry_request {
    std::optional<std::chrono::milliseconds> countdown;
    std::optional<retry_policy> policy;
    std::string reason;
};

/// Throw from a handler to fail without retrying (validation errors and the like).
class task_failure : public std::runtime_error {
public:
    explicit task_failure(const std::string& message, std::string type = "task_failure")
        : std::runtime_error(message), type_(std::move(type)) {}
    const std::string& type() const noexcept { return type_; }

private:
    std::string type_;
};

/// Thrown at a checkpoint once the task was asked to stop (shutdown, revocation).
class task_cancelled : public error {
public:
    explicit task_cancelled(const std::string& why) : error(errc::cancelled, why) {}
};

/// Thrown at a checkpoint of a task that ran past its hard time limit.
class time_limit_exceeded : public error {
public:
    explicit time_limit_exceeded(const std::string& why) : error(errc::timeout, why) {}
};

namespace detail {
/// Flags shared by a running task, its limit timers and the worker.
struct run_flags {
    std::atomic<bool> soft_limit{false};
    std::atomic<bool> hard_limit{false};
    std::atomic<bool> cancel{false};
    /// The task's `running` record while it may still be in flight, where the backend could
    /// apply a later write of the task first (see worker::start_running_write). Worker's executor only.
    std::shared_ptr<waiter> started_write;
    /// The task's `running` record is deferred (worker_options::track_started_after) and not
    /// written yet. Worker's executor only.
    bool running_due = false;
};

/// What the worker lends a running task.
struct task_services {
    virtual ~task_services() = default;
    virtual awaitable<void> publish(envelope e) = 0;
    virtual awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) = 0;
    virtual awaitable<void> record(task_status st, run_flags& flags) = 0;
    virtual std::chrono::milliseconds lease_length(const envelope& e) const = 0;
    virtual const std::shared_ptr<result_source>& results() const = 0;
    virtual const payload_encoder_registry& encoders() const = 0;
    virtual boost::asio::any_io_executor executor() const = 0;
    virtual const std::string& worker_id() const = 0;
};
}  // namespace detail

/// The running task's view of itself. Valid for the duration of the handler call.
class task_context {
public:
    task_context(const delivery& d, detail::task_services& svc, detail::run_flags& flags, bool on_pool)
        : d_(d), svc_(svc), flags_(&flags), on_pool_(on_pool), meta_(d.env.meta) {}

    const std::string& id() const noexcept { return d_.env.id; }
    const std::string& name() const noexcept { return d_.env.name; }
    /// 0 for the first run, 1 for the first retry...
    int attempt() const noexcept { return d_.env.attempt; }
    int max_retries() const noexcept { return d_.env.max_retries; }
    const envelope& request() const noexcept { return d_.env; }
    const std::string& worker_id() const { return svc_.worker_id(); }
    /// Metadata recorded with the task's statuses; handlers may add to it.
    boost::json::object& meta() noexcept { return meta_; }

    /// True once the task was asked to stop (soft shutdown, revocation).
    bool cancellation_requested() const noexcept { return flags_->cancel.load(); }
    /// True once the soft time limit has passed.
    bool soft_time_limit_exceeded() const noexcept { return flags_->soft_limit.load(); }
    /// Throws task_cancelled or time_limit_exceeded if the task should stop now.
    void checkpoint() const {
        if (flags_->hard_limit.load()) throw time_limit_exceeded(fmt::format("task {} passed its hard time limit", id()));
        if (flags_->cancel.load()) throw task_cancelled(fmt::format("task {} was asked to stop", id()));
    }

    /// Checkpoint, then renew the lease for the task's visibility timeout. False if the lease was lost.
    awaitable<bool> heartbeat() {
        checkpoint();
        co_return co_await on_worker(svc_.extend_lease(d_, svc_.lease_length(d_.env)));
    }
    /// Checkpoint, then extend the lease to now + `by`. False if the lease was lost.
    awaitable<bool> extend_lease(std::chrono::milliseconds by) {
        checkpoint();
        co_return co_await on_worker(svc_.extend_lease(d_, by));
    }
    /// Checkpoint, then record progress (0..100) on the task's status.
    awaitable<void> progress(double percent) { return progress(percent, boost::json::object{}); }
    /// Checkpoint, then record progress (0..100) with data on the task's status.
    template <exactly<boost::json::object> D>
    awaitable<void> progress(double percent, D&& data) { return record_progress(percent, std::forward<D>(data)); }

private:
    awaitable<void> record_progress(double percent, boost::json::object data) {
        checkpoint();
        task_status st;
        st.id = id();
        st.name = name();
        st.state = task_state::running;
        st.attempt = attempt();
        st.progress = percent;
        st.progress_data = std::move(data);
        st.meta = meta_;
        st.queue = d_.env.queue;
        st.worker_id = svc_.worker_id();
        st.group_id = d_.env.group_id;
        st.created_at = d_.env.enqueued_at;
        st.updated_at = clock::now();
        co_await on_worker(svc_.record(std::move(st), *flags_));
    }

public:

    /// Ends this attempt and schedules another after `countdown` (or the retry policy's delay).
    /// Counts against max_retries: past it, the task fails and is dead-lettered.
    [[noreturn]] void retry(std::optional<std::chrono::milliseconds> countdown = {},
                            std::optional<retry_policy> policy = {}, std::string reason = "retry requested") {
        throw retry_request{countdown, policy, std::move(reason)};
    }

    /// Enqueues a follow-up task; it records this task as parent (and root).
    template <task_type T, exactly<typename T::args_type> A, exactly<enqueue_options> O>
    awaitable<task_handle<typename T::result_type>> enqueue(A&& args, O&& o) {
        return send<typename T::result_type>(
            detail::build_envelope(T::name, encode_json(args), T::options, std::forward<O>(o), svc_.encoders()));
    }
    template <task_type T, exactly<typename T::args_type> A>
    awaitable<task_handle<typename T::result_type>> enqueue(A&& args) {
        return enqueue<T>(std::forward<A>(args), enqueue_options{});
    }
    /// Enqueues a follow-up task by name with JSON arguments; `defaults` stand in for task options.
    template <exactly<boost::json::value> V, exactly<enqueue_options> O>
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, V&& args, O&& o, const task_options& defaults) {
        return send<boost::json::value>(
            detail::build_envelope(name, boost::json::serialize(args), defaults, std::forward<O>(o), svc_.encoders()));
    }
    template <exactly<boost::json::value> V, exactly<enqueue_options> O>
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, V&& args, O&& o) {
        return enqueue(name, std::forward<V>(args), std::forward<O>(o), task_options{});
    }
    template <exactly<boost::json::value> V>
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, V&& args) {
        return enqueue(name, std::forward<V>(args), enqueue_options{});
    }

private:
    template <class R>
    awaitable<task_handle<R>> send(envelope e) {
        e.parent_id = d_.env.id;
        e.root_id = d_.env.root_id.empty() ? d_.env.id : d_.env.root_id;
        auto id = e.id;
        co_await on_worker(svc_.publish(std::move(e)));
        co_return task_handle<R>{std::move(id), svc_.results()};
    }
    /// Pool tasks hand broker/backend calls back to the worker's executor.
    template <class T>
    awaitable<T> on_worker(awaitable<T> op) {
        if (!on_pool_) co_return co_await std::move(op);
        co_return co_await boost::asio::co_spawn(svc_.executor(), std::move(op), boost::asio::use_awaitable);
    }

    const delivery& d_;
    detail::task_services& svc_;
    detail::run_flags* flags_;
    bool on_pool_;
    boost::json::object meta_;
};

}  // namespace stem
