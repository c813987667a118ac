// The PostgreSQL adapters against the private server that scripts/test starts
// (STEM_TEST_POSTGRES_URL): the contract kits, directly and from a URL, a corrupt row,
// a worker process killed mid-task, a server restart in the middle of a run, lazy
// commits, and the upsert that keeps a late `running` status from replacing a newer one.
#include "contracts/backend_kit.hpp"
#include "contracts/broker_kit.hpp"
#include "support/async.hpp"
#include "support/fault_kit.hpp"
#include "support/runtime.hpp"

#include <stem/adapters/postgres.hpp>
#include <stem/adapters/url.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>

#include <unistd.h>

using namespace std::chrono_literals;
using namespace std::string_literals;
using stem_test::awaitable;

namespace {

/// The test server's URL; a clear failure when scripts/test did not start one.
std::string pg_url() {
    const char* u = std::getenv("STEM_TEST_POSTGRES_URL");
    if (!u || !*u)
        throw std::runtime_error("STEM_TEST_POSTGRES_URL is not set: run scripts/test, which starts a private PostgreSQL");
    return u;
}

/// A namespace of its own per store, so cases never see each other's rows.
std::string fresh_namespace() {
    static std::atomic<int> n{0};
    return fmt::format("t{}_{}", ::getpid(), ++n);
}

stem::postgres_broker_options broker_opts(std::string ns) {
    stem::postgres_broker_options o;
    o.conninfo = pg_url();
    o.namespace_ = std::move(ns);
    o.pool_size = 2;
    o.poll_interval = 200ms;
    return o;
}
stem::postgres_backend_options backend_opts(std::string ns) {
    stem::postgres_backend_options o;
    o.conninfo = pg_url();
    o.namespace_ = std::move(ns);
    o.pool_size = 2;
    o.poll_interval = 200ms;
    return o;
}

/// Options of a database of one connection on the test server.
stem::detail::postgres::database_options one_connection() {
    stem::detail::postgres::database_options o;
    o.conninfo = pg_url();
    o.display = "test";
    o.pool_size = 1;
    return o;
}

struct pg_broker_fixture {
    static stem::postgres_broker make() { return stem::postgres_broker{broker_opts(fresh_namespace())}; }
    // A second broker object on the same tables: another pool, as another process would have.
    static stem::postgres_broker peer(stem::postgres_broker& b) { return stem::postgres_broker{broker_opts(b.namespace_name())}; }
};
struct url_pg_broker_fixture {
    static stem::any_broker make() { return stem::make_broker(pg_url() + "?pool_size=2&namespace=" + fresh_namespace()); }
    static stem::any_broker peer(stem::any_broker& b) { return b; }
};
struct pg_backend_fixture {
    static stem::postgres_backend make() { return stem::postgres_backend{backend_opts(fresh_namespace())}; }
    static stem::postgres_backend peer(stem::postgres_backend& r) { return r; }
};
/// Adapter objects on one namespace, for the fault kit.
struct pg_store {
    static stem::postgres_broker broker(const std::string& ns) { return stem::postgres_broker{broker_opts(ns)}; }
    static stem::postgres_backend backend(const std::string& ns) { return stem::postgres_backend{backend_opts(ns)}; }
};
struct url_pg_backend_fixture {
    static stem::any_backend make() { return stem::make_backend(pg_url() + "?pool_size=2&namespace=" + fresh_namespace()); }
    static stem::any_backend peer(stem::any_backend& r) { return r; }
};


}  // namespace

STEM_BROKER_CONTRACT_TESTS(pg_broker_fixture, "postgres")
STEM_BROKER_CONTRACT_TESTS(url_pg_broker_fixture, "any(postgres)")
STEM_BACKEND_CONTRACT_TESTS(pg_backend_fixture, "postgres")
STEM_BACKEND_CONTRACT_TESTS(url_pg_backend_fixture, "any(postgres)")

TEST_CASE("adapters.postgres: a waiting consumer takes a delayed task when it falls due and an expired lease at once, not at its next poll") {
    auto o = broker_opts(fresh_namespace());
    o.poll_interval = 30s;  // no poll can be what finds them
    stem_test::run([&]() -> awaitable<void> {
        stem::postgres_broker b{o};
        co_await broker_kit::wakes_when_delay_and_lease_end(b);
    }, 60s);
}

