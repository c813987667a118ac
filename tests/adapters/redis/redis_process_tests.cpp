// The Redis adapters across processes: a producer and two worker processes sharing one
// Redis, a worker process killed mid-task, and redis-server restarted in the middle of a run.
#include "adapters/redis/redis_support.hpp"
#include "support/fault_kit.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <map>
#include <set>

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
    pid_t child = stem_test::fork_child();
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

/// Adapter objects on one namespace, for the fault kit. Entries a read took just before the
/// server went away (the reply lost with the connection) wait for the sweep, which runs and
/// looks this far back once per default visibility timeout: 2 s, to fit the test's waits.
struct redis_store {
    static stem::redis_broker broker(const std::string& ns) {
        auto o = broker_opts(ns);
        o.default_visibility_timeout = std::chrono::seconds(2);
        return stem::redis_broker{o};
    }
    static stem::redis_backend backend(const std::string& ns) { return stem::redis_backend{backend_opts(ns)}; }
};

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
    fault_kit::killed_worker_task_runs_again<redis_store>(fresh_namespace());
}

// Skipped by default (ctest runs it alone, with --no-skip: see tests/CMakeLists.txt).
TEST_CASE("adapters.redis: the server restarts in the middle of a run: every task completes" * doctest::skip()) {
    const char* restart = std::getenv("STEM_TEST_REDIS_RESTART");
    REQUIRE_MESSAGE(restart, "STEM_TEST_REDIS_RESTART is not set: run scripts/test");
    fault_kit::server_restart_every_task_completes<redis_store>(fresh_namespace(), restart);
}
