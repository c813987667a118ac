// The worker on the SQLite adapters: a corrupt row is dead-lettered and the worker keeps
// going; a worker process killed mid-task loses nothing (the task runs again after its
// lease and completes); bad URLs are refused with a clear error.
#include "contracts/broker_kit.hpp"
#include "support/async.hpp"
#include "support/fault_kit.hpp"
#include "support/runtime.hpp"
#include "support/temp_dir.hpp"

#include <stem/adapters/url.hpp>

#include <doctest/doctest.h>


#include <SQLiteCpp/Database.h>
#include <unistd.h>

using namespace std::chrono_literals;
using namespace std::string_literals;
using stem_test::awaitable;

namespace {


struct sqlite_double : stem::task_definition<stem_test::num_args, int> {
    static constexpr std::string_view name = "sqlite.double";
    awaitable<int> operator()(stem::task_context&, stem_test::num_args a) { co_return a.x * 2; }
};

stem::sqlite_broker_options sqlite_broker_opts(std::string path) {
    stem::sqlite_broker_options o;
    o.path = std::move(path);
    o.poll_interval = 10ms;
    return o;
}
stem::sqlite_backend_options sqlite_backend_opts(std::string path) {
    stem::sqlite_backend_options o;
    o.path = std::move(path);
    o.poll_interval = 10ms;
    return o;
}
/// Adapter objects on two files with prefix `p`, for the fault kit.
struct sqlite_store {
    static stem::sqlite_broker broker(const std::string& p) { return stem::sqlite_broker{sqlite_broker_opts(p + ".broker")}; }
    static stem::sqlite_backend backend(const std::string& p) { return stem::sqlite_backend{sqlite_backend_opts(p + ".backend")}; }
};

}  // namespace

TEST_CASE("adapters.sqlite: a corrupt row is dead-lettered with the reason and the worker keeps going") {
    auto bpath = stem_test::scratch_file("broker"), rpath = stem_test::scratch_file("backend");
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, stem::sqlite_broker{sqlite_broker_opts(bpath)},
                      stem::sqlite_backend{sqlite_backend_opts(rpath)}, stem::tasks{sqlite_double{}}, stem_test::app_options(2)};
        stem_test::num_args one{1}, two{2};
        auto first = co_await app.enqueue<sqlite_double>(one);
        auto second = co_await app.enqueue<sqlite_double>(two);
        {
            // Damage the first row behind stem's back, as a bad disk or a careless script might.
            SQLite::Database raw(bpath, SQLite::OPEN_READWRITE);
            raw.setBusyTimeout(5000);
            SQLite::Statement q(raw, "UPDATE stem_jobs SET envelope = '{\"id\": 42, broken' WHERE id = ?");
            q.bind(1, first.id());
            CHECK(q.exec() == 1);
        }
        app.start();
        auto r = co_await second.wait(10s);
        CHECK(r.succeeded());
        CHECK(*r.value == 4);
        auto id = first.id();
        auto dead = co_await app.get_broker().get_dead_letter(id);
        REQUIRE(dead);
        CHECK(dead->reason.starts_with("decode-error: "));
        CHECK(dead->env.id == first.id());
        auto stats = co_await stem_test::settled_stats(app.get_broker(), "default"s);
        CHECK(stats.pending == 0);
        CHECK(stats.inflight == 0);
        CHECK(stats.dead == 1);
        co_await app.shutdown();
    });
}

TEST_CASE("adapters.sqlite: a waiting consumer takes a delayed task when it falls due and an expired lease at once, not at its next poll") {
    auto o = sqlite_broker_opts(stem_test::scratch_file("broker"));
    o.poll_interval = 30s;  // no poll can be what finds them
    stem_test::run([&]() -> awaitable<void> {
        stem::sqlite_broker b{o};
        co_await broker_kit::wakes_when_delay_and_lease_end(b);
    }, 60s);
}

TEST_CASE("adapters.sqlite: a worker process killed mid-task: the task runs again after its lease and completes") {
    fault_kit::killed_worker_task_runs_again<sqlite_store>(stem_test::scratch_file("killed"));
}

TEST_CASE("adapters.url: bad URLs are refused with an error that names the problem") {
    auto message = [](auto f) {
        try {
            f();
        } catch (const stem::error& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    CHECK(message([] { stem::make_broker("nonsense"); }).find("has no scheme") != std::string::npos);
    CHECK(message([] { stem::make_broker("ftp://x"); }).find("unknown scheme 'ftp'") != std::string::npos);
    CHECK(message([] { stem::make_broker("sqlite://"); }).find("no database file") != std::string::npos);
    CHECK(message([] { stem::make_broker("sqlite://x.db?colour=red"); }).find("unknown parameter 'colour'") != std::string::npos);
    CHECK(message([] { stem::make_broker("sqlite://x.db?poll_interval=soon"); }).find("poll_interval") != std::string::npos);
    CHECK(message([] { stem::make_backend("sqlite://x.db?namespace=1bad"); }).find("namespace '1bad'") != std::string::npos);
    CHECK(message([] { stem::make_broker("memory://?visibility_timeout=2s"); }) == "(no error)");
}

TEST_CASE("adapters.url: the embedded default applies when no URL is configured") {
    ::unsetenv("STEM_BROKER_URL");
    ::setenv("STEM_RESULT_BACKEND_URL", "memory://", 1);
    auto u = stem::adapter_urls::from_env();
    CHECK(u.broker == "sqlite://.stem/broker.db");
    CHECK(u.backend == "memory://");
    ::unsetenv("STEM_RESULT_BACKEND_URL");
    CHECK(stem::adapter_urls::from_env().backend == "sqlite://.stem/backend.db");
}
