// The worker and producer on the memory adapters: results, retries, dead letters,
// time limits, pool execution, context helpers, shutdown modes, heartbeats, deferred
// `running` records.
#include "support/async.hpp"
#include "support/runtime.hpp"

#include <stem/stem.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

using namespace std::chrono_literals;
using stem_test::awaitable;
using stem_test::elapse;
namespace asio = boost::asio;

namespace {

using stem_test::num_args;

struct sum_args {
    std::vector<int> values;
    std::optional<std::string> label;
};
struct sum_result {
    long total = 0;
    std::string label;
};
BOOST_DESCRIBE_STRUCT(sum_args, (), (values, label))
BOOST_DESCRIBE_STRUCT(sum_result, (), (total, label))

stem::app_options test_options() { return stem_test::app_options(4); }

constexpr stem::retry_policy fast_retry{.backoff = false, .default_delay = 20ms, .backoff_max = 1s, .jitter = false};

struct sum_task : stem::task_definition<sum_args, sum_result> {
    static constexpr std::string_view name = "test.sum";
    awaitable<sum_result> operator()(stem::task_context&, sum_args a) {
        sum_result r;
        for (int v : a.values) r.total += v;
        r.label = a.label.value_or("none");
        co_return r;
    }
};

/// Fails until it has been called `succeed_on` + 1 times.
struct flaky_task : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.flaky";
    static constexpr stem::task_options options{.max_retries = 3, .retry = fast_retry};
    std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
    int succeed_on = 2;
    awaitable<int> operator()(stem::task_context& ctx, num_args a) {
        ++*calls;
        if (ctx.attempt() < succeed_on) throw std::runtime_error("transient " + std::to_string(ctx.attempt()));
        co_return a.x * 10;
    }
};

struct always_fails : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.always_fails";
    static constexpr stem::task_options options{.max_retries = 2, .retry = fast_retry};
    awaitable<int> operator()(stem::task_context&, num_args) {
        throw std::runtime_error("downstream is down");
        co_return 0;
    }
};

struct rejects_input : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.rejects";
    static constexpr stem::task_options options{.max_retries = 5, .retry = fast_retry};
    std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
    awaitable<int> operator()(stem::task_context&, num_args a) {
        ++*calls;
        throw stem::task_failure("x must be positive, got " + std::to_string(a.x), "validation");
        co_return 0;
    }
};

template <class... Hs>
auto make_app(asio::io_context& io, stem::app_options o, Hs... hs) {
    return std::make_unique<stem::app<stem::memory_broker, stem::memory_backend, stem::tasks<Hs...>>>(
        io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks<Hs...>{std::move(hs)...}, std::move(o));
}

}  // namespace

