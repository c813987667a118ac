// The Redis adapters against the private server that scripts/test starts
// (STEM_TEST_REDIS_URL): the contract kits, directly and from a URL, a damaged entry,
// and URL handling. Multi-process and restart cases: redis_process_tests.cpp.
#include "adapters/redis/redis_support.hpp"
#include "contracts/backend_kit.hpp"
#include "contracts/broker_kit.hpp"
#include "support/tcp_proxy.hpp"

#include <stem/adapters/url.hpp>

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <doctest/doctest.h>

#include <functional>

using namespace std::chrono_literals;
using namespace std::string_literals;
using stem_test::awaitable;
using namespace redis_test;

namespace {

struct redis_broker_fixture {
    static stem::redis_broker make() { return stem::redis_broker{broker_opts(fresh_namespace())}; }
    // A second broker object on the same keys: other connections, as another process would have.
    static stem::redis_broker peer(stem::redis_broker& b) {
        auto o = broker_opts(b.namespace_name());
        return stem::redis_broker{o};
    }
};

struct redis_backend_fixture {
    static stem::redis_backend make() { return stem::redis_backend{backend_opts(fresh_namespace())}; }
    static stem::redis_backend peer(stem::redis_backend& r) { return r; }
};

struct url_redis_broker_fixture {
    static stem::any_broker make() { return stem::make_broker(redis_url() + "?namespace=" + fresh_namespace()); }
    static stem::any_broker peer(stem::any_broker& b) { return b; }
};
struct url_redis_backend_fixture {
    static stem::any_backend make() { return stem::make_backend(redis_url() + "?namespace=" + fresh_namespace()); }
    static stem::any_backend peer(stem::any_backend& r) { return r; }
};

/// Removes the lease set of `queue` in namespace `ns`, as if the ZADD of the delivery just
/// taken had been lost. That ZADD is sent without waiting, on the broker's connection: wait
/// until it has run. Returns how many keys were removed.
awaitable<long long> drop_leases(stem::redis::client& raw, std::string ns, std::string queue) {
    auto key = "{" + ns + "}:leases:" + queue;
    for (int i = 0; i < 200; ++i) {
        stem::redis::request card;
        card.push("ZCARD", key);
        auto rs = co_await raw.exec(std::move(card));
        if (stem::redis::integer(*rs.at(0)) > 0) break;
        co_await stem_test::elapse(10ms);
    }
    stem::redis::request del;
    del.push("DEL", key);
    auto rs = co_await raw.exec(std::move(del));
    co_return stem::redis::integer(*rs.at(0));
}

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

STEM_BROKER_CONTRACT_TESTS(redis_broker_fixture, "redis")
STEM_BROKER_CONTRACT_TESTS(url_redis_broker_fixture, "any(redis)")
STEM_BACKEND_CONTRACT_TESTS(redis_backend_fixture, "redis")
STEM_BACKEND_CONTRACT_TESTS(url_redis_backend_fixture, "any(redis)")

// No poll: the blocking read ends when the soonest delay or lease does.
TEST_CASE("adapters.redis: a waiting consumer takes a delayed task when it falls due and an expired lease at once") {
    stem_test::run([]() -> awaitable<void> {
        auto b = redis_broker_fixture::make();
        co_await broker_kit::wakes_when_delay_and_lease_end(b);
    }, 60s);
}

TEST_CASE("adapters.redis: URLs: user, password, database and TLS are read, bad ones are refused without the password") {
    auto c = stem::redis::config::from_url("redis://app:s3cret@cache.example:6380/4");
    CHECK(c.host == "cache.example");
    CHECK(c.port == 6380);
    CHECK(c.user == "app");
    CHECK(c.password == "s3cret");
    CHECK(c.database == 4);
    CHECK_FALSE(c.tls);
    CHECK(c.display() == "redis://app:***@cache.example:6380/4");
    auto only_password = stem::redis::config::from_url("redis://:pw@localhost");
    CHECK(only_password.user.empty());
    CHECK(only_password.password == "pw");
    CHECK(only_password.port == 6379);
    CHECK(stem::redis::config::from_url("rediss://localhost:6390").tls);

    auto bad_db = message_of([] { stem::redis::config::from_url("redis://u:topsecret@localhost/x"); });
    CHECK(bad_db.find("database number") != std::string::npos);
    CHECK(bad_db.find("topsecret") == std::string::npos);
    auto unknown = message_of([] { stem::make_broker("redis://u:topsecret@localhost:6390/0?colour=blue"); });
    CHECK(unknown.find("unknown parameter 'colour'") != std::string::npos);
    CHECK(unknown.find("topsecret") == std::string::npos);
    auto bad_duration = message_of([] { stem::make_backend("redis://localhost/0?default_ttl=soon"); });
    CHECK(bad_duration.find("default_ttl") != std::string::npos);
}

TEST_CASE("adapters.redis: a bad STEM_REDIS_SPIN_US is refused when an adapter is made") {
    ::setenv("STEM_REDIS_SPIN_US", "soon", 1);
    auto bad = message_of([] { stem::redis_broker b{stem::redis_broker_options{}}; });
    ::setenv("STEM_REDIS_SPIN_US", "20000", 1);
    auto too_long = message_of([] { stem::redis_backend r{stem::redis_backend_options{}}; });
    ::unsetenv("STEM_REDIS_SPIN_US");
    CHECK(bad.find("STEM_REDIS_SPIN_US") != std::string::npos);
    CHECK(bad.find("'soon'") != std::string::npos);
    CHECK(too_long.find("from 0 to 10000") != std::string::npos);
}

TEST_CASE("adapters.redis: a refused login and an unreachable server give clear errors without the password") {
    stem_test::run([]() -> awaitable<void> {
        auto wrong = stem::redis::config::from_url(redis_url());
        wrong.password = "not-the-password";
        wrong.user = "nobody";
        stem::redis_broker_options o;
        o.server = wrong;
        o.namespace_ = fresh_namespace();
        stem::redis_broker b{o};
        std::string what;
        try {
            co_await b.stats("q"s);
        } catch (const std::exception& e) {
            what = e.what();
        }
        INFO(what);
        CHECK(what.find("set-up refused") != std::string::npos);
        CHECK(what.find("not-the-password") == std::string::npos);

        stem::redis_broker_options nowhere;
        nowhere.server = stem::redis::config::from_url("redis://127.0.0.1:1/0");
        nowhere.namespace_ = fresh_namespace();
        stem::redis_broker gone{nowhere};
        what.clear();
        try {
            co_await gone.stats("q"s);
        } catch (const std::exception& e) {
            what = e.what();
        }
        CHECK(what.find("redis://127.0.0.1:1/0") != std::string::npos);
        CHECK(what.find("cannot connect") != std::string::npos);
    });
}

TEST_CASE("adapters.redis: an entry that does not decode is dead-lettered with the reason and the worker keeps going") {
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        stem::app app{co_await boost::asio::this_coro::executor, stem::redis_broker{broker_opts(ns)},
                      stem::redis_backend{backend_opts(ns)}, stem::tasks{stem_test::sleepy{}}, stem_test::app_options(2)};
        stem::redis::client raw(stem::redis::config::from_url(redis_url()));
        stem::redis::request r;
        r.push("XADD", "{" + ns + "}:q:default:0", "*", "v", "0", "e", "{\"id\": 42, broken");
        auto added = co_await raw.exec(std::move(r));
        REQUIRE(stem::redis::text(*added.at(0)).find('-') != std::string_view::npos);
        std::string entry(stem::redis::text(*added[0]));
        stem_test::num_args two{2};
        auto second = co_await app.enqueue<stem_test::sleepy>(two);
        app.start();
        auto res = co_await second.wait(10s);
        CHECK(res.succeeded());
        auto dead = co_await app.get_broker().get_dead_letter("undecodable-" + entry);
        REQUIRE(dead);
        CHECK(dead->reason.starts_with("decode-error: "));
        auto stats = co_await stem_test::settled_stats(app.get_broker(), "default"s);
        CHECK(stats.pending + stats.inflight == 0);
        CHECK(stats.dead == 1);
        co_await app.shutdown();
    });
}