TEST_CASE("adapters.postgres: claims from a backlog take rows in order across queues, passing delayed and leased rows") {
    stem_test::run([]() -> awaitable<void> {
        auto b = pg_broker_fixture::make();
        // 2,000 tasks in two queues with priorities 0-3; every seventh is delayed by an hour.
        std::vector<stem::envelope> batch;
        for (int i = 0; i < 2000; ++i) {
            auto e = broker_kit::make_env(i % 2 ? "qa" : "qb", i % 4);
            if (i % 7 == 0) e.not_before = stem::clock::now() + 1h;
            batch.push_back(std::move(e));
        }
        // One batch shares one instant: among equals in priority, publish order decides.
        std::vector<std::string> expected;
        for (int p = 3; p >= 0; --p)
            for (auto& e : batch)
                if (e.priority == p && !e.not_before) expected.push_back(e.id);
        co_await b.publish_batch(batch);
        auto sub = broker_kit::sub_of2("qa"s, "qb"s);
        // The first 100 stay leased: later claims pass them by.
        auto held = co_await b.consume(sub, 100, 1s);
        std::vector<std::string> order;
        for (auto& d : held) order.push_back(d.env.id);
        for (;;) {
            auto got = co_await b.consume(sub, 64, 0ms);
            if (got.empty()) break;
            for (auto& d : got) {
                order.push_back(d.env.id);
                CHECK(co_await b.ack(d));
            }
        }
        CHECK(held.size() == 100);
        CHECK(order == expected);
    }, 60s);
}

TEST_CASE("adapters.postgres: sweeps delete expired dead letters, broadcasts and results, and keep the rest") {
    auto ns = fresh_namespace();
    auto bo = broker_opts(ns);
    bo.dead_letter_retention = 300ms;
    bo.broadcast_retention = 300ms;
    auto ro = backend_opts(ns);
    ro.cleanup_interval = 0ms;  // at every status write
    namespace pg = stem::detail::postgres;
    pg::database db(one_connection());
    auto rows = [&](std::string table) -> awaitable<int> {
        co_return co_await db.run([&](pg::connection& c) { return c.exec_raw("SELECT count(*) FROM " + ns + table)[0][0].as<int>(); });
    };
    auto result = [](std::string id) {
        stem::task_status st;
        st.id = std::move(id);
        st.name = "kit.task";
        st.state = stem::task_state::succeeded;
        return st;
    };
    stem_test::run([&]() -> awaitable<void> {
        auto sub = broker_kit::sub_of("sq"s);
        stem::postgres_broker b{bo};
        stem::postgres_backend r{ro};
        co_await b.publish(broker_kit::make_env("sq"));
        co_await b.publish(broker_kit::make_env("sq"));
        auto got = co_await b.consume(sub, 1, 1s);  // this object's first claim sweeps (nothing yet)
        REQUIRE(got.size() == 1);
        CHECK(co_await b.dead_letter(got[0], "old"));
        co_await b.broadcast("sweep", broker_kit::make_env("sq"));
        co_await r.set(result(got[0].env.id), 100ms);
        co_await r.set(result("kept-result"), std::nullopt);
        co_await stem_test::elapse(400ms);
        // Written after the wait, before the sweeps: young enough to stay.
        got = co_await b.consume(sub, 1, 1s);  // no sweep: this object swept less than a minute ago
        REQUIRE(got.size() == 1);
        CHECK(co_await b.dead_letter(got[0], "new"));
        co_await b.broadcast("sweep", broker_kit::make_env("sq"));
        CHECK(co_await rows("_dead_letters") == 2);
        CHECK(co_await rows("_broadcasts") == 2);
        // A fresh object sweeps at its first claim; a status write sweeps the results.
        stem::postgres_broker sweeper{bo};
        CHECK((co_await sweeper.consume(sub, 1, 0ms)).empty());
        co_await r.set(result("another"), std::nullopt);
        CHECK(co_await rows("_dead_letters") == 1);
        CHECK(co_await rows("_broadcasts") == 1);
        CHECK(co_await rows("_results") == 2);
    });
}

