// The broker contract kit: every adapter runs these cases through STEM_BROKER_CONTRACT_TESTS.
//
// A fixture F provides:
//   static B make();          // a broker on a fresh, empty store (own namespace/database)
//   static B peer(B& b);      // a second instance on the same store (a second connection)
#pragma once

#include "support/async.hpp"

#include <stem/contracts/broker.hpp>
#include <stem/core/task_id.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

namespace broker_kit {

using namespace std::string_literals;

using namespace std::chrono_literals;
using stem_test::awaitable;
using stem_test::elapse;

// No string-literal default arguments here: GCC 12 rejects them when evaluated inside
// coroutine lambdas of templates ("array used as initializer").
inline stem::envelope make_env(std::string queue, int priority, std::string name) {
    stem::envelope e;
    e.id = stem::make_task_id();
    e.name = std::move(name);
    e.args = R"({"n":1})";
    e.queue = std::move(queue);
    e.priority = priority;
    // Time points travel with microsecond precision.
    e.enqueued_at = std::chrono::floor<std::chrono::microseconds>(stem::clock::now());
    return e;
}
inline stem::envelope make_env(std::string queue, int priority) { return make_env(std::move(queue), priority, std::string("kit.task")); }
inline stem::envelope make_env(std::string queue) { return make_env(std::move(queue), 0); }

// Built without initializer lists: GCC 12 also rejects those across co_await in these lambdas.
inline stem::subscription sub_of(std::string queue, std::string consumer) {
    stem::subscription s;
    s.queues.clear();
    s.queues.push_back(std::move(queue));
    s.consumer = std::move(consumer);
    return s;
}
inline stem::subscription sub_of(std::string queue) { return sub_of(std::move(queue), std::string("c1")); }
inline stem::subscription sub_of2(std::string q1, std::string q2) {
    auto s = sub_of(std::move(q1));
    s.queues.push_back(std::move(q2));
    return s;
}

/// For a broker whose idle consumers poll rarely (the caller sets its poll interval far
/// beyond these waits): a waiting consumer takes a delayed task when it falls due, and an
/// expired lease at once, so neither can have been found by a poll.
template <class B>
stem_test::awaitable<void> wakes_when_delay_and_lease_end(B& b) {
    auto e = make_env("default");
    e.not_before = stem::clock::now() + 300ms;
    e.visibility_timeout = 400ms;
    co_await b.publish(e);
    auto sub = sub_of("default");
    auto t0 = std::chrono::steady_clock::now();
    auto got = co_await b.consume(sub, 1, 20s);  // waits: nothing is visible yet
    auto waited = std::chrono::steady_clock::now() - t0;
    REQUIRE(got.size() == 1);
    CHECK(got[0].env.id == e.id);
    CHECK(stem::clock::now() >= *e.not_before);
    CHECK(waited < 5s);
    // Not acked: its lease runs out after 400 ms and the waiting consumer takes it again.
    t0 = std::chrono::steady_clock::now();
    auto again = co_await b.consume(sub, 1, 20s);
    waited = std::chrono::steady_clock::now() - t0;
    REQUIRE(again.size() == 1);
    CHECK(again[0].env.id == e.id);
    CHECK(waited < 5s);
    CHECK(co_await b.ack(again[0]));
}

template <class F>
void publish_consume_ack_once() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("q");
        co_await b.publish(e);
        auto got = co_await b.consume(sub_of("q"s), 10, 2s);
        REQUIRE(got.size() == 1);
        CHECK(got[0].env == e);
        CHECK(got[0].queue == "q");
        CHECK(co_await b.ack(got[0]));
        auto again = co_await b.consume(sub_of("q"s), 10, 100ms);
        CHECK(again.empty());
        auto st = co_await b.stats("q"s);
        CHECK(st.pending == 0);
        CHECK(st.inflight == 0);
        CHECK_FALSE(co_await b.ack(got[0]));  // a second ack of the same delivery is refused
    });
}

template <class F>
void batch_publish_delivers_all() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        std::vector<stem::envelope> batch;
        std::set<std::string> ids;
        for (int i = 0; i < 50; ++i) {
            batch.push_back(make_env("bq"));
            ids.insert(batch.back().id);
        }
        co_await b.publish_batch(batch);
        {
            auto v_ = co_await b.stats("bq"s);
            CHECK(v_.pending == 50);
        }
        std::set<std::string> seen;
        while (seen.size() < 50) {
            auto got = co_await b.consume(sub_of("bq"s), 20, 1s);
            REQUIRE_FALSE(got.empty());
            CHECK(got.size() <= 20);
            for (auto& d : got) {
                CHECK(seen.insert(d.env.id).second);
                CHECK(co_await b.ack(d));
            }
        }
        CHECK(seen == ids);
    });
}