TEST_CASE("runtime.worker: typed task returns its typed result and records the status") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sum_task{});
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        sum_args args{{1, 2, 39}, std::string("answer")};
        auto h = co_await app->enqueue<sum_task>(args);
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        CHECK(r.state_name() == "succeeded");
        CHECK(r.value->total == 42);
        CHECK(r.value->label == "answer");
        auto st = co_await app->get_backend().get(h.id());
        REQUIRE(st);
        CHECK(st->name == "test.sum");
        CHECK(st->worker_id == app->get_worker().info().id);
        CHECK(st->started_at.has_value());
        CHECK(st->finished_at.has_value());
        CHECK(st->progress == 100);
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: a failing task is retried and then succeeds, with no dead letter") {
    asio::io_context io;
    flaky_task flaky;
    auto calls = flaky.calls;
    auto app = make_app(io, test_options(), flaky);
    std::vector<int> retry_attempts;
    std::vector<stem::time_point> next_times;
    app->signals().task_retry.connect([&](const stem::task_event& e) {
        retry_attempts.push_back(e.env.attempt);
        REQUIRE(e.next_attempt_at);
        next_times.push_back(*e.next_attempt_at);
        REQUIRE(e.error);
        CHECK(e.error->message.find("transient") != std::string::npos);
    });
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        num_args args{4};
        auto h = co_await app->enqueue<flaky_task>(args);
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        CHECK(*r.value == 40);
        CHECK(r.attempt == 2);
        CHECK(*calls == 3);
        CHECK(retry_attempts == std::vector<int>{0, 1});
        auto dead = co_await app->get_broker().list_dead_letters("default", 10, 0);
        CHECK(dead.total == 0);
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: the last failed retry dead-letters the task with its reason") {
    asio::io_context io;
    auto app = make_app(io, test_options(), always_fails{});
    int failed_signals = 0;
    std::string failed_reason;
    app->signals().task_failed.connect([&](const stem::task_event& e) {
        ++failed_signals;
        failed_reason = std::string(e.reason);
    });
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        num_args args{1};
        auto h = co_await app->enqueue<always_fails>(args);
        auto r = co_await h.wait(5s);
        REQUIRE(r.failed());
        CHECK(r.attempt == 2);
        REQUIRE(r.error);
        CHECK(r.error->message == "downstream is down");
        CHECK(r.error->type == "std::runtime_error");
        auto dead = co_await app->get_broker().list_dead_letters("default", 10, 0);
        REQUIRE(dead.total == 1);
        CHECK(dead.items[0].env.id == h.id());
        CHECK(dead.items[0].env.attempt == 2);
        CHECK(dead.items[0].reason == "max-retries-exceeded: std::runtime_error: downstream is down");
        CHECK(failed_signals == 1);
        CHECK(failed_reason == dead.items[0].reason);
        auto stats = co_await app->get_broker().stats("default");
        CHECK(stats.pending == 0);
        CHECK(stats.delayed == 0);
        CHECK(stats.inflight == 0);
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: task_failure is not retried") {
    asio::io_context io;
    rejects_input task;
    auto calls = task.calls;
    auto app = make_app(io, test_options(), task);
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        num_args args{-3};
        auto h = co_await app->enqueue<rejects_input>(args);
        auto r = co_await h.wait(5s);
        REQUIRE(r.failed());
        CHECK(r.attempt == 0);
        CHECK(*calls == 1);
        CHECK(r.error->type == "validation");
        CHECK_FALSE(r.error->retryable);
        auto dead = co_await app->get_broker().list_dead_letters("default", 10, 0);
        REQUIRE(dead.total == 1);
        CHECK(dead.items[0].reason == "non-retryable: validation: x must be positive, got -3");
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: undecodable arguments are dead-lettered with the field path") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sum_task{});
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        auto bad = boost::json::parse(R"({"values":[1,2,"three"]})");
        auto h = co_await app->enqueue("test.sum", bad);
        auto r = co_await h.wait(5s);
        REQUIRE(r.failed());
        auto dead = co_await app->get_broker().list_dead_letters("default", 10, 0);
        REQUIRE(dead.total == 1);
        CHECK(dead.items[0].reason.find("decode-error") == 0);
        CHECK(dead.items[0].reason.find("args.values[2]: expected integer, got string") != std::string::npos);
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: an unknown task name is dead-lettered, and the worker keeps going") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sum_task{});
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        boost::json::value args = boost::json::object{};
        auto lost = co_await app->enqueue("test.nobody_handles_this", args);
        auto r = co_await lost.wait(5s);
        REQUIRE(r.failed());
        CHECK(r.error->type == "unknown_task");
        auto dead = co_await app->get_broker().list_dead_letters("default", 10, 0);
        REQUIRE(dead.total == 1);
        CHECK(dead.items[0].reason.find("unknown-task") == 0);
        sum_args ok{{1}, std::nullopt};
        auto h = co_await app->enqueue<sum_task>(ok);
        auto r2 = co_await h.wait(5s);
        CHECK(r2.succeeded());
        co_await app->shutdown();
    });
}

namespace {
struct counted : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.counted";
    std::shared_ptr<int> calls = std::make_shared<int>(0);
    awaitable<int> operator()(stem::task_context&, num_args) {
        ++*calls;
        co_return 1;
    }
};
}  // namespace

