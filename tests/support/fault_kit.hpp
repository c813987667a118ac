// Test support: fault tests shared by the durable adapters. A fixture `F` makes a new
// adapter object on store `s` (a namespace, or a file prefix) with `F::broker(s)` and
// `F::backend(s)`, as another process would.
#pragma once

#include "support/async.hpp"
#include "support/child_process.hpp"
#include "support/runtime.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <exception>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <sys/wait.h>
#include <unistd.h>

namespace fault_kit {

using namespace std::chrono_literals;
using stem_test::awaitable;

/// A worker process is SIGKILLed in the middle of a lease-renewing task: after the lease
/// runs out, a new worker runs the task again, and it completes.
template <class F>
void killed_worker_task_runs_again(const std::string& s) {
    std::string id;
    // Enqueue, then let go of the store before forking (the child opens its own).
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, F::broker(s), F::backend(s), stem::tasks{stem_test::slow_in_child{}},
                      stem_test::app_options(1)};
        stem_test::num_args long_run{30'000};
        auto h = co_await app.template enqueue<stem_test::slow_in_child>(long_run);
        id = h.id();
    });

    pid_t child = stem_test::fork_child();
    REQUIRE(child >= 0);
    if (child == 0) {  // the worker process that will be killed
        try {
            boost::asio::io_context io;
            stem::app app{io, F::broker(s), F::backend(s), stem::tasks{stem_test::slow_in_child{}}, stem_test::app_options(1)};
            app.start();
            io.run();
        } catch (...) {
        }
        ::_exit(0);
    }

    stem_test::run([&]() -> awaitable<void> {
        auto results = F::backend(s);
        // Wait until the child runs the task, then kill it without warning.
        std::optional<stem::task_status> st;
        for (int i = 0; i < 200 && !(st && st->state == stem::task_state::running); ++i) {
            co_await stem_test::elapse(50ms);
            st = co_await results.get(id);
        }
        REQUIRE(st);
        REQUIRE(st->state == stem::task_state::running);
        ::kill(child, SIGKILL);
        int status = 0;
        ::waitpid(child, &status, 0);
        CHECK(WIFSIGNALED(status));

        // A new worker: the task is leased to the dead one until its lease (≤ 1 s) runs out.
        stem::app app{co_await boost::asio::this_coro::executor, F::broker(s), results, stem::tasks{stem_test::slow_in_child{}},
                      stem_test::app_options(1)};
        auto started = std::chrono::steady_clock::now();
        app.start();
        auto done = co_await results.wait(id, 10s);
        REQUIRE(done);
        CHECK(done->state == stem::task_state::succeeded);
        CHECK(done->result == std::to_string(::getpid()));
        CHECK(std::chrono::steady_clock::now() - started < 5s);
        auto stats = co_await stem_test::settled_stats(app.get_broker(), std::string("default"));
        CHECK(stats.pending + stats.inflight + stats.delayed + stats.dead == 0);
        co_await app.shutdown();
    }, 30s);
}

/// A thread joined when it goes out of scope, also when a wait throws.
struct joined {
    std::thread t;
    ~joined() {
        if (t.joinable()) t.join();
    }
};

/// The server is restarted (the shell command `restart`, on another thread) while a worker
/// runs 200 tasks: every task completes, and nothing is left in the queue.
template <class F>
void server_restart_every_task_completes(const std::string& s, const char* restart) {
    constexpr int tasks = 200;
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, F::broker(s), F::backend(s), stem::tasks{stem_test::sleepy{}},
                      stem_test::app_options(4)};
        // Whatever happens, the app is shut down before it is destroyed (a worker destroyed
        // while its coroutines wait would leave them to the io_context's destruction), and
        // an error is reported after that.
        std::exception_ptr failed;
        try {
            std::vector<stem_test::num_args> batch(tasks, stem_test::num_args{20});
            auto handles = co_await app.template enqueue_batch<stem_test::sleepy>(batch);
            app.start();
            co_await stem_test::elapse(300ms);
            // Restart on another thread: the worker keeps running into the outage.
            int restart_rc = -1;
            joined restarter{std::thread([&] { restart_rc = std::system(restart); })};
            std::size_t done = 0;
            for (auto& h : handles) {
                auto r = co_await h.wait(60s);  // rides out the outage (see status_hub::wait)
                done += r.succeeded();
            }
            restarter.t.join();
            CHECK(restart_rc == 0);
            CHECK(done == tasks);
            auto stats = co_await stem_test::settled_stats(app.get_broker(), std::string("default"));
            CHECK(stats.pending + stats.inflight + stats.delayed + stats.dead == 0);
        } catch (...) {
            failed = std::current_exception();
        }
        co_await app.shutdown();
        if (failed) std::rethrow_exception(failed);
    }, 120s);
}

}  // namespace fault_kit