template <class F>
void delayed_hidden_until_due() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("dq");
        e.not_before = stem::clock::now() + 600ms;
        co_await b.publish(e);
        auto st = co_await b.stats("dq"s);
        CHECK(st.pending == 0);
        CHECK(st.delayed == 1);
        {
            auto v_ = co_await b.consume(sub_of("dq"s), 10, 0ms);
            CHECK(v_.empty());
        }
        auto t0 = stem::clock::now();
        auto got = co_await b.consume(sub_of("dq"s), 10, 5s);  // waits until it is due
        REQUIRE(got.size() == 1);
        CHECK(got[0].env.id == e.id);
        CHECK(stem::clock::now() >= *e.not_before);
        CHECK(stem::clock::now() - t0 < 3s);
        CHECK(co_await b.ack(got[0]));
    });
}

template <class F>
void priority_order() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto low = make_env("pq", 0), mid = make_env("pq", 5), high = make_env("pq", 9);
        co_await b.publish(low);
        co_await b.publish(mid);
        co_await b.publish(high);
        std::vector<std::string> order;
        while (order.size() < 3) {
            auto got = co_await b.consume(sub_of("pq"s), 1, 1s);
            REQUIRE(got.size() == 1);
            order.push_back(got[0].env.id);
            co_await b.ack(got[0]);
        }
        CHECK(order == std::vector<std::string>{high.id, mid.id, low.id});
    });
}

/// A backlog over three priorities and two queues, taken a few at a time: never more than
/// asked for, every envelope once, higher priorities first.
template <class F>
void priority_backlog_in_batches() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        std::vector<stem::envelope> batch;
        std::map<std::string, int> priority_of;
        for (int i = 0; i < 10; ++i)
            for (int p : {0, 5, 9}) {
                batch.push_back(make_env(i % 2 ? "pa" : "pb", p));
                priority_of[batch.back().id] = p;
            }
        co_await b.publish_batch(batch);
        std::vector<int> order;
        std::set<std::string> seen;
        while (order.size() < batch.size()) {
            auto got = co_await b.consume(sub_of2("pa"s, "pb"s), 4, 1s);
            REQUIRE(!got.empty());
            CHECK(got.size() <= 4);
            for (auto& d : got) {
                CHECK(seen.insert(d.env.id).second);
                order.push_back(priority_of.at(d.env.id));
                CHECK(co_await b.ack(d));
            }
        }
        CHECK(std::is_sorted(order.rbegin(), order.rend()));
        auto more = co_await b.consume(sub_of2("pa"s, "pb"s), 4, 200ms);
        CHECK(more.empty());
    });
}

template <class F>
void priority_across_queues() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto a_low = make_env("qa", 1), b_high = make_env("qb", 8), a_mid = make_env("qa", 4);
        co_await b.publish(a_low);
        co_await b.publish(b_high);
        co_await b.publish(a_mid);
        std::vector<std::string> order;
        while (order.size() < 3) {
            auto got = co_await b.consume(sub_of2("qa"s, "qb"s), 1, 1s);
            REQUIRE(got.size() == 1);
            order.push_back(got[0].env.id);
            co_await b.ack(got[0]);
        }
        CHECK(order == std::vector<std::string>{b_high.id, a_mid.id, a_low.id});
    });
}

template <class F>
void nack_requeue_or_drop() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("nq");
        co_await b.publish(e);
        auto got = co_await b.consume(sub_of("nq"s), 1, 1s);
        REQUIRE(got.size() == 1);
        CHECK(co_await b.nack(got[0], true));
        auto again = co_await b.consume(sub_of("nq"s), 1, 1s);
        REQUIRE(again.size() == 1);
        CHECK(again[0].env.id == e.id);
        CHECK(co_await b.nack(again[0], false));
        {
            auto v_ = co_await b.consume(sub_of("nq"s), 1, 200ms);
            CHECK(v_.empty());
        }
        auto st = co_await b.stats("nq"s);
        CHECK(st.pending == 0);
        CHECK(st.inflight == 0);
    });
}

