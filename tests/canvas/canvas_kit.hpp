// The canvas kit: chains, groups, chords and links, run on every adapter through
// STEM_CANVAS_TESTS(fixture, label).
//
// A fixture F provides:
//   static std::string store();                 // a fresh, empty store (file, namespace)
//   static auto broker(const std::string& s);   // a broker on store s
//   static auto backend(const std::string& s);  // a result backend on store s
//   static constexpr bool processes;            // s can be opened from another process
#pragma once

#include "support/async.hpp"
#include "support/child_process.hpp"
#include "support/runtime.hpp"
#include "support/temp_dir.hpp"

#include <stem/stem.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>

#include <boost/asio/io_context.hpp>

namespace canvas_kit {

using namespace std::chrono_literals;
using stem_test::awaitable;

struct add_one : stem::task_definition<int, int, add_one> {
    static constexpr std::string_view name = "canvas.add_one";
    awaitable<int> operator()(stem::task_context&, int x) { co_return x + 1; }
};
struct twice : stem::task_definition<int, int, twice> {
    static constexpr std::string_view name = "canvas.twice";
    awaitable<int> operator()(stem::task_context&, int x) { co_return x * 2; }
};
struct sum : stem::task_definition<std::vector<int>, long, sum> {
    static constexpr std::string_view name = "canvas.sum";
    awaitable<long> operator()(stem::task_context&, std::vector<int> xs) {
        co_return std::accumulate(xs.begin(), xs.end(), 0L);
    }
};
/// Fails for good (no retry) when given 13.
struct unlucky : stem::task_definition<int, int, unlucky> {
    static constexpr std::string_view name = "canvas.unlucky";
    awaitable<int> operator()(stem::task_context&, int x) {
        if (x == 13) throw stem::task_failure("13 is unlucky", "unlucky");
        co_return x;
    }
};
/// What a link_error continuation receives.
struct on_failure : stem::task_definition<stem::failed_task, std::string, on_failure> {
    static constexpr std::string_view name = "canvas.on_failure";
    awaitable<std::string> operator()(stem::task_context&, stem::failed_task f) {
        co_return f.task_name + " " + f.error_type + ": " + f.message;
    }
};
/// Sleeps a little, then returns its process id (for the two-process chord).
struct where : stem::task_definition<int, long, where> {
    static constexpr std::string_view name = "canvas.where";
    awaitable<long> operator()(stem::task_context&, int ms) {
        co_await stem_test::elapse(std::chrono::milliseconds(ms));
        co_return long(::getpid());
    }
};
/// Takes `ms`, renewing a 1 s lease: the share of a killed worker comes back within a second.
struct slow_where : stem::task_definition<int, long, slow_where> {
    static constexpr std::string_view name = "canvas.slow_where";
    static constexpr stem::task_options options{.visibility_timeout = std::chrono::milliseconds(1000)};
    awaitable<long> operator()(stem::task_context& ctx, int ms) {
        for (int waited = 0; waited < ms; waited += 100) {
            co_await stem_test::elapse(100ms);
            co_await ctx.extend_lease(1000ms);
        }
        co_return long(::getpid());
    }
};
/// A chord callback that appends one line per run to $STEM_TEST_CANVAS_LOG.
struct tally : stem::task_definition<std::vector<long>, std::size_t, tally> {
    static constexpr std::string_view name = "canvas.tally";
    awaitable<std::size_t> operator()(stem::task_context&, std::vector<long> pids) {
        if (const char* log = std::getenv("STEM_TEST_CANVAS_LOG")) {
            int fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
            auto line = std::to_string(::getpid()) + "\n";
            if (fd >= 0) {
                (void)!::write(fd, line.data(), line.size());
                ::close(fd);
            }
        }
        co_return std::set<long>(pids.begin(), pids.end()).size();
    }
};

inline auto all_tasks() { return stem::tasks{add_one{}, twice{}, sum{}, unlucky{}, on_failure{}, where{}, slow_where{}, tally{}}; }

/// Runs `body(app, canvas)` with a started app on a fresh store of F.
template <class F, class Body>
void with_app(Body body) {
    auto store = F::store();
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, F::broker(store), F::backend(store), all_tasks(), stem_test::app_options(8)};
        app.start();
        stem::canvas cv{app};
        std::exception_ptr failed;
        try {
            co_await body(app, cv);
        } catch (...) {
            failed = std::current_exception();
        }
        co_await app.shutdown();
        if (failed) std::rethrow_exception(failed);
    }, 60s);
}