TEST_CASE("adapters.postgres: a lone single-statement job runs without a transaction of its own, others in one") {
    namespace pg = stem::detail::postgres;
    pg::database db(one_connection());
    // SAVEPOINT is refused outside a transaction block.
    auto savepoint = [](pg::connection& c) { c.exec_raw("SAVEPOINT probe"); };
    stem_test::run([&]() -> awaitable<void> {
        co_await db.run(savepoint);
        bool refused = false;
        try {
            co_await db.run_single(savepoint);
        } catch (const std::exception& e) {
            refused = std::string(e.what()).find("transaction block") != std::string::npos;
        }
        CHECK(refused);
        // The connection goes on serving jobs. A lazy transaction plans each prepared
        // statement once; others keep the server's setting.
        auto plans = [](pg::connection& c) { return c.exec_raw("SHOW plan_cache_mode")[0][0].as<std::string>(); };
        CHECK(co_await db.run(plans, stem::detail::commit_mode::lazy) == "force_generic_plan");
        CHECK(co_await db.run(plans) == "auto");
        co_await db.run(savepoint, stem::detail::commit_mode::lazy);
    });
}

TEST_CASE("adapters.postgres: a `running` status older than the stored one is not written, a newer one is") {
    stem_test::run([]() -> awaitable<void> {
        auto r = pg_backend_fixture::make();
        CHECK(r.capabilities().ordered_writes);
        auto id = stem::make_task_id();
        auto done = backend_kit::make_status(id, stem::task_state::succeeded);
        co_await r.set(done, std::nullopt);
        auto late = backend_kit::make_status(id, stem::task_state::running);
        late.updated_at = done.updated_at - 1ms;  // started before the result was written: a late `running`
        co_await r.set(late, std::nullopt);
        auto same = late;
        same.updated_at = done.updated_at;  // no newer than the result either
        co_await r.set(same, std::nullopt);
        auto got = co_await r.get(id);
        REQUIRE(got);
        CHECK(got->state == stem::task_state::succeeded);
        auto rerun = backend_kit::make_status(id, stem::task_state::running);
        rerun.updated_at = done.updated_at + 1ms;  // a later run of the same task (a redelivery)
        co_await r.set(rerun, std::nullopt);
        got = co_await r.get(id);
        REQUIRE(got);
        CHECK(got->state == stem::task_state::running);
        auto failed = backend_kit::make_status(id, stem::task_state::failed);
        failed.updated_at = done.updated_at;  // any other state is written whatever its time
        co_await r.set(failed, std::nullopt);
        got = co_await r.get(id);
        REQUIRE(got);
        CHECK(got->state == stem::task_state::failed);
    });
}

TEST_CASE("adapters.postgres: a lazy transaction skips the WAL flush, a batch with any durable job keeps the server's setting") {
    namespace pg = stem::detail::postgres;
    using stem::detail::commit_mode;
    // The session default is `local`, so that it differs from both `on` and `off`.
    pg::database_options o;
    o.conninfo = pg_url() + "?options=-c%20synchronous_commit%3Dlocal";
    o.display = "test";
    o.pool_size = 1;  // one connection: jobs waiting behind a slow one share its next transaction
    pg::database db(o);
    auto setting = [](pg::connection& c) { return c.exec_raw("SHOW synchronous_commit")[0][0].as<std::string>(); };
    auto table = "lazy_" + fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        CHECK(co_await db.run(setting) == "local");
        CHECK(co_await db.run(setting, commit_mode::lazy) == "off");
        // A lazy write is a real commit: a later transaction sees it.
        co_await db.run([&](pg::connection& c) { c.exec_raw("CREATE TABLE " + table + "(n INT)"); });
        co_await db.run([&](pg::connection& c) { c.exec_raw("INSERT INTO " + table + " VALUES (1)"); }, commit_mode::lazy);
        CHECK(co_await db.run([&](pg::connection& c) {
            return c.exec_raw("SELECT count(*) FROM " + table)[0][0].as<int>();
        }) == 1);
        // A lazy and a durable job queued behind a slow one run in one transaction: durable.
        auto ex = co_await boost::asio::this_coro::executor;
        std::string lazy_saw, durable_saw;
        int finished = 0;
        boost::asio::co_spawn(ex, db.run([](pg::connection& c) { c.exec_raw("SELECT pg_sleep(0.2)"); }),
                              [&](std::exception_ptr) { ++finished; });
        co_await stem_test::elapse(50ms);
        boost::asio::co_spawn(ex, db.run(setting, commit_mode::lazy), [&](std::exception_ptr, std::string v) {
            lazy_saw = v;
            ++finished;
        });
        boost::asio::co_spawn(ex, db.run(setting), [&](std::exception_ptr, std::string v) {
            durable_saw = v;
            ++finished;
        });
        while (finished < 3) co_await stem_test::elapse(10ms);
        CHECK(lazy_saw == "local");
        CHECK(durable_saw == "local");
        co_await db.run([&](pg::connection& c) { c.exec_raw("DROP TABLE " + table); });
    });
}