TEST_CASE("runtime.worker: an expired task is skipped and recorded cancelled") {
    asio::io_context io;
    counted task;
    auto calls = task.calls;
    auto app = make_app(io, test_options(), task);
    std::string revoked_reason;
    app->signals().task_revoked.connect([&](const stem::task_event& e) { revoked_reason = std::string(e.reason); });
    stem_test::run(io, [&]() -> awaitable<void> {
        stem::enqueue_options o;
        o.expires = 50ms;
        num_args args{1};
        auto h = co_await app->enqueue<counted>(args, o);
        co_await elapse(120ms);  // let it expire before any worker runs
        app->start();
        auto r = co_await h.wait(5s);
        REQUIRE(r.state == stem::task_state::cancelled);
        CHECK(r.error->type == "expired");
        CHECK(*calls == 0);
        CHECK(revoked_reason == "expired");
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: countdown delays the start") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sum_task{});
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        stem::enqueue_options o;
        o.countdown = 300ms;
        sum_args args{{5}, std::nullopt};
        auto t0 = stem::clock::now();
        auto h = co_await app->enqueue<sum_task>(args, o);
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        auto st = co_await app->get_backend().get(h.id());
        REQUIRE(st);
        CHECK(*st->started_at - t0 >= 300ms);
        co_await app->shutdown();
    });
}

namespace {
struct sleeps_forever : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.sleeps";
    static constexpr stem::task_options options{.max_retries = 0, .hard_time_limit = 150ms};
    awaitable<int> operator()(stem::task_context&, num_args) {
        asio::steady_timer t(co_await asio::this_coro::executor, 30s);
        co_await t.async_wait(asio::use_awaitable);
        co_return 1;
    }
};
struct slow_but_finishes : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.soft";
    static constexpr stem::task_options options{.soft_time_limit = 50ms};
    awaitable<int> operator()(stem::task_context& ctx, num_args) {
        co_await elapse(200ms);
        co_return ctx.soft_time_limit_exceeded() ? 1 : 0;
    }
};
}  // namespace

TEST_CASE("runtime.worker: the hard time limit cancels an inline coroutine") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sleeps_forever{}, slow_but_finishes{});
    int soft_signals = 0;
    app->signals().task_soft_time_limit.connect([&](const stem::task_event&) { ++soft_signals; });
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        num_args args{1};
        auto t0 = std::chrono::steady_clock::now();
        auto h = co_await app->enqueue<sleeps_forever>(args);
        auto r = co_await h.wait(10s);
        REQUIRE(r.failed());
        CHECK(r.error->type == "time_limit_exceeded");
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);

        auto soft = co_await app->enqueue<slow_but_finishes>(args);
        auto rs = co_await soft.wait(5s);
        REQUIRE(rs.succeeded());
        CHECK(*rs.value == 1);
        CHECK(soft_signals == 1);
        co_await app->shutdown();
    });
}

namespace {
struct crunch : stem::task_definition<num_args, std::string> {
    static constexpr std::string_view name = "test.crunch";
    static constexpr stem::task_options options{.max_retries = 0, .hard_time_limit = 200ms,
                                                .execution = stem::execution_mode::pool};
    awaitable<std::string> operator()(stem::task_context& ctx, num_args a) {
        std::ostringstream id;
        id << std::this_thread::get_id();
        if (a.x < 0) {
            for (;;) {  // CPU-bound loop with cooperative checkpoints
                ctx.checkpoint();
                std::this_thread::sleep_for(5ms);
            }
        }
        co_await ctx.progress(50);  // context calls work from the pool too
        co_return id.str();
    }
};
}  // namespace