template <class F>
void chain_passes_results() {
    with_app<F>([](auto&, auto& cv) -> awaitable<void> {
        auto h = co_await cv.chain(add_one::sig(1), twice::sig(), add_one::sig(), stem::sig<twice>());
        CHECK(h.ids().size() == 4);
        auto r = co_await h.wait(20s);
        REQUIRE(r.succeeded());
        CHECK(*r.value == ((1 + 1) * 2 + 1) * 2);
        CHECK(r.id == h.ids().back());
        // Untyped: a bound step ignores the previous result.
        std::vector<stem::signature> steps;
        steps.emplace_back("canvas.add_one", boost::json::value(5));
        steps.emplace_back("canvas.twice");
        steps.emplace_back("canvas.add_one", boost::json::value(100));
        auto u = co_await cv.chain(steps);
        auto ur = co_await u.wait(20s);
        REQUIRE(ur.succeeded());
        CHECK(*ur.value == boost::json::value(101));
    });
}

template <class F>
void chain_stops_at_failed_step() {
    with_app<F>([](auto& app, auto& cv) -> awaitable<void> {
        auto h = co_await cv.chain(add_one::sig(12), unlucky::sig(), twice::sig());
        auto r = co_await h.wait(20s);
        CHECK_FALSE(r.succeeded());
        CHECK_FALSE(r.timed_out);
        REQUIRE(r.failure);
        CHECK(r.failure->index == 1);
        CHECK(r.failure->task_name == "canvas.unlucky");
        CHECK(r.failure->task_id == h.ids()[1]);
        CHECK(r.failure->error.message == "13 is unlucky");
        // The step after it never ran.
        auto never = co_await app.client().handle(h.ids()[2]).get();
        CHECK_FALSE(never.state);
        // An untyped chain must start with arguments.
        std::vector<stem::signature> bad;
        bad.emplace_back("canvas.twice");
        bool refused = false;
        try {
            co_await cv.chain(bad);
        } catch (const stem::error& e) {
            refused = e.condition() == stem::errc::invalid_argument;
        }
        CHECK(refused);
    });
}

template <class F>
void group_results_in_order_and_as_they_finish() {
    with_app<F>([](auto&, auto& cv) -> awaitable<void> {
        std::vector<stem::typed_signature<add_one>> sigs;
        for (int i = 0; i < 20; ++i) sigs.push_back(add_one::sig(i));
        auto g = co_await cv.group(sigs);
        CHECK(g.size() == 20);
        auto r = co_await g.wait(20s);
        REQUIRE(r.succeeded());
        std::vector<int> expected(20);
        std::iota(expected.begin(), expected.end(), 1);
        CHECK(*r.value == expected);

        auto s = g.stream();
        std::set<std::size_t> seen;
        while (auto item = co_await s.next(20s)) {
            CHECK(item->result.succeeded());
            CHECK(*item->result.value == int(item->index) + 1);
            CHECK(seen.insert(item->index).second);
        }
        CHECK_FALSE(s.timed_out());
        CHECK(seen.size() == 20);

        // One type per signature: a tuple.
        auto t = co_await cv.group(add_one::sig(1), twice::sig(21), stem::signature("canvas.add_one", boost::json::value(9)));
        auto tr = co_await t.wait(20s);
        REQUIRE(tr.succeeded());
        CHECK(std::get<0>(*tr.value) == 2);
        CHECK(std::get<1>(*tr.value) == 42);
        CHECK(std::get<2>(*tr.value) == boost::json::value(10));
    });
}

template <class F>
void group_names_failed_member() {
    with_app<F>([](auto&, auto& cv) -> awaitable<void> {
        auto g = co_await cv.group(unlucky::sig(1), unlucky::sig(13), unlucky::sig(3));
        auto r = co_await g.wait(20s);
        CHECK_FALSE(r.succeeded());
        REQUIRE(r.failure);
        CHECK(r.failure->index == 1);
        CHECK(r.failure->task_id == g.ids()[1]);
        CHECK(r.failure->error.type == "unlucky");
    });
}

template <class F>
void chord_callback_gets_results_in_order() {
    with_app<F>([](auto&, auto& cv) -> awaitable<void> {
        std::vector<stem::typed_signature<add_one>> header;
        for (int i = 0; i < 30; ++i) header.push_back(add_one::sig(i));
        auto c = co_await cv.chord(header, sum::sig());
        CHECK(c.ids().size() == 30);
        auto r = co_await c.wait(30s);
        INFO("timed out: ", r.timed_out, "; failure: ", r.failure ? r.failure->error.type + ": " + r.failure->error.message : std::string("none"));
        REQUIRE(r.succeeded());
        CHECK(*r.value == 30L * 31 / 2);
        // An empty header calls back at once, with no results.
        std::vector<stem::typed_signature<add_one>> none;
        auto e = co_await cv.chord(none, sum::sig());
        auto er = co_await e.wait(20s);
        REQUIRE(er.succeeded());
        CHECK(*er.value == 0);
    });
}

