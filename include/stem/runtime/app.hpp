// stem/runtime: producer, worker, task context, retries, lifecycle.
// app.hpp — producer + worker + registry + signals for one process (the usual entry point).
#pragma once

#include <stem/runtime/producer.hpp>
#include <stem/runtime/registry.hpp>
#include <stem/runtime/worker.hpp>
#include <stem/detail/serial_executor.hpp>

#include <memory>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

namespace stem {

/// Settings of an app.
struct app_options {
    worker_options worker{};
    bool signals_from_env = true;  ///< apply STEM_SIGNALS_ENABLED / STEM_SIGNALS_DISABLED
};

/// One process's stem: a broker, a result backend, the task handlers, a producer
/// and a worker on one executor.
///
///     stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{send_email{smtp}}};
///     app.start();
///     email_args args{.to = "a@b.c"};   // a named variable: see docs/getting-started.md (GCC 12)
///     auto h = co_await app.enqueue<send_email>(args);
template <broker Broker, result_backend Backend, std::derived_from<task_registry> Tasks>
class app {
public:
    using broker_type = Broker;
    using backend_type = Backend;

    /// The worker runs on a strand of `ex`, so `ex` may be an io_context run by many threads.
    app(boost::asio::any_io_executor ex, Broker b, Backend r, Tasks t, app_options o = {})
        : ex_(detail::serial_executor(std::move(ex))), broker_(std::move(b)), backend_(std::move(r)), tasks_(std::move(t)) {
        if (o.signals_from_env) signals_.configure_from_env();
        producer_ = std::make_unique<producer<Broker, Backend>>(broker_, backend_, signals_, encoders_);
        worker_opts_ = std::move(o.worker);
    }
    app(boost::asio::io_context& io, Broker b, Backend r, Tasks t, app_options o = {})
        : app(io.get_executor(), std::move(b), std::move(r), std::move(t), std::move(o)) {}
    app(const app&) = delete;
    app& operator=(const app&) = delete;

    /// Enqueues task T (see producer::enqueue). Pass `args` as a named type, not a braced list.
    template <task_type T, class... More>
    auto enqueue(More&&... more) -> decltype(std::declval<producer<Broker, Backend>&>().template enqueue<T>(std::forward<More>(more)...)) {
        return producer_->template enqueue<T>(std::forward<More>(more)...);
    }
    /// Enqueues a task by name with JSON arguments (see producer::enqueue).
    template <class... More>
    auto enqueue(std::string_view name, More&&... more) -> decltype(std::declval<producer<Broker, Backend>&>().enqueue(name, std::forward<More>(more)...)) {
        return producer_->enqueue(name, std::forward<More>(more)...);
    }
    template <task_type T, class... More>
    auto enqueue_batch(More&&... more) -> decltype(std::declval<producer<Broker, Backend>&>().template enqueue_batch<T>(std::forward<More>(more)...)) {
        return producer_->template enqueue_batch<T>(std::forward<More>(more)...);
    }
    template <class... More>
    auto enqueue_batch(More&&... more) -> decltype(std::declval<producer<Broker, Backend>&>().enqueue_batch(std::forward<More>(more)...)) {
        return producer_->enqueue_batch(std::forward<More>(more)...);
    }

    /// Starts the worker on the app's executor; `stopped()` completes when it has shut down.
    void start() {
        if (worker_) throw error(errc::invalid_argument, "app::start: the worker is already started");
        worker_ = std::make_unique<worker<Broker, Backend>>(broker_, backend_, tasks_, signals_, encoders_, worker_opts_);
        done_ = std::make_shared<detail::waiter>();
        boost::asio::co_spawn(ex_, worker_->run(), [this, done = done_](std::exception_ptr ep) {
            worker_error_ = ep;
            finished_ = true;
            done->notify();
        });
    }
    /// Asks the worker to stop (from any thread).
    void request_shutdown(shutdown_mode m = shutdown_mode::warm) {
        if (worker_) worker_->shutdown(m);
    }
    /// Asks the worker to stop and waits until it has; rethrows what ended it abnormally.
    awaitable<void> shutdown(shutdown_mode m = shutdown_mode::warm) {
        request_shutdown(m);
        co_await stopped();
    }
    /// Waits until the worker has stopped.
    awaitable<void> stopped() {
        if (!worker_) co_return;
        while (!finished_) co_await done_->wait_until(std::chrono::steady_clock::time_point::max());
        if (worker_error_) std::rethrow_exception(worker_error_);
    }

    producer<Broker, Backend>& client() noexcept { return *producer_; }
    /// The worker (after start()).
    worker<Broker, Backend>& get_worker() { return *worker_; }
    worker_options& worker_settings() noexcept { return worker_opts_; }
    Broker& get_broker() noexcept { return broker_; }
    Backend& get_backend() noexcept { return backend_; }
    Tasks& get_tasks() noexcept { return tasks_; }
    stem::signals& signals() noexcept { return signals_; }
    payload_encoder_registry& encoders() noexcept { return encoders_; }
    boost::asio::any_io_executor get_executor() const noexcept { return ex_; }

private:
    boost::asio::any_io_executor ex_;
    Broker broker_;
    Backend backend_;
    Tasks tasks_;
    stem::signals signals_;
    payload_encoder_registry encoders_;
    std::unique_ptr<producer<Broker, Backend>> producer_;
    worker_options worker_opts_;
    std::unique_ptr<worker<Broker, Backend>> worker_;
    std::shared_ptr<detail::waiter> done_;
    std::exception_ptr worker_error_;
    bool finished_ = false;
};

template <class Ex, broker B, result_backend R, class T>
app(Ex&, B, R, T) -> app<B, R, T>;
template <class Ex, broker B, result_backend R, class T>
app(Ex&, B, R, T, app_options) -> app<B, R, T>;
template <class Ex, broker B, result_backend R, class T>
app(Ex, B, R, T) -> app<B, R, T>;
template <class Ex, broker B, result_backend R, class T>
app(Ex, B, R, T, app_options) -> app<B, R, T>;

}  // namespace stem