TEST_CASE("runtime.worker: pool tasks run on another thread and stop at a checkpoint past the hard limit") {
    asio::io_context io;
    auto o = test_options();
    o.worker.pool_threads = 2;
    auto app = make_app(io, o, crunch{});
    int child_inits = 0;
    app->signals().worker_child_init.connect([&](const stem::worker_event&) { ++child_inits; });
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        std::ostringstream me;
        me << std::this_thread::get_id();
        num_args ok{1}, spin{-1};
        auto h = co_await app->enqueue<crunch>(ok);
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        CHECK(*r.value != me.str());
        auto h2 = co_await app->enqueue<crunch>(spin);
        auto r2 = co_await h2.wait(5s);
        REQUIRE(r2.failed());
        CHECK(r2.error->type == "time_limit_exceeded");
        CHECK(child_inits == 2);
        co_await app->shutdown();
    });
}

namespace {
struct child_task : stem::task_definition<num_args, std::string> {
    static constexpr std::string_view name = "test.child";
    awaitable<std::string> operator()(stem::task_context& ctx, num_args) {
        co_return ctx.request().parent_id + "|" + ctx.request().root_id;
    }
};
struct parent_task : stem::task_definition<num_args, std::string> {
    static constexpr std::string_view name = "test.parent";
    awaitable<std::string> operator()(stem::task_context& ctx, num_args a) {
        boost::json::object data;
        data["stage"] = "spawning";
        co_await ctx.progress(50, std::move(data));
        auto h = co_await ctx.enqueue<child_task>(a);
        co_return h.id();
    }
};
struct retries_itself : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.retries_itself";
    static constexpr stem::task_options options{.max_retries = 1};
    awaitable<int> operator()(stem::task_context& ctx, num_args) {
        if (ctx.attempt() == 0) ctx.retry(100ms);
        co_return ctx.attempt();
    }
};
}  // namespace

TEST_CASE("runtime.context: progress is recorded, follow-ups carry parent and root, retry(countdown) reschedules") {
    asio::io_context io;
    auto o = test_options();
    o.worker.track_started_after = 0ms;  // `running` as the handler starts
    auto app = make_app(io, std::move(o), parent_task{}, child_task{}, retries_itself{});
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        stem::enqueue_options o;
        o.task_id = "parent-1";
        auto watch = co_await app->get_backend().watch("parent-1");
        num_args args{1};
        auto h = co_await app->enqueue<parent_task>(args, o);
        CHECK(h.id() == "parent-1");
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        // The watch saw: running (started), running at 50% with data, succeeded.
        std::vector<stem::task_status> seen;
        while (auto st = co_await watch.next(200ms)) seen.push_back(*st);
        REQUIRE(seen.size() == 3);
        CHECK(seen[0].state == stem::task_state::running);
        CHECK(seen[1].progress == 50);
        CHECK(seen[1].progress_data.at("stage") == "spawning");
        CHECK(seen[2].state == stem::task_state::succeeded);

        auto child = app->client().handle<std::string>(*r.value);
        auto cr = co_await child.wait(5s);
        REQUIRE(cr.succeeded());
        CHECK(*cr.value == "parent-1|parent-1");

        auto t0 = stem::clock::now();
        auto self = co_await app->enqueue<retries_itself>(args);
        auto sr = co_await self.wait(5s);
        REQUIRE(sr.succeeded());
        CHECK(*sr.value == 1);
        CHECK(stem::clock::now() - t0 >= 100ms);
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.registry: untyped handlers, duplicate names refused, batch enqueue") {
    stem::tasks reg{sum_task{}};
    reg.add("plugin.echo", [](stem::task_context&, boost::json::value v) -> awaitable<boost::json::value> { co_return v; });
    CHECK_THROWS_AS(reg.add("plugin.echo", [](stem::task_context&, boost::json::value v) -> awaitable<boost::json::value> { co_return v; }),
                    stem::error);
    CHECK_THROWS_AS(reg.add("test.sum", [](stem::task_context&, boost::json::value v) -> awaitable<boost::json::value> { co_return v; }),
                    stem::error);
    CHECK(reg.names() == std::vector<std::string>{"plugin.echo", "test.sum"});

    asio::io_context io;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, std::move(reg), test_options()};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        auto payload = boost::json::parse(R"({"hello":[1,2,3]})");
        auto h = co_await app.enqueue("plugin.echo", payload);
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        CHECK(*r.value == payload);

        std::vector<sum_args> batch;
        for (int i = 0; i < 100; ++i) batch.push_back(sum_args{{i, 1}, std::nullopt});
        auto handles = co_await app.enqueue_batch<sum_task>(batch);
        REQUIRE(handles.size() == 100);
        for (int i = 0; i < 100; ++i) {
            auto ri = co_await handles[i].wait(5s);
            REQUIRE(ri.succeeded());
            CHECK(ri.value->total == i + 1);
        }
        co_await app.shutdown();
    });
}