template <class F>
void lease_expiry_redelivers_and_refuses_stale_ack() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("lq");
        e.visibility_timeout = 300ms;
        co_await b.publish(e);
        auto first = co_await b.consume(sub_of("lq"s, "c1"s), 1, 1s);
        REQUIRE(first.size() == 1);
        auto second = co_await b.consume(sub_of("lq"s, "c2"s), 1, 5s);  // arrives once the lease runs out
        REQUIRE(second.size() == 1);
        CHECK(second[0].env.id == e.id);
        CHECK_FALSE(co_await b.ack(first[0]));                // the old holder lost its lease
        CHECK_FALSE(co_await b.extend_lease(first[0], 10s));
        CHECK(co_await b.ack(second[0]));
        {
            auto v_ = co_await b.stats("lq"s);
            CHECK(v_.inflight == 0);
        }
    });
}

template <class F>
void extend_lease_postpones_redelivery() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("xq");
        e.visibility_timeout = 300ms;
        co_await b.publish(e);
        auto got = co_await b.consume(sub_of("xq"s), 1, 1s);
        REQUIRE(got.size() == 1);
        CHECK(co_await b.extend_lease(got[0], 3s));
        {
            auto v_ = co_await b.consume(sub_of("xq"s, "other"s), 1, 900ms);
            CHECK(v_.empty());
        }
        CHECK(co_await b.ack(got[0]));  // same delivery still holds the lease
        {
            auto v_ = co_await b.stats("xq"s);
            CHECK(v_.inflight == 0);
        }
    });
}

template <class F>
void per_envelope_visibility_timeout() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto quick = make_env("vq"), slow = make_env("vq");
        quick.visibility_timeout = 300ms;
        slow.visibility_timeout = 30s;
        co_await b.publish(quick);
        co_await b.publish(slow);
        auto got = co_await b.consume(sub_of("vq"s), 2, 1s);
        REQUIRE(got.size() == 2);
        auto re = co_await b.consume(sub_of("vq"s, "c2"s), 2, 3s);
        REQUIRE(re.size() == 1);
        CHECK(re[0].env.id == quick.id);
        CHECK(co_await b.ack(re[0]));
        {
            auto v_ = co_await b.consume(sub_of("vq"s, "c2"s), 2, 500ms);
            CHECK(v_.empty());
        }
        for (auto& d : got)
            if (d.env.id == slow.id) CHECK(co_await b.ack(d));
    });
}

template <class F>
void blocked_consumer_does_not_delay_another() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto b2 = F::peer(b);
        auto ex = co_await boost::asio::this_coro::executor;
        boost::asio::cancellation_signal cancel_a;
        bool a_done = false;
        bool a_aborted = false;
        // Consumer A blocks on an empty queue.
        boost::asio::co_spawn(ex, [&]() -> awaitable<void> {
            try {
                auto got = co_await b.consume(sub_of("empty-q"s, "a"s), 1, 20s);
                CHECK(got.empty());
            } catch (const boost::system::system_error& e) {
                a_aborted = e.code() == boost::asio::error::operation_aborted;
            }
            a_done = true;
        }, boost::asio::bind_cancellation_slot(cancel_a.slot(), boost::asio::detached));
        co_await elapse(50ms);
        auto t0 = std::chrono::steady_clock::now();
        auto e = make_env("busy-q");
        co_await b2.publish(e);
        auto got = co_await b2.consume(sub_of("busy-q"s, "b"s), 1, 10s);
        REQUIRE(got.size() == 1);
        CHECK(std::chrono::steady_clock::now() - t0 < 2s);
        CHECK_FALSE(a_done);
        co_await b2.ack(got[0]);
        // Cancelling A's wait ends it promptly.
        cancel_a.emit(boost::asio::cancellation_type::terminal);
        for (int i = 0; i < 100 && !a_done; ++i) co_await elapse(20ms);
        CHECK(a_done);
        CHECK(a_aborted);
    });
}