TEST_CASE("adapters.redis: an ack the server refuses is reported as not released, and acks made with it stand") {
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        stem::redis_broker broker{broker_opts(ns)};
        std::vector<std::string> queues{"ack-a", "ack-b"};
        for (auto& q : queues) co_await broker.publish(broker_kit::make_env(q));
        stem::subscription both;  // a named variable: GCC 12 mishandles a braced temporary here
        both.queues = queues;
        auto got = co_await broker.consume(both, 2, 2s);
        REQUIRE(got.size() == 2);
        stem::redis::client raw(stem::redis::config::from_url(redis_url()));
        stem::redis::request spoil;  // the leases of ack-a become a string: its ZREM fails
        spoil.push("SET", "{" + ns + "}:leases:ack-a", "x");
        co_await raw.exec(std::move(spoil));
        using namespace boost::asio::experimental::awaitable_operators;
        auto& on_a = got[0].queue == "ack-a" ? got[0] : got[1];
        auto& on_b = got[0].queue == "ack-a" ? got[1] : got[0];
        auto acked = co_await (broker.ack(on_a) && broker.ack(on_b));
        CHECK_FALSE(std::get<0>(acked));
        CHECK(std::get<1>(acked));
        auto st = co_await broker.stats("ack-b"s);
        CHECK(st.pending + st.inflight == 0);
    });
}