TEST_CASE("runtime.producer: payload encoders transform arguments and results on the wire") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sum_task{});
    app->encoders().default_args_encoder = "base64";
    app->encoders().default_result_encoder = "base64";
    std::string wire_args;
    app->signals().before_task_publish.connect([&](const stem::publish_event& e) { wire_args = e.env.args; });
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        sum_args args{{2, 3}, std::string("b64")};
        auto h = co_await app->enqueue<sum_task>(args);
        CHECK(wire_args == stem::detail::base64_encode(stem::encode_json(args)));
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        CHECK(r.value->total == 5);
        auto st = co_await app->get_backend().get(h.id());
        CHECK(st->result_encoder == "base64");
        CHECK(*st->result == stem::detail::base64_encode(R"({"total":5,"label":"b64"})"));
        co_await app->shutdown();
    });
}

namespace {
struct gauge {
    int now = 0, peak = 0;
};
struct occupies : stem::task_definition<num_args> {
    static constexpr std::string_view name = "test.occupies";
    gauge* g;
    awaitable<void> operator()(stem::task_context&, num_args) {
        g->peak = std::max(g->peak, ++g->now);
        co_await elapse(40ms);
        --g->now;
    }
};
}  // namespace

TEST_CASE("runtime.worker: runs up to `concurrency` tasks at once") {
    asio::io_context io;
    gauge g;
    auto o = test_options();
    o.worker.concurrency = 3;
    auto app = make_app(io, o, occupies{{}, &g});
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        std::vector<num_args> batch(12);
        auto hs = co_await app->enqueue_batch<occupies>(batch);
        for (auto& h : hs) {
            auto r = co_await h.wait(5s);
            CHECK(r.succeeded());
        }
        CHECK(g.peak == 3);
        co_await app->shutdown();
    });
}

namespace {
struct long_with_heartbeats : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.long_hb";
    static constexpr stem::task_options options{.visibility_timeout = 200ms};
    std::shared_ptr<std::atomic<int>> runs = std::make_shared<std::atomic<int>>(0);
    awaitable<int> operator()(stem::task_context& ctx, num_args) {
        ++*runs;
        for (int i = 0; i < 6; ++i) {
            co_await elapse(100ms);
            CHECK(co_await ctx.heartbeat());
        }
        co_return 1;
    }
};
}  // namespace

TEST_CASE("runtime.worker: heartbeats keep a long task's lease and worker heartbeats reach the backend") {
    asio::io_context io;
    long_with_heartbeats task;
    auto runs = task.runs;
    auto o = test_options();
    auto app = make_app(io, o, task);
    int hb_signals = 0;
    app->signals().worker_heartbeat.connect([&](const stem::worker_event&) { ++hb_signals; });
    app->start();
    stem_test::run(io, [&]() -> awaitable<void> {
        num_args args{1};
        auto h = co_await app->enqueue<long_with_heartbeats>(args);
        auto r = co_await h.wait(5s);
        REQUIRE(r.succeeded());
        co_await elapse(300ms);  // past one more visibility timeout: no second run appears
        CHECK(*runs == 1);
        auto hbs = co_await app->get_backend().list_heartbeats();
        REQUIRE(hbs.size() == 1);
        CHECK(hbs[0].worker_id == app->get_worker().info().id);
        CHECK(hbs[0].queues == std::vector<std::string>{"default"});
        CHECK(hb_signals >= 2);
        co_await app->shutdown();
    });
}

