// Warm, soft and hard shutdown: what happens to running and prefetched deliveries.
#include "support/async.hpp"
#include "support/runtime.hpp"

#include <stem/stem.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

using namespace std::chrono_literals;
using stem_test::awaitable;
using stem_test::elapse;
namespace asio = boost::asio;

namespace {

/// `x`: how long the task runs, in milliseconds.
using wait_args = stem_test::num_args;

struct started_flag {
    std::shared_ptr<std::atomic<int>> started = std::make_shared<std::atomic<int>>(0);
    std::shared_ptr<std::atomic<int>> finished = std::make_shared<std::atomic<int>>(0);
};

/// Waits `ms` on a timer (cancellable), counting starts and finishes.
struct timed_task : stem::task_definition<wait_args, int> {
    static constexpr std::string_view name = "test.timed";
    started_flag flags;
    awaitable<int> operator()(stem::task_context&, wait_args a) {
        ++*flags.started;
        asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(a.x));
        co_await t.async_wait(asio::use_awaitable);
        ++*flags.finished;
        co_return a.x;
    }
};

/// Spins with checkpoints until asked to stop.
struct cooperative_task : stem::task_definition<wait_args, int> {
    static constexpr std::string_view name = "test.cooperative";
    started_flag flags;
    awaitable<int> operator()(stem::task_context& ctx, wait_args a) {
        ++*flags.started;
        for (int i = 0; i < a.x / 10; ++i) {
            ctx.checkpoint();
            co_await elapse(10ms);
        }
        ++*flags.finished;
        co_return a.x;
    }
};

stem::app_options opts(std::size_t concurrency) { return stem_test::app_options(concurrency); }

awaitable<void> until(const std::function<bool()>& cond) {
    for (int i = 0; i < 500 && !cond(); ++i) co_await elapse(10ms);
    REQUIRE(cond());
}

}  // namespace

TEST_CASE("runtime.shutdown: warm finishes running tasks and returns prefetched ones") {
    asio::io_context io;
    timed_task task;
    auto flags = task.flags;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{task}, opts(1)};
    std::vector<std::string> lifecycle;
    app.signals().worker_stopping.connect([&](const stem::worker_event& e) { lifecycle.push_back("stopping:" + std::string(e.reason)); });
    app.signals().worker_shutdown.connect([&](const stem::worker_event&) { lifecycle.push_back("shutdown"); });
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        std::vector<wait_args> batch(3, wait_args{300});
        auto hs = co_await app.enqueue_batch<timed_task>(batch);
        co_await until([&] { return *flags.started == 1; });
        co_await app.shutdown(stem::shutdown_mode::warm);
        CHECK(*flags.finished == 1);  // the running one completed
        auto first = co_await hs[0].get();
        CHECK(first.succeeded());
        auto stats = co_await app.get_broker().stats("default");
        CHECK(stats.pending == 2);  // the other two went back to the queue
        CHECK(stats.inflight == 0);
        CHECK(lifecycle == std::vector<std::string>{"stopping:warm", "shutdown"});
    });
}

TEST_CASE("runtime.shutdown: hard requeues running deliveries at once") {
    asio::io_context io;
    timed_task task;
    auto flags = task.flags;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{task}, opts(2)};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        wait_args long_wait{30'000};
        auto h = co_await app.enqueue<timed_task>(long_wait);
        co_await until([&] { return *flags.started == 1; });
        auto t0 = std::chrono::steady_clock::now();
        co_await app.shutdown(stem::shutdown_mode::hard);
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        CHECK(*flags.finished == 0);
        auto stats = co_await app.get_broker().stats("default");
        CHECK(stats.pending == 1);
        CHECK(stats.inflight == 0);
        auto r = co_await h.get();
        CHECK_FALSE(r.succeeded());
    });
}

TEST_CASE("runtime.shutdown: soft stops cooperative tasks at a checkpoint and requeues them") {
    asio::io_context io;
    cooperative_task task;
    auto flags = task.flags;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{task}, opts(1)};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        wait_args long_run{20'000};
        auto h = co_await app.enqueue<cooperative_task>(long_run);
        co_await until([&] { return *flags.started == 1; });
        co_await app.shutdown(stem::shutdown_mode::soft);
        CHECK(*flags.finished == 0);
        auto stats = co_await app.get_broker().stats("default");
        CHECK(stats.pending == 1);
        auto r = co_await h.get();
        REQUIRE(r.state);
        CHECK(*r.state == stem::task_state::queued);
        CHECK(r.error->type == "cancelled");
    });
}

TEST_CASE("runtime.shutdown: soft escalates to hard after the timeout for tasks that never check") {
    asio::io_context io;
    timed_task task;
    auto flags = task.flags;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{task}, opts(1)};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        wait_args long_wait{30'000};
        co_await app.enqueue<timed_task>(long_wait);
        co_await until([&] { return *flags.started == 1; });
        auto t0 = std::chrono::steady_clock::now();
        co_await app.shutdown(stem::shutdown_mode::soft);
        auto took = std::chrono::steady_clock::now() - t0;
        CHECK(took >= 250ms);  // waited for the soft timeout (300 ms)
        CHECK(took < 5s);
        auto stats = co_await app.get_broker().stats("default");
        CHECK(stats.pending == 1);
    });
}

TEST_CASE("runtime.shutdown: SIGTERM maps to a warm shutdown when handlers are installed") {
    asio::io_context io;
    timed_task task;
    auto o = opts(1);
    o.worker.install_signal_handlers = true;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{task}, o};
    std::string mode;
    app.signals().worker_stopping.connect([&](const stem::worker_event& e) { mode = std::string(e.reason); });
    bool ready = false;
    app.signals().worker_ready.connect([&](const stem::worker_event&) { ready = true; });
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        co_await until([&] { return ready; });
        co_await elapse(20ms);  // the signal_set is installed right after worker_ready's coroutine yields
        std::raise(SIGTERM);
        co_await app.stopped();
        CHECK(mode == "warm");
    });
}

namespace {
/// Acked on receipt (acks_late = false): the broker no longer holds it while it runs.
struct early_ack_task : stem::task_definition<wait_args, int> {
    static constexpr std::string_view name = "test.early_ack";
    static constexpr stem::task_options options{.acks_late = false};
    started_flag flags;
    awaitable<int> operator()(stem::task_context&, wait_args a) {
        ++*flags.started;
        asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(a.x));
        co_await t.async_wait(asio::use_awaitable);
        co_return a.x;
    }
};
}  // namespace

TEST_CASE("runtime.shutdown: hard shutdown publishes an early-acked task again rather than losing it") {
    asio::io_context io;
    early_ack_task task;
    auto flags = task.flags;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{task}, opts(1)};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        wait_args long_wait{30'000};
        auto h = co_await app.enqueue<early_ack_task>(long_wait);
        co_await until([&] { return *flags.started == 1; });
        auto during = co_await app.get_broker().stats("default");
        CHECK(during.inflight == 0);  // acked on receipt
        co_await app.shutdown(stem::shutdown_mode::hard);
        auto after = co_await app.get_broker().stats("default");
        CHECK(after.pending == 1);
    });
}