TEST_CASE("adapters.postgres: a corrupt row is dead-lettered with the reason and the worker keeps going") {
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, stem::postgres_broker{broker_opts(ns)},
                      stem::postgres_backend{backend_opts(ns)}, stem::tasks{stem_test::sleepy{}}, stem_test::app_options(2)};
        stem_test::num_args one{1}, two{2};
        auto first = co_await app.enqueue<stem_test::sleepy>(one);
        auto second = co_await app.enqueue<stem_test::sleepy>(two);
        {
            pqxx::connection raw(pg_url());
            pqxx::work w(raw);
            auto r = w.exec_params(fmt::format("UPDATE {}_jobs SET envelope = '{{\"id\": 42, broken' WHERE id = $1", ns), first.id());
            CHECK(r.affected_rows() == 1);
            w.commit();
        }
        app.start();
        auto r = co_await second.wait(10s);
        CHECK(r.succeeded());
        auto id = first.id();
        auto dead = co_await app.get_broker().get_dead_letter(id);
        REQUIRE(dead);
        CHECK(dead->reason.starts_with("decode-error: "));
        auto stats = co_await stem_test::settled_stats(app.get_broker(), "default"s);
        CHECK(stats.pending + stats.inflight == 0);
        CHECK(stats.dead == 1);
        co_await app.shutdown();
    });
}

TEST_CASE("adapters.postgres: a worker process killed mid-task: the task runs again after its lease and completes") {
    fault_kit::killed_worker_task_runs_again<pg_store>(fresh_namespace());
}

// Skipped by default (ctest runs it alone, with --no-skip: see tests/CMakeLists.txt).
TEST_CASE("adapters.postgres: the server restarts in the middle of a run: every task completes" * doctest::skip()) {
    const char* restart = std::getenv("STEM_TEST_POSTGRES_RESTART");
    REQUIRE_MESSAGE(restart, "STEM_TEST_POSTGRES_RESTART is not set: run scripts/test");
    fault_kit::server_restart_every_task_completes<pg_store>(fresh_namespace(), restart);
}

TEST_CASE("adapters.postgres: URLs: stem's parameters are taken, the rest go to libpq, passwords are never shown") {
    auto message = [](auto f) {
        try {
            f();
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    // Nothing listens on port 1: the connection fails, and the message hides the password.
    auto m = message([] { stem::make_broker("postgresql://stem:hunter2@127.0.0.1:1/db?connect_timeout=2&namespace=x"); });
    CHECK(m.find("cannot connect") != std::string::npos);
    CHECK(m.find("hunter2") == std::string::npos);
    CHECK(m.find("stem:***@127.0.0.1:1") != std::string::npos);
    CHECK(message([] { stem::make_backend("postgres://u:pw@h/db?pool_size=0"); }).find("pool_size") != std::string::npos);
    CHECK(stem::detail::redact_password("host=h password=abc user=u") == "host=h password=*** user=u");
    CHECK(stem::detail::redact_password("postgresql://h/db?password=abc&x=1") == "postgresql://h/db?password=***&x=1");
}