TEST_CASE("runtime.worker: options from the environment, with clear errors for bad values") {
    ::setenv("STEM_WORKER_QUEUES", "emails, reports ,", 1);
    ::setenv("STEM_WORKER_BROADCASTS", "control", 1);
    ::setenv("STEM_PREFETCH_MULTIPLIER", "8", 1);
    ::setenv("STEM_WORKER_NAMESPACE", "staging", 1);
    auto o = stem::worker_options::from_env(stem::worker_options{});
    CHECK(o.queues == std::vector<std::string>{"emails", "reports"});
    CHECK(o.broadcasts == std::vector<std::string>{"control"});
    CHECK(o.prefetch_multiplier == 8);
    CHECK(o.namespace_ == "staging");
    ::setenv("STEM_PREFETCH_MULTIPLIER", "lots", 1);
    try {
        (void)stem::worker_options::from_env(stem::worker_options{});
        FAIL("a bad prefetch multiplier was accepted");
    } catch (const stem::error& e) {
        CHECK(std::string(e.what()).find("STEM_PREFETCH_MULTIPLIER: expected a positive whole number, got 'lots'") == 0);
    }
    ::unsetenv("STEM_WORKER_QUEUES");
    ::unsetenv("STEM_WORKER_BROADCASTS");
    ::unsetenv("STEM_PREFETCH_MULTIPLIER");
    ::unsetenv("STEM_WORKER_NAMESPACE");
    ::setenv("STEM_DEFAULT_QUEUE", "fallback", 1);
    CHECK(stem::worker_options::from_env(stem::worker_options{}).queues == std::vector<std::string>{"fallback"});
    ::unsetenv("STEM_DEFAULT_QUEUE");
}

TEST_CASE("runtime.app: an io_context run by several threads") {
    asio::io_context io;
    auto app = make_app(io, test_options(), sum_task{});
    app->start();
    std::atomic<int> ok{0};
    constexpr int producers = 4, per_producer = 50;
    std::atomic<int> finished{0};
    for (int p = 0; p < producers; ++p) {
        asio::co_spawn(io, [&, p]() -> awaitable<void> {
            for (int i = 0; i < per_producer; ++i) {
                sum_args args{{p, i}, std::nullopt};
                auto h = co_await app->enqueue<sum_task>(args);
                auto r = co_await h.wait(10s);
                if (r.succeeded() && r.value->total == p + i) ++ok;
            }
            if (++finished == producers) co_await app->shutdown();
        }, asio::detached);
    }
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) threads.emplace_back([&] { io.run(); });
    for (auto& t : threads) t.join();
    CHECK(ok == producers * per_producer);
}