template <class F>
void chord_failed_branch_skips_callback() {
    with_app<F>([](auto& app, auto& cv) -> awaitable<void> {
        std::vector<stem::typed_signature<unlucky>> header;
        for (int i = 10; i < 16; ++i) header.push_back(unlucky::sig(i));
        std::vector<stem::signature> untyped(header.begin(), header.end());
        auto c = co_await cv.chord(untyped, stem::signature("canvas.tally"));
        auto r = co_await c.wait(20s);
        CHECK_FALSE(r.succeeded());
        REQUIRE(r.failure);
        CHECK(r.failure->index == 3);  // unlucky(13)
        CHECK(r.failure->task_id == c.ids()[3]);
        CHECK(r.failure->task_name == "canvas.unlucky");
        CHECK(r.failure->error.type == "chord_branch_failed");
        CHECK(r.failure->error.message.find("13 is unlucky") != std::string::npos);
        // The other branches finish; the callback is never enqueued.
        std::optional<stem::group_record> rec;
        for (int i = 0; i < 200 && !(rec && rec->completed() == 6); ++i) {
            co_await stem_test::elapse(50ms);
            rec = co_await app.get_backend().get_group(c.group_id());
        }
        REQUIRE(rec);
        CHECK(rec->completed() == 6);
        CHECK(rec->chord_claimed);
        co_await stem_test::elapse(200ms);
        auto cb = co_await app.client().handle(c.id()).get();
        CHECK(cb.failed());
        CHECK(cb.attempt == 0);
    });
}

template <class F>
void links_run_after_success_and_failure() {
    with_app<F>([](auto& app, auto& cv) -> awaitable<void> {
        stem::enqueue_options next;
        next.task_id = stem::make_task_id();
        auto ok = add_one::sig(4);
        ok.link(twice::sig(next));
        auto h = co_await cv.enqueue(ok);
        auto first = co_await h.wait(20s);
        CHECK(first.value == 5);
        auto linked = co_await app.client().template handle<int>(*next.task_id).wait(20s);
        REQUIRE(linked.succeeded());
        CHECK(*linked.value == 10);

        stem::enqueue_options report;
        report.task_id = stem::make_task_id();
        stem::enqueue_options o;
        o.link_error.push_back(on_failure::sig(report));
        o.link.push_back(twice::sig());  // not run: the task fails
        int thirteen = 13;
        auto bad = co_await app.template enqueue<unlucky>(thirteen, o);
        auto failed = co_await bad.wait(20s);
        CHECK(failed.failed());
        auto reported = co_await app.client().template handle<std::string>(*report.task_id).wait(20s);
        REQUIRE(reported.succeeded());
        CHECK(*reported.value == "canvas.unlucky unlucky: 13 is unlucky");
    });
}

/// Forks a worker process on store `s` (it exits on SIGTERM).
template <class F>
pid_t fork_worker(const std::string& s) {
    pid_t child = stem_test::fork_child();
    if (child == 0) {
        try {
            boost::asio::io_context io;
            auto opts = stem_test::app_options(4);
            opts.worker.prefetch_multiplier = 1;  // leave work for the other process
            opts.worker.install_signal_handlers = true;
            stem::app app{io, F::broker(s), F::backend(s), all_tasks(), opts};
            app.start();
            io.run();
        } catch (const std::exception& e) {
            fmt::print(stderr, "canvas kit: worker process {} stopped: {}\n", ::getpid(), e.what());
            ::_exit(1);
        }
        ::_exit(0);
    }
    return child;
}

/// A chord whose children finish concurrently in two worker processes: the callback is
/// dispatched (and runs) exactly once, with every result.
template <class F>
void chord_across_two_worker_processes() {
    auto s = F::store();
    auto log = stem_test::scratch_file("chord-log");
    ::setenv("STEM_TEST_CANVAS_LOG", log.c_str(), 1);
    pid_t w1 = fork_worker<F>(s);
    pid_t w2 = fork_worker<F>(s);
    REQUIRE(w1 > 0);
    REQUIRE(w2 > 0);
    stem_test::run([&]() -> awaitable<void> {
        auto opts = stem_test::app_options(1);
        stem::app producer{co_await boost::asio::this_coro::executor, F::broker(s), F::backend(s), all_tasks(), opts};
        stem::canvas cv{producer};
        // First, until both worker processes are consuming (a group's results name them).
        std::set<long> consuming;
        for (int attempt = 0; attempt < 40 && consuming.size() < 2; ++attempt) {
            std::vector<stem::typed_signature<where>> probe;
            for (int i = 0; i < 16; ++i) probe.push_back(where::sig(30));
            auto g = co_await cv.group(probe);
            auto pr = co_await g.wait(20s);
            REQUIRE(pr.succeeded());
            consuming.insert(pr.value->begin(), pr.value->end());
        }
        REQUIRE(consuming.size() == 2);
        std::set<std::size_t> spread;
        for (int round = 0; round < 3; ++round) {
            std::vector<stem::typed_signature<where>> header;
            for (int i = 0; i < 60; ++i) header.push_back(where::sig(20 + i % 3 * 10));
            auto c = co_await cv.chord(header, tally::sig());
            auto r = co_await c.wait(40s);
            REQUIRE(r.succeeded());
            spread.insert(*r.value);
        }
        CHECK(spread.count(2) == 1);  // in some round, children finished in both processes
    }, 90s);
    for (pid_t w : {w1, w2}) {
        ::kill(w, SIGTERM);
        int status = 0;
        ::waitpid(w, &status, 0);
    }
    ::unsetenv("STEM_TEST_CANVAS_LOG");
    std::ifstream in(log);
    int lines = 0;
    for (std::string line; std::getline(in, line);) ++lines;
    CHECK(lines == 3);  // one callback run per chord
}