TEST_CASE("adapters.redis: an ack whose connection is lost before its reply is sent again, and releases its entry") {
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        auto server = stem::redis::config::from_url(redis_url());
        stem_test::tcp_proxy proxy(co_await boost::asio::this_coro::executor, server.host, server.port);
        auto opts = broker_opts(ns);
        opts.server.port = proxy.port();
        stem::redis_broker broker{opts};
        stem::redis::client raw(stem::redis::config::from_url(redis_url()));
        struct cut_case {
            std::string after;  // the bytes after which the connection is cut
            bool orphan;        // the lease is gone first, as if its ZADD had been lost
        };
        // After the lease was removed (the first round trip), after the entry was acknowledged
        // (the second), and after the `ack` script released an orphan: the ack succeeds each
        // time, and nothing is left.
        std::vector<cut_case> cases{{"$4\r\nZREM\r\n", false}, {"$4\r\nXACK\r\n", false}, {"ARGV[7] == '1'", true}};
        std::size_t made = 0;
        for (auto& c : cases) {
            CAPTURE(c.after);
            co_await broker.publish(broker_kit::make_env("cut-q"));
            auto got = co_await broker.consume(broker_kit::sub_of("cut-q"s), 1, 2s);
            REQUIRE(got.size() == 1);
            if (c.orphan) REQUIRE(co_await drop_leases(raw, ns, "cut-q") == 1);
            proxy.cut_after(c.after);
            CHECK(co_await broker.ack(got[0]));
            CHECK(proxy.cuts() == ++made);
            auto st = co_await broker.stats("cut-q"s);
            CHECK(st.pending + st.inflight == 0);
            CHECK_FALSE(co_await broker.ack(got[0]));  // done once
        }
        // With no time to try again, the caller gets the error; its own next try finds the
        // entry without a lease and releases it.
        opts.ack_retry_window = 0ms;
        stem::redis_broker impatient{opts};
        co_await impatient.publish(broker_kit::make_env("cut-q"));
        auto got = co_await impatient.consume(broker_kit::sub_of("cut-q"s), 1, 2s);
        REQUIRE(got.size() == 1);
        proxy.cut_after("$4\r\nZREM\r\n");
        std::string error;
        try {
            co_await impatient.ack(got[0]);
        } catch (const stem::error& e) {
            error = e.what();
        }
        CHECK(error.find("connection lost") != std::string::npos);
        CHECK(co_await impatient.ack(got[0]));
        auto st = co_await impatient.stats("cut-q"s);
        CHECK(st.pending + st.inflight == 0);
    });
}

TEST_CASE("adapters.redis: a delivery whose lease was never written is still its own: extended, then acked") {
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        stem::redis_broker broker{broker_opts(ns)};
        co_await broker.publish(broker_kit::make_env("orphan-q"));
        auto got = co_await broker.consume(broker_kit::sub_of("orphan-q"s), 1, 2s);
        REQUIRE(got.size() == 1);
        stem::redis::client raw(stem::redis::config::from_url(redis_url()));
        CHECK(co_await drop_leases(raw, ns, "orphan-q") == 1);
        CHECK(co_await broker.extend_lease(got[0], 5s));
        CHECK(co_await drop_leases(raw, ns, "orphan-q") == 1);  // the extension wrote it again
        CHECK(co_await broker.ack(got[0]));
        auto st = co_await broker.stats("orphan-q"s);
        CHECK(st.pending + st.inflight == 0);
        CHECK_FALSE(co_await broker.ack(got[0]));
    });
}