namespace {

/// A memory backend behind a wrapper: everything but `set` and `capabilities` goes to it.
struct wrapped_memory_backend {
    using opt_ms = std::optional<std::chrono::milliseconds>;
    stem::memory_backend inner;
    awaitable<std::optional<stem::task_status>> get(std::string id) { return inner.get(std::move(id)); }
    awaitable<std::optional<stem::task_status>> wait(std::string id, std::chrono::milliseconds t) { return inner.wait(std::move(id), t); }
    awaitable<stem::status_watch> watch(std::string id) { return inner.watch(std::move(id)); }
    awaitable<std::vector<stem::task_status>> list(stem::status_filter f) { return inner.list(std::move(f)); }
    awaitable<std::uint64_t> count(std::optional<stem::task_state> s) { return inner.count(s); }
    awaitable<void> init_group(stem::group_descriptor g, opt_ms t) { return inner.init_group(std::move(g), t); }
    awaitable<std::size_t> add_group_result(std::string g, stem::task_status s) { return inner.add_group_result(std::move(g), std::move(s)); }
    awaitable<std::optional<stem::group_record>> get_group(std::string g) { return inner.get_group(std::move(g)); }
    awaitable<bool> claim_chord(std::string g) { return inner.claim_chord(std::move(g)); }
    awaitable<void> set_heartbeat(stem::worker_heartbeat hb, std::chrono::milliseconds t) { return inner.set_heartbeat(std::move(hb), t); }
    awaitable<std::vector<stem::worker_heartbeat>> list_heartbeats() { return inner.list_heartbeats(); }
};

/// A memory backend that presents itself as out of process (so the worker starts its
/// `running` writes without waiting), with the ordering promise of `Ordered`, and whose first
/// `running` write of a task lands only after `DelayMs`. Without the promise the worker must
/// wait for that write before the task's later writes, or the late `running` would replace them.
template <bool Ordered, int DelayMs>
struct remote_like_backend : wrapped_memory_backend {
    awaitable<void> set(stem::task_status st, opt_ms ttl) {
        if (DelayMs > 0 && st.state == stem::task_state::running && st.progress == 0) co_await elapse(std::chrono::milliseconds(DelayMs));
        co_await inner.set(std::move(st), ttl);
    }
    stem::backend_capabilities capabilities() const noexcept { return {.ordered_writes = Ordered, .in_process = false}; }
};

/// Reports what the backend holds for its own id when it starts, then records progress.
struct looks_at_itself : stem::task_definition<num_args, std::string> {
    static constexpr std::string_view name = "test.looks_at_itself";
    stem::memory_backend backend;
    awaitable<std::string> operator()(stem::task_context& ctx, num_args) {
        auto st = co_await backend.get(ctx.id());
        co_await ctx.progress(40);
        co_return st ? std::string(stem::to_string(st->state)) : "none";
    }
};

/// A started app whose tasks look at `backend`'s store.
template <class Backend>
auto looking_app(asio::io_context& io, Backend& backend) {
    auto o = test_options();
    o.worker.track_started_after = 0ms;  // `running` as the handler starts
    auto app = std::make_unique<stem::app<stem::memory_broker, Backend, stem::tasks<looks_at_itself>>>(
        io, stem::memory_broker{}, backend, stem::tasks<looks_at_itself>{looks_at_itself{{}, backend.inner}}, std::move(o));
    app->start();
    return app;
}

}  // namespace

TEST_CASE("runtime.worker: with track_started_after 0, the running record starts before the handler and never replaces a later write") {
    SUBCASE("in-order backend: the write starts at once, and the handler sees its own `running` status") {
        asio::io_context io;
        remote_like_backend<true, 0> backend;
        auto app = looking_app(io, backend);
        stem_test::run(io, [&]() -> awaitable<void> {
            auto h = co_await app->enqueue<looks_at_itself>(num_args{1});
            auto r = co_await h.wait(5s);
            REQUIRE(r.succeeded());
            CHECK(*r.value == "running");
            co_await app->shutdown();
        });
    }
    SUBCASE("a backend without the ordering promise: later writes wait for the slow `running` write") {
        asio::io_context io;
        remote_like_backend<false, 40> backend;
        auto app = looking_app(io, backend);
        stem_test::run(io, [&]() -> awaitable<void> {
            std::vector<stem::task_handle<std::string>> hs;
            for (int i = 0; i < 8; ++i) hs.push_back(co_await app->enqueue<looks_at_itself>(num_args{i}));
            for (auto& h : hs) REQUIRE((co_await h.wait(5s)).succeeded());
            co_await elapse(80ms);  // a `running` write that had not waited would land by now
            for (auto& h : hs) {
                auto st = co_await backend.get(h.id());
                REQUIRE(st);
                CHECK(st->state == stem::task_state::succeeded);
            }
            co_await app->shutdown();
        });
    }
}