/// A worker process killed (SIGKILL) while it holds chord children: the other worker runs
/// them after their leases, and the callback still runs exactly once, with every result.
template <class F>
void chord_survives_a_killed_worker() {
    auto s = F::store();
    auto log = stem_test::scratch_file("chord-kill-log");
    ::setenv("STEM_TEST_CANVAS_LOG", log.c_str(), 1);
    pid_t w1 = fork_worker<F>(s);
    pid_t w2 = fork_worker<F>(s);
    REQUIRE(w1 > 0);
    REQUIRE(w2 > 0);
    bool killed = false;
    stem_test::run([&]() -> awaitable<void> {
        stem::app producer{co_await boost::asio::this_coro::executor, F::broker(s), F::backend(s), all_tasks(), stem_test::app_options(1)};
        stem::canvas cv{producer};
        std::vector<stem::typed_signature<slow_where>> header;
        for (int i = 0; i < 24; ++i) header.push_back(slow_where::sig(300));
        auto c = co_await cv.chord(header, tally::sig());
        // Kill the first worker once some children have finished (it holds others then).
        for (int i = 0; i < 200 && !killed; ++i) {
            auto rec = co_await producer.get_backend().get_group(c.group_id());
            if (rec && rec->completed() >= 4) {
                ::kill(w1, SIGKILL);
                killed = true;
            } else {
                co_await stem_test::elapse(20ms);
            }
        }
        auto r = co_await c.wait(40s);
        REQUIRE(r.succeeded());
        CHECK(*r.value >= 1);
        auto rec = co_await producer.get_backend().get_group(c.group_id());
        REQUIRE(rec);
        CHECK(rec->completed() == 24);
    }, 60s);
    CHECK(killed);
    int status = 0;
    ::waitpid(w1, &status, 0);
    ::kill(w2, SIGTERM);
    ::waitpid(w2, &status, 0);
    ::unsetenv("STEM_TEST_CANVAS_LOG");
    std::ifstream in(log);
    int lines = 0;
    for (std::string line; std::getline(in, line);) ++lines;
    CHECK(lines == 1);
}

}  // namespace canvas_kit

#define STEM_CANVAS_TESTS_(F, label)                                                                                          \
    TEST_CASE("canvas[" label "]: a chain passes each result to the next step") { canvas_kit::chain_passes_results<F>(); }     \
    TEST_CASE("canvas[" label "]: a failing step stops the chain, which names it") { canvas_kit::chain_stops_at_failed_step<F>(); } \
    TEST_CASE("canvas[" label "]: a group gives results in order, and as they finish") {                                      \
        canvas_kit::group_results_in_order_and_as_they_finish<F>();                                                           \
    }                                                                                                                          \
    TEST_CASE("canvas[" label "]: a group names its failed member") { canvas_kit::group_names_failed_member<F>(); }          \
    TEST_CASE("canvas[" label "]: a chord calls back once with the results in order") {                                       \
        canvas_kit::chord_callback_gets_results_in_order<F>();                                                                \
    }                                                                                                                          \
    TEST_CASE("canvas[" label "]: a failed branch skips the callback and fails the chord, naming the branch") {               \
        canvas_kit::chord_failed_branch_skips_callback<F>();                                                                  \
    }                                                                                                                          \
    TEST_CASE("canvas[" label "]: link and link_error run after success and failure") {                                        \
        canvas_kit::links_run_after_success_and_failure<F>();                                                                  \
    }

#define STEM_CANVAS_TESTS(F, label)                                                                                             \
    STEM_CANVAS_TESTS_(F, label)                                                                                               \
    TEST_CASE("canvas[" label "]: a chord whose children finish in two worker processes calls back exactly once") {           \
        canvas_kit::chord_across_two_worker_processes<F>();                                                                    \
    }                                                                                                                          \
    TEST_CASE("canvas[" label "]: a worker killed in the middle of a chord: the callback still runs exactly once") {          \
        canvas_kit::chord_survives_a_killed_worker<F>();                                                                       \
    }
