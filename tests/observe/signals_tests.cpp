// Signals: ordering, isolation of throwing listeners, priorities, cancel, configuration.
#include "support/async.hpp"
#include "support/runtime.hpp"

#include <stem/stem.hpp>

#include <doctest/doctest.h>

#include <cstdlib>

#include <boost/asio/io_context.hpp>

using namespace std::chrono_literals;
using stem_test::awaitable;
namespace asio = boost::asio;

namespace {

using val_args = stem_test::num_args;

struct maybe_fails : stem::task_definition<val_args, int> {
    static constexpr std::string_view name = "test.maybe_fails";
    static constexpr stem::task_options options{.max_retries = 0};
    awaitable<int> operator()(stem::task_context&, val_args a) {
        if (a.x < 0) throw std::invalid_argument("negative");
        co_return a.x;
    }
};

stem::app_options opts() { return stem_test::app_options(1); }

}  // namespace

TEST_CASE("observe.signals: publish, task and worker signals fire in the documented order") {
    asio::io_context io;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{maybe_fails{}}, opts()};
    std::vector<std::string> log;
    auto& s = app.signals();
    s.before_task_publish.connect([&](const stem::publish_event&) { log.push_back("before_publish"); });
    s.after_task_publish.connect([&](const stem::publish_event&) { log.push_back("after_publish"); });
    s.worker_init.connect([&](const stem::worker_event&) { log.push_back("worker_init"); });
    s.worker_ready.connect([&](const stem::worker_event&) { log.push_back("worker_ready"); });
    s.task_received.connect([&](const stem::task_event&) { log.push_back("received"); });
    s.task_prerun.connect([&](const stem::task_event& e) { log.push_back(e.context ? "prerun+ctx" : "prerun"); });
    s.task_succeeded.connect([&](const stem::task_event& e) { log.push_back(e.status ? "succeeded+status" : "succeeded"); });
    s.task_failed.connect([&](const stem::task_event& e) { log.push_back(e.error ? "failed+error" : "failed"); });
    s.task_postrun.connect([&](const stem::task_event&) { log.push_back("postrun"); });
    s.worker_stopping.connect([&](const stem::worker_event&) { log.push_back("worker_stopping"); });
    s.worker_shutdown.connect([&](const stem::worker_event&) { log.push_back("worker_shutdown"); });
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        val_args good{1}, bad{-1};
        auto h1 = co_await app.enqueue<maybe_fails>(good);
        auto r1 = co_await h1.wait(5s);
        CHECK(r1.succeeded());
        auto h2 = co_await app.enqueue<maybe_fails>(bad);
        auto r2 = co_await h2.wait(5s);
        CHECK(r2.failed());
        CHECK(r2.error->type == "std::invalid_argument");
        co_await app.shutdown();
    });
    CHECK(log == std::vector<std::string>{"worker_init", "worker_ready",
                                          "before_publish", "after_publish", "received", "prerun+ctx", "succeeded+status", "postrun",
                                          "before_publish", "after_publish", "received", "prerun+ctx", "failed+error", "postrun",
                                          "worker_stopping", "worker_shutdown"});
}

TEST_CASE("observe.signals: a lone task_postrun listener sees the full final status") {
    // Without listeners the worker moves the final status into the backend; with one, the
    // listener must still get it whole.
    asio::io_context io;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{maybe_fails{}}, opts()};
    std::vector<stem::task_status> seen;
    app.signals().task_postrun.connect([&](const stem::task_event& e) {
        if (e.status) seen.push_back(*e.status);
    });
    app.start();
    std::string id;
    stem_test::run(io, [&]() -> awaitable<void> {
        val_args a{7};
        auto h = co_await app.enqueue<maybe_fails>(a);
        id = h.id();
        CHECK((co_await h.wait(5s)).succeeded());
        co_await app.shutdown();
    });
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].id == id);
    CHECK(seen[0].state == stem::task_state::succeeded);
    CHECK(seen[0].name == "test.maybe_fails");
    CHECK(seen[0].result == std::optional<std::string>{"7"});
}

TEST_CASE("observe.signals: a throwing listener is reported and the others still run") {
    asio::io_context io;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{maybe_fails{}}, opts()};
    auto& s = app.signals();
    std::vector<std::string> failures;
    s.signal_dispatch_failed.connect([&](const stem::dispatch_failure& f) {
        failures.push_back(std::string(f.signal) + ": " + f.message);
    });
    int after = 0;
    s.task_prerun.connect([](const stem::task_event&) { throw std::runtime_error("listener bug"); }, 10);
    s.task_prerun.connect([&](const stem::task_event&) { ++after; }, 0);
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        val_args a{5};
        auto h = co_await app.enqueue<maybe_fails>(a);
        auto r = co_await h.wait(5s);
        CHECK(r.succeeded());  // the worker was not disturbed
        co_await app.shutdown();
    });
    CHECK(after == 1);
    CHECK(failures == std::vector<std::string>{"task-prerun: listener bug"});
}

TEST_CASE("observe.signals: priority order, cancel, disconnect") {
    stem::signals s;
    std::vector<int> order;
    stem::envelope env;
    s.before_task_publish.connect([&](const stem::publish_event&) { order.push_back(1); }, 1);
    auto c5 = s.before_task_publish.connect([&](const stem::publish_event&) { order.push_back(5); }, 5);
    s.before_task_publish.connect([&](const stem::publish_event&, stem::signal_context& ctx) {
        order.push_back(3);
        if (env.name == "stop") ctx.cancel();
    }, 3);
    s.before_task_publish.emit({env});
    CHECK(order == std::vector<int>{5, 3, 1});
    order.clear();
    env.name = "stop";
    s.before_task_publish.emit({env});
    CHECK(order == std::vector<int>{5, 3});
    order.clear();
    c5.disconnect();
    env.name = "go";
    s.before_task_publish.emit({env});
    CHECK(order == std::vector<int>{3, 1});
}

TEST_CASE("observe.signals: STEM_SIGNALS_DISABLED and STEM_SIGNALS_ENABLED") {
    stem::signals s;
    int prerun = 0, postrun = 0;
    stem::envelope env;
    stem::worker_info w;
    s.task_prerun.connect([&](const stem::task_event&) { ++prerun; });
    s.task_postrun.connect([&](const stem::task_event&) { ++postrun; });
    ::setenv("STEM_SIGNALS_DISABLED", "worker-heartbeat, task-prerun", 1);
    s.configure_from_env();
    s.task_prerun.emit({env, w});
    s.task_postrun.emit({env, w});
    CHECK(prerun == 0);
    CHECK(postrun == 1);
    ::setenv("STEM_SIGNALS_ENABLED", "false", 1);
    s.configure_from_env();
    s.task_postrun.emit({env, w});
    CHECK(postrun == 1);
    ::unsetenv("STEM_SIGNALS_ENABLED");
    ::unsetenv("STEM_SIGNALS_DISABLED");
    s.configure_from_env();
    s.task_prerun.emit({env, w});
    CHECK(prerun == 1);
}
