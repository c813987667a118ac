// The Redis adapters across processes: a producer and two worker processes sharing one
// Redis, a worker process killed mid-task, and redis-server restarted in the middle of a run.
#include "adapters/redis/redis_support.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
using namespace std::string_literals;
using stem_test::awaitable;
using namespace redis_test;

namespace {


/// Counts its runs in Redis (HINCRBY on "<ns>:runs") and returns the pid that ran it.
struct redis_counted : stem::task_definition<stem_test::num_args, long> {
    static constexpr std::string_view name = "redis.counted";
    static inline std::string runs_key;  // set before workers start
    awaitable<long> operator()(stem::task_context& ctx, stem_test::num_args) {
        static stem::redis::client counter(stem::redis::config::from_url(redis_url()));
        stem::redis::request r;
        r.push("HINCRBY", runs_key, ctx.id(), 1);
        co_await counter.exec(std::move(r));
        co_return long(::getpid());
    }
};

/// Forks a worker process running `Task` on namespace `ns` until it is signalled.
template <class Task>
pid_t fork_worker(const std::string& ns, std::size_t concurrency) {
    pid_t child = ::fork();
    if (child == 0) {
        try {
            boost::asio::io_context io;
            auto opts = stem_test::app_options(concurrency);
            opts.worker.install_signal_handlers = true;
            stem::app app{io, stem::redis_broker{broker_opts(ns)}, stem::redis_backend{backend_opts(ns)}, stem::tasks{Task{}}, opts};
            app.start();
            io.run();
        } catch (...) {
        }
        ::_exit(0);
    }
    return child;
}

void stop(pid_t child, int sig) {
    ::kill(child, sig);
    int status = 0;
    ::waitpid(child, &status, 0);
}

}  // namespace

TEST_CASE("adapters.redis: a producer and two worker processes: every task runs once and none is lost") {
    auto ns = fresh_namespace();
    redis_counted::runs_key = "{" + ns + "}:runs";
    pid_t w1 = fork_worker<redis_counted>(ns, 8);
    pid_t w2 = fork_worker<redis_counted>(ns, 8);
    REQUIRE(w1 > 0);
    REQUIRE(w2 > 0);
    constexpr int tasks = 400;
    std::set<long> ran_in;
    stem_test::run([&]() -> awaitable<void> {
        stem::app producer{co_await boost::asio::this_coro::executor, stem::redis_broker{broker_opts(ns)},
                           stem::redis_backend{backend_opts(ns)}, stem::tasks{redis_counted{}}, stem_test::app_options(1)};
        std::vector<stem::task_handle<long>> handles;
        for (int i = 0; i < tasks; ++i) {
            stem_test::num_args a{i};
            handles.push_back(co_await producer.enqueue<redis_counted>(a));
        }
        int done = 0;
        for (auto& h : handles) {
            auto r = co_await h.wait(30s);
            if (r.succeeded()) {
                ++done;
                ran_in.insert(*r.value);
            }
        }
        CHECK(done == tasks);
        stem::redis::client raw(stem::redis::config::from_url(redis_url()));
        stem::redis::request q;
        q.push("HVALS", redis_counted::runs_key);
        auto rs = co_await raw.exec(std::move(q));
        auto& vals = *rs.at(0);
        CHECK(stem::redis::size(vals) == std::size_t(tasks));
        int more_than_once = 0;
        for (std::size_t i = 0; i < stem::redis::size(vals); ++i) more_than_once += stem::redis::integer(stem::redis::at(vals, i)) != 1;
        CHECK(more_than_once == 0);
        auto stats = co_await stem_test::settled_stats(producer.get_broker(), "default"s);
        CHECK(stats.pending + stats.inflight + stats.delayed + stats.dead == 0);
    }, 60s);
    stop(w1, SIGTERM);
    stop(w2, SIGTERM);
    CHECK(ran_in.size() == 2);  // both workers took part
    CHECK(ran_in.count(long(w1)) == 1);
    CHECK(ran_in.count(long(w2)) == 1);
}

TEST_CASE("adapters.redis: a worker process killed mid-task: the task runs again after its lease and completes") {
    auto ns = fresh_namespace();
    std::string id;
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, stem::redis_broker{broker_opts(ns)},
                      stem::redis_backend{backend_opts(ns)}, stem::tasks{stem_test::slow_in_child{}}, stem_test::app_options(1)};
        stem_test::num_args long_run{30'000};
        auto h = co_await app.enqueue<stem_test::slow_in_child>(long_run);
        id = h.id();
    });
    pid_t child = fork_worker<stem_test::slow_in_child>(ns, 1);
    REQUIRE(child > 0);
    stem_test::run([&]() -> awaitable<void> {
        stem::redis_backend results{backend_opts(ns)};
        std::optional<stem::task_status> st;
        for (int i = 0; i < 200 && !(st && st->state == stem::task_state::running); ++i) {
            co_await stem_test::elapse(50ms);
            st = co_await results.get(id);
        }
        REQUIRE(st);
        REQUIRE(st->state == stem::task_state::running);
        stop(child, SIGKILL);

        stem::app app{co_await boost::asio::this_coro::executor, stem::redis_broker{broker_opts(ns)}, results,
                      stem::tasks{stem_test::slow_in_child{}}, stem_test::app_options(1)};
        auto started = std::chrono::steady_clock::now();
        app.start();
        auto done = co_await results.wait(id, 10s);
        REQUIRE(done);
        CHECK(done->state == stem::task_state::succeeded);
        CHECK(done->result == std::to_string(::getpid()));
        CHECK(std::chrono::steady_clock::now() - started < 5s);
        co_await app.shutdown();
    }, 30s);
}

// Skipped by default (ctest runs it alone, with --no-skip: see tests/CMakeLists.txt).
TEST_CASE("adapters.redis: the server restarts in the middle of a run: every task completes" * doctest::skip()) {
    const char* restart = std::getenv("STEM_TEST_REDIS_RESTART");
    REQUIRE_MESSAGE(restart, "STEM_TEST_REDIS_RESTART is not set: run scripts/test");
    auto ns = fresh_namespace();
    constexpr int tasks = 200;
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, stem::redis_broker{broker_opts(ns)},
                      stem::redis_backend{backend_opts(ns)}, stem::tasks{stem_test::sleepy{}}, stem_test::app_options(4)};
        std::vector<stem_test::num_args> batch(tasks, stem_test::num_args{20});
        auto handles = co_await app.enqueue_batch<stem_test::sleepy>(batch);
        app.start();
        co_await stem_test::elapse(300ms);
        // Restart on another thread: the worker keeps running into the outage.
        int restart_rc = -1;
        struct joined {
            std::thread t;
            ~joined() {
                if (t.joinable()) t.join();  // also when a wait throws
            }
        } restarter{std::thread([&] { restart_rc = std::system(restart); })};
        std::size_t done = 0;
        for (auto& h : handles) {
            auto r = co_await h.wait(60s);
            done += r.succeeded();
        }
        restarter.t.join();
        CHECK(restart_rc == 0);
        CHECK(done == tasks);
        auto stats = co_await stem_test::settled_stats(app.get_broker(), "default"s);
        CHECK(stats.pending + stats.inflight + stats.delayed + stats.dead == 0);
        co_await app.shutdown();
    }, 120s);
}