template <class F>
void dead_letters_list_show_replay_purge() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        std::vector<stem::envelope> envs;
        for (int i = 0; i < 3; ++i) {
            envs.push_back(make_env("dlq"));
            co_await b.publish(envs.back());
        }
        auto got = co_await b.consume(sub_of("dlq"s), 3, 1s);
        REQUIRE(got.size() == 3);
        for (auto& d : got) CHECK(co_await b.dead_letter(d, "boom: "s + d.env.id));
        auto st = co_await b.stats("dlq"s);
        CHECK(st.dead == 3);
        CHECK(st.inflight == 0);
        auto page = co_await b.list_dead_letters("dlq"s, 2, 0);
        CHECK(page.total == 3);
        REQUIRE(page.items.size() == 2);
        auto page2 = co_await b.list_dead_letters("dlq"s, 10, 2);
        CHECK(page2.items.size() == 1);
        auto one = co_await b.get_dead_letter(got[1].env.id);
        REQUIRE(one);
        CHECK(one->reason == "boom: " + got[1].env.id);
        CHECK(one->env.id == got[1].env.id);
        CHECK_FALSE(co_await b.get_dead_letter("no-such-id"s));

        // Dry run reports and changes nothing.
        auto dry = co_await b.replay_dead_letters("dlq"s, {.limit = 1, .dry_run = true});
        CHECK(dry.size() == 1);
        {
            auto v_ = co_await b.stats("dlq"s);
            CHECK(v_.dead == 3);
        }
        {
            auto v_ = co_await b.stats("dlq"s);
            CHECK(v_.pending == 0);
        }

        // Replay with a delay: hidden until due.
        auto replayed = co_await b.replay_dead_letters("dlq"s, {.limit = 1, .dry_run = false, .delay = 500ms});
        REQUIRE(replayed.size() == 1);
        auto s2 = co_await b.stats("dlq"s);
        CHECK(s2.dead == 2);
        CHECK(s2.delayed == 1);
        {
            auto v_ = co_await b.consume(sub_of("dlq"s), 1, 0ms);
            CHECK(v_.empty());
        }
        auto back = co_await b.consume(sub_of("dlq"s), 1, 5s);
        REQUIRE(back.size() == 1);
        CHECK(back[0].env.id == replayed[0].env.id);
        CHECK(back[0].env.attempt == 0);
        co_await b.ack(back[0]);

        CHECK(co_await b.purge_dead_letters("dlq"s, true) == 2);
        {
            auto v_ = co_await b.stats("dlq"s);
            CHECK(v_.dead == 2);
        }
        CHECK(co_await b.purge_dead_letters("dlq"s, false) == 2);
        {
            auto v_ = co_await b.stats("dlq"s);
            CHECK(v_.dead == 0);
        }
    });
}

template <class F>
void purge_removes_waiting() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        co_await b.publish(make_env("purge-q"s));
        co_await b.publish(make_env("purge-q"s));
        auto later = make_env("purge-q");
        later.not_before = stem::clock::now() + 1h;
        co_await b.publish(later);
        CHECK(co_await b.purge("purge-q"s) == 3);
        auto st = co_await b.stats("purge-q"s);
        CHECK(st.pending == 0);
        CHECK(st.delayed == 0);
        {
            auto v_ = co_await b.consume(sub_of("purge-q"s), 5, 100ms);
            CHECK(v_.empty());
        }
    });
}

template <class F>
void retry_replaces_without_dead_letter() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("rq");
        co_await b.publish(e);
        auto got = co_await b.consume(sub_of("rq"s), 1, 1s);
        REQUIRE(got.size() == 1);
        auto next = got[0].env;
        next.attempt = 1;
        next.not_before = stem::clock::now() + 400ms;
        CHECK(co_await b.retry(got[0], next));
        auto st = co_await b.stats("rq"s);
        CHECK(st.dead == 0);
        CHECK(st.inflight == 0);
        CHECK(st.delayed == 1);
        {
            auto v_ = co_await b.list_dead_letters("rq"s, 10, 0);
            CHECK(v_.total == 0);
        }
        auto again = co_await b.consume(sub_of("rq"s), 1, 5s);
        REQUIRE(again.size() == 1);
        CHECK(again[0].env.id == e.id);
        CHECK(again[0].env.attempt == 1);
        CHECK(co_await b.ack(again[0]));
    });
}

template <class F>
void broadcast_once_per_subscriber() {
    stem_test::run([]() -> awaitable<void> {
        auto b1 = F::make();
        auto b2 = F::peer(b1);
        stem::subscription s1, s2;
        s1.queues = {};
        s1.broadcasts = {"control"};
        s1.consumer = "worker-1";
        s2 = s1;
        s2.consumer = "worker-2";
        // First reads register both subscribers.
        {
            auto v_ = co_await b1.consume(s1, 10, 0ms);
            CHECK(v_.empty());
        }
        {
            auto v_ = co_await b2.consume(s2, 10, 0ms);
            CHECK(v_.empty());
        }
        auto e = make_env("control", 0, "kit.ping");
        co_await b1.broadcast("control"s, e);
        auto got1 = co_await b1.consume(s1, 10, 2s);
        auto got2 = co_await b2.consume(s2, 10, 2s);
        REQUIRE(got1.size() == 1);
        REQUIRE(got2.size() == 1);
        CHECK(got1[0].env.id == e.id);
        CHECK(got2[0].env.id == e.id);
        CHECK(got1[0].broadcast);
        CHECK(co_await b1.ack(got1[0]));
        CHECK(co_await b2.ack(got2[0]));
        {
            auto v_ = co_await b1.consume(s1, 10, 200ms);
            CHECK(v_.empty());
        }
        {
            auto v_ = co_await b2.consume(s2, 10, 200ms);
            CHECK(v_.empty());
        }
    });
}

