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
    template <task_type T>
    awaitable<task_handle<typename T::result_type>> enqueue(typename T::args_type args, enqueue_options o = {}) {
        auto e = detail::build_envelope(T::name, encode_json(args), T::options, std::move(o), encoders_);
        auto id = e.id;
        co_await publish(std::move(e));
        co_return task_handle<typename T::result_type>{std::move(id), results_};
    }

    /// Enqueues the task named `name` with JSON arguments.
    awaitable<task_handle<boost::json::value>> enqueue(std::string_view name, const boost::json::value& args,
                                                       enqueue_options o = {}, const task_options& defaults = {}) {
        auto e = detail::build_envelope(name, boost::json::serialize(args), defaults, std::move(o), encoders_);
        auto id = e.id;
        co_await publish(std::move(e));
        co_return task_handle<boost::json::value>{std::move(id), results_};
    }

    /// Enqueues many T in one broker call; handles come back in the same order.
    template <task_type T>
    awaitable<std::vector<task_handle<typename T::result_type>>> enqueue_batch(std::vector<typename T::args_type> args,
                                                                              enqueue_options o = {}) {
        std::vector<envelope> batch;
        batch.reserve(args.size());
        for (auto& a : args) {
            auto copy = o;
            copy.task_id.reset();
            batch.push_back(detail::build_envelope(T::name, encode_json(a), T::options, std::move(copy), encoders_));
        }
        auto ids = co_await publish_all(std::move(batch));
        std::vector<task_handle<typename T::result_type>> out;
        out.reserve(ids.size());
        for (auto& id : ids) out.emplace_back(std::move(id), results_);
        co_return out;
    }

    /// Enqueues many untyped calls in one broker call.
    awaitable<std::vector<task_handle<boost::json::value>>> enqueue_batch(std::vector<task_call> calls) {
        std::vector<envelope> batch;
        batch.reserve(calls.size());
        for (auto& c : calls)
            batch.push_back(detail::build_envelope(c.name, boost::json::serialize(c.args), c.defaults, std::move(c.options), encoders_));
        auto ids = co_await publish_all(std::move(batch));
        std::vector<task_handle<boost::json::value>> out;
        out.reserve(ids.size());
        for (auto& id : ids) out.emplace_back(std::move(id), results_);
        co_return out;
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

    /// A handle on a task id known from elsewhere.
    template <class R = boost::json::value>
    task_handle<R> handle(std::string id) const { return {std::move(id), results_}; }

    const std::shared_ptr<detail::result_source>& results() const noexcept { return results_; }

private:
    awaitable<std::vector<std::string>> publish_all(std::vector<envelope> batch) {
        std::vector<std::string> ids;
        ids.reserve(batch.size());
        for (auto& e : batch) {
            ids.push_back(e.id);
            signals_.before_task_publish.emit({e});
        }
        if (signals_.after_task_publish.has_listeners()) {
            auto copy = batch;
            co_await broker_.publish_batch(std::move(batch));
            for (auto& e : copy) signals_.after_task_publish.emit({e});
        } else {
            co_await broker_.publish_batch(std::move(batch));
        }
        co_return ids;
    }

    Broker& broker_;
    signals& signals_;
    const payload_encoder_registry& encoders_;
    std::shared_ptr<detail::result_source> results_;
};

}  // namespace stem