TEST_CASE("adapters.redis: a status message is decoded from its payload, the stored form") {
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        stem::redis_backend r{backend_opts(ns)};
        auto id = stem::make_task_id();
        auto w = co_await r.watch(id);
        stem::task_status st;
        st.id = id;
        st.name = "kit.task";
        st.state = stem::task_state::succeeded;
        st.result = "42";
        st.created_at = st.updated_at = stem::clock::now();
        // Published only, no key written: a status seen here came from the message itself.
        stem::redis::client raw(stem::redis::config::from_url(redis_url()));
        stem::redis::request q;
        q.push("PUBLISH", "{" + ns + "}:c:" + id, "succeeded"s + '\0' + st.name + '\0' + boost::json::serialize(stem::to_json(st)));
        co_await raw.exec(std::move(q));
        auto got = co_await w.next(2s);
        REQUIRE(got);
        CHECK(got->state == stem::task_state::succeeded);
        CHECK(got->result == "42");
    });
}

TEST_CASE("adapters.redis: rediss:// runs the broker and backend over TLS, verifying the server") {
    const char* url = std::getenv("STEM_TEST_REDISS_URL");
    const char* ca = std::getenv("STEM_TEST_REDIS_TLS_CA");
    REQUIRE_MESSAGE((url && ca), "STEM_TEST_REDISS_URL / STEM_TEST_REDIS_TLS_CA are not set: run scripts/test");
    ::setenv("STEM_TLS_CA_CERT", ca, 1);
    ::unsetenv("STEM_TLS_ALLOW_INSECURE");
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        auto broker = stem::make_broker(std::string(url) + "?namespace=" + ns);
        auto backend = stem::make_backend(std::string(url) + "?namespace=" + ns);
        auto e = broker_kit::make_env("tls-q");
        co_await broker.publish(e);
        auto got = co_await broker.consume(broker_kit::sub_of("tls-q"s), 1, 2s);
        REQUIRE(got.size() == 1);
        CHECK(got[0].env.id == e.id);
        CHECK(co_await broker.ack(got[0]));
        stem::task_status st;
        st.id = e.id;
        st.name = e.name;
        st.state = stem::task_state::succeeded;
        st.result = "42";
        co_await backend.set(st, std::nullopt);
        auto back = co_await backend.wait(e.id, 2s);
        REQUIRE(back);
        CHECK(back->result == "42");
    });
    // A server whose certificate the given CA did not sign is refused.
    ::setenv("STEM_TLS_CA_CERT", "/etc/ssl/certs/ca-certificates.crt", 1);
    stem_test::run([&]() -> awaitable<void> {
        auto broker = stem::make_broker(std::string(url) + "?namespace=" + ns);
        std::string what;
        try {
            co_await broker.stats("tls-q"s);
        } catch (const std::exception& e) {
            what = e.what();
        }
        INFO(what);
        CHECK(what.find("cannot connect") != std::string::npos);
        CHECK(what.find("certificate verify failed") != std::string::npos);
    });
    ::unsetenv("STEM_TLS_CA_CERT");
}

TEST_CASE("adapters.redis: the URL's database is selected, and scripts flushed from the server are loaded again") {
    auto url = redis_url();
    REQUIRE(url.ends_with("/0"));
    auto db5 = url.substr(0, url.size() - 1) + "5";
    auto ns = fresh_namespace();
    stem_test::run([&]() -> awaitable<void> {
        auto broker = stem::make_broker(db5 + "?namespace=" + ns);
        auto e = broker_kit::make_env("db-q");
        co_await broker.publish(e);
        stem::redis::client in5(stem::redis::config::from_url(db5)), in0(stem::redis::config::from_url(url));
        stem::redis::request exists;
        exists.push("EXISTS", "{" + ns + "}:queues");
        stem::redis::request exists_too = exists;
        auto r5 = co_await in5.exec(std::move(exists));
        auto r0 = co_await in0.exec(std::move(exists_too));
        CHECK(stem::redis::integer(*r5.at(0)) == 1);
        CHECK(stem::redis::integer(*r0.at(0)) == 0);

        stem::redis::request flush;
        flush.push("SCRIPT", "FLUSH");
        co_await in5.exec(std::move(flush));
        auto got = co_await broker.consume(broker_kit::sub_of("db-q"s), 1, 2s);  // consume: NOSCRIPT, load, again
        REQUIRE(got.size() == 1);
        CHECK(got[0].env.id == e.id);
        stem::redis::request flush_again;
        flush_again.push("SCRIPT", "FLUSH");
        co_await in5.exec(std::move(flush_again));
        CHECK(co_await broker.ack(got[0]));  // plain commands
        auto st = co_await broker.stats("db-q"s);  // one script call: NOSCRIPT, load, again
        CHECK(st.pending + st.inflight == 0);
    });
}