template <class F>
void stats_follow_lifecycle() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        co_await b.publish(make_env("sq"s));
        co_await b.publish(make_env("sq"s));
        auto s0 = co_await b.stats("sq"s);
        CHECK(s0.pending == 2);
        CHECK(s0.inflight == 0);
        auto got = co_await b.consume(sub_of("sq"s), 1, 1s);
        REQUIRE(got.size() == 1);
        auto s1 = co_await b.stats("sq"s);
        CHECK(s1.pending == 1);
        CHECK(s1.inflight == 1);
        co_await b.dead_letter(got[0], "bad"s);
        auto s2 = co_await b.stats("sq"s);
        CHECK(s2.inflight == 0);
        CHECK(s2.dead == 1);
        auto names = co_await b.queues();
        CHECK(std::find(names.begin(), names.end(), "sq") != names.end());
    });
}

template <class F>
void binary_payload_survives() {
    stem_test::run([]() -> awaitable<void> {
        auto b = F::make();
        auto e = make_env("binq");
        e.args = std::string("\x00\xff\xfe binary \x01\x80", 14);
        e.args_encoder = "custom-bin";
        e.headers["trace"] = "t-1";
        e.meta["k"] = "v";
        co_await b.publish(e);
        auto got = co_await b.consume(sub_of("binq"s), 1, 1s);
        REQUIRE(got.size() == 1);
        CHECK(got[0].env.args == e.args);
        CHECK(got[0].env == e);
        co_await b.ack(got[0]);
    });
}

}  // namespace broker_kit

/// Registers every broker contract case for fixture F under `label`.
#define STEM_BROKER_CONTRACT_TESTS(F, label)                                                                          \
    TEST_CASE("contract.broker[" label "]: publish, consume, ack delivers once") { broker_kit::publish_consume_ack_once<F>(); } \
    TEST_CASE("contract.broker[" label "]: batch publish delivers every envelope once") { broker_kit::batch_publish_delivers_all<F>(); } \
    TEST_CASE("contract.broker[" label "]: delayed task hidden and uncounted until due") { broker_kit::delayed_hidden_until_due<F>(); } \
    TEST_CASE("contract.broker[" label "]: priority order") { broker_kit::priority_order<F>(); }                  \
    TEST_CASE("contract.broker[" label "]: priority honoured across queues") { broker_kit::priority_across_queues<F>(); } \
    TEST_CASE("contract.broker[" label "]: a backlog over several priorities, a few at a time") { broker_kit::priority_backlog_in_batches<F>(); } \
    TEST_CASE("contract.broker[" label "]: nack requeue redelivers, nack drop does not") { broker_kit::nack_requeue_or_drop<F>(); } \
    TEST_CASE("contract.broker[" label "]: lease expiry redelivers the same id and a stale ack is refused") { broker_kit::lease_expiry_redelivers_and_refuses_stale_ack<F>(); } \
    TEST_CASE("contract.broker[" label "]: extending a lease postpones redelivery") { broker_kit::extend_lease_postpones_redelivery<F>(); } \
    TEST_CASE("contract.broker[" label "]: each envelope's visibility timeout is honoured") { broker_kit::per_envelope_visibility_timeout<F>(); } \
    TEST_CASE("contract.broker[" label "]: a blocked consumer does not delay another") { broker_kit::blocked_consumer_does_not_delay_another<F>(); } \
    TEST_CASE("contract.broker[" label "]: dead letters list, show, replay, purge") { broker_kit::dead_letters_list_show_replay_purge<F>(); } \
    TEST_CASE("contract.broker[" label "]: purge removes pending and delayed") { broker_kit::purge_removes_waiting<F>(); } \
    TEST_CASE("contract.broker[" label "]: retry replaces the delivery, no dead letter") { broker_kit::retry_replaces_without_dead_letter<F>(); } \
    TEST_CASE("contract.broker[" label "]: broadcast reaches each subscriber once") { broker_kit::broadcast_once_per_subscriber<F>(); } \
    TEST_CASE("contract.broker[" label "]: stats follow the lifecycle") { broker_kit::stats_follow_lifecycle<F>(); } \
    TEST_CASE("contract.broker[" label "]: binary payloads survive") { broker_kit::binary_payload_survives<F>(); }
