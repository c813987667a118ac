// stem/runtime: producer, worker, task context, retries, lifecycle.
// producer.hpp — enqueue typed or untyped tasks, one at a time or in batches.
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/detail/build_envelope.hpp>
#include <stem/observe/signals.hpp>
#include <stem/runtime/task_handle.hpp>

#include <memory>
#include <string>
#include <vector>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace stem {

/// One untyped call for `enqueue_batch`.
struct task_call {
    std::string name;
    boost::json::value args;
    enqueue_options options{};
    task_options defaults{};
};

/// Publishes tasks to a broker and hands out handles that read the backend.
/// Emits before_task_publish / after_task_publish around every publish.
template <broker Broker, result_backend Backend>
class producer {
public:
    producer(Broker& b, Backend& r, signals& s, const payload_encoder_registry& enc)
        : broker_(b), signals_(s), encoders_(enc), results_(std::make_shared<detail::backend_results<Backend>>(r, enc)) {}

    /// Enqueues task T with `args`; `o` overrides T::options for this call.
    template <task_type T, exactly<typename T::args_type> A, exactly<enqueue_options> O>
    awaitable<task_handle<typename T::result_type>> enqueue(A&& args, O&& o) {
        return send<typename T::result_type>(
            detail::build_envelope(T::name, encode_json(args), T::options, std::forward<O>(o), encoders_));
    }
    template <task_type T, exactly<typename T::args_type> A>
    awaitable<task_handle<typename T::result_type>> enqueue(A&& args) {
        return enqueue<T>(std::forward<A>(args), enqueue_options{});
    }

    /// Enqueues the task named `name` with JSON arguments; `defaults` stand in for task options.
    template <exactly<boost::json::value> V, exactly<enqueue_options> O>
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, V&& args, O&& o,
                                                       const task_options& defaults) {
        return send<boost::json::value>(
            detail::build_envelope(name, boost::json::serialize(args), defaults, std::forward<O>(o), encoders_));
    }
    template <exactly<boost::json::value> V, exactly<enqueue_options> O>
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, V&& args, O&& o) {
        return enqueue(name, std::forward<V>(args), std::forward<O>(o), task_options{});
    }
    template <exactly<boost::json::value> V>
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, V&& args) {
        return enqueue(name, std::forward<V>(args), enqueue_options{}, task_options{});
    }

    /// Enqueues many T in one broker call; handles come back in the same order.
    template <task_type T, exactly<std::vector<typename T::args_type>> V, exactly<enqueue_options> O>
    awaitable<std::vector<task_handle<typename T::result_type>>> enqueue_batch(V&& args, O&& o) {
        std::vector<envelope> batch;
        batch.reserve(args.size());
        for (auto& a : args) {
            enqueue_options copy = o;
            copy.task_id.reset();
            batch.push_back(detail::build_envelope(T::name, encode_json(a), T::options, std::move(copy), encoders_));
        }
        return send_batch<typename T::result_type>(std::move(batch));
    }
    template <task_type T, exactly<std::vector<typename T::args_type>> V>
    awaitable<std::vector<task_handle<typename T::result_type>>> enqueue_batch(V&& args) {
        return enqueue_batch<T>(std::forward<V>(args), enqueue_options{});
    }

    /// Enqueues many untyped calls in one broker call.
    template <exactly<std::vector<task_call>> V>
    awaitable<std::vector<task_handle<boost::json::value>>> enqueue_batch(V&& calls) {
        std::vector<envelope> batch;
        batch.reserve(calls.size());
        for (auto& c : calls)
            batch.push_back(detail::build_envelope(c.name, boost::json::serialize(c.args), c.defaults, c.options, encoders_));
        return send_batch<boost::json::value>(std::move(batch));
    }

    /// Publishes a ready envelope (signals included).
    awaitable<void> publish(envelope e) {
        signals_.before_task_publish.emit({e});
        if (signals_.after_task_publish.has_listeners()) {
            envelope copy = e;
            co_await broker_.publish(std::move(e));
            signals_.after_task_publish.emit({copy});
        } else {
            co_await broker_.publish(std::move(e));
        }
    }

    /// Publishes ready envelopes in one broker call (signals included).
    awaitable<void> publish_batch(std::vector<envelope> batch) {
        for (auto& e : batch) signals_.before_task_publish.emit({e});
        if (signals_.after_task_publish.has_listeners()) {
            auto copy = batch;
            co_await broker_.publish_batch(std::move(batch));
            for (auto& e : copy) signals_.after_task_publish.emit({e});
        } else {
            co_await broker_.publish_batch(std::move(batch));
        }
    }

    /// A handle on a task id known from elsewhere.
    template <class R = boost::json::value>
    task_handle<R> handle(std::string id) const { return {std::move(id), results_}; }

    const std::shared_ptr<detail::result_source>& results() const noexcept { return results_; }
    const payload_encoder_registry& encoders() const noexcept { return encoders_; }

private:
    template <class R>
    awaitable<task_handle<R>> send(envelope e) {
        auto id = e.id;
        co_await publish(std::move(e));
        co_return task_handle<R>{std::move(id), results_};
    }

    template <class R>
    awaitable<std::vector<task_handle<R>>> send_batch(std::vector<envelope> batch) {
        std::vector<task_handle<R>> out;
        out.reserve(batch.size());
        for (auto& e : batch) out.emplace_back(e.id, results_);
        co_await publish_batch(std::move(batch));
        co_return out;
    }

    Broker& broker_;
    signals& signals_;
    const payload_encoder_registry& encoders_;
    std::shared_ptr<detail::result_source> results_;
};

}  // namespace stem