namespace {

/// A memory backend that keeps, per task, the states and progress written, in order.
struct recording_backend : wrapped_memory_backend {
    std::shared_ptr<std::map<std::string, std::vector<stem::task_status>>> writes =
        std::make_shared<std::map<std::string, std::vector<stem::task_status>>>();
    awaitable<void> set(stem::task_status st, opt_ms ttl) {
        (*writes)[st.id].push_back(st);
        return inner.set(std::move(st), ttl);
    }
    stem::backend_capabilities capabilities() const noexcept { return inner.capabilities(); }
};

struct nap_args {
    int ms = 0;
    int progress = 0;
};
BOOST_DESCRIBE_STRUCT(nap_args, (), (ms, progress))

/// Sleeps for `ms`; with `progress` > 0, first records that much progress.
struct naps : stem::task_definition<nap_args, int> {
    static constexpr std::string_view name = "test.naps";
    awaitable<int> operator()(stem::task_context& ctx, nap_args a) {
        if (a.progress > 0) co_await ctx.progress(a.progress);
        if (a.ms > 0) co_await elapse(std::chrono::milliseconds(a.ms));
        co_return a.ms;
    }
};

std::vector<std::string> states_of(const std::vector<stem::task_status>& v) {
    std::vector<std::string> out;
    for (auto& st : v) out.push_back(fmt::format("{}:{}", stem::to_string(st.state), st.progress));
    return out;
}

}  // namespace

TEST_CASE("runtime.worker: `running` is recorded only for a task still running after track_started_after") {
    asio::io_context io;
    recording_backend backend;
    auto o = test_options();
    o.worker.track_started_after = 30ms;
    stem::app app{io, stem::memory_broker{}, backend, stem::tasks{naps{}}, std::move(o)};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        nap_args quick{0, 0}, slow{400, 0}, progress_first{400, 40};
        auto hq = co_await app.enqueue<naps>(quick);
        auto hs = co_await app.enqueue<naps>(slow);
        auto hp = co_await app.enqueue<naps>(progress_first);
        // While the slow task runs, its status says so (after at most two periods).
        std::optional<stem::task_status> seen;
        for (int i = 0; i < 200 && !(seen && seen->state == stem::task_state::running); ++i) {
            co_await elapse(5ms);
            seen = co_await backend.get(hs.id());
        }
        REQUIRE(seen);
        CHECK(seen->state == stem::task_state::running);
        CHECK(seen->started_at.has_value());
        for (auto* h : {&hq, &hs, &hp}) REQUIRE((co_await h->wait(5s)).succeeded());
        auto& w = *backend.writes;
        // The quick task: its outcome only. The slow one: `running`, then its outcome. The
        // one that recorded progress at once: that progress stands; no `running` at 0 % follows.
        CHECK(states_of(w[hq.id()]) == std::vector<std::string>{"succeeded:100"});
        CHECK(states_of(w[hs.id()]) == std::vector<std::string>{"running:0", "succeeded:100"});
        CHECK(states_of(w[hp.id()]) == std::vector<std::string>{"running:40", "succeeded:100"});
        CHECK(w[hs.id()].front().started_at == w[hs.id()].back().started_at);
        co_await app.shutdown();
    });
}

TEST_CASE("runtime.worker: a task still running at shutdown gets its deferred `running` record") {
    asio::io_context io;
    recording_backend backend;
    auto o = test_options();
    o.worker.track_started_after = 10s;  // only the shutdown can write it
    stem::app app{io, stem::memory_broker{}, backend, stem::tasks{naps{}}, std::move(o)};
    app.start();
    stem_test::run(io, [&]() -> awaitable<void> {
        nap_args slow{150, 0};
        auto h = co_await app.enqueue<naps>(slow);
        for (int i = 0; i < 1000 && app.get_worker().stats().active == 0; ++i) co_await elapse(2ms);
        REQUIRE(app.get_worker().stats().active == 1);
        co_await app.shutdown();  // warm: lets it finish
        REQUIRE((co_await h.wait(5s)).succeeded());
        CHECK(states_of((*backend.writes)[h.id()]) == std::vector<std::string>{"running:0", "succeeded:100"});
    });
}
