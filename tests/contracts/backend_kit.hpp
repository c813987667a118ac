// The result-backend contract kit: every adapter runs these cases through STEM_BACKEND_CONTRACT_TESTS.
//
// A fixture F provides:
//   static R make();          // a backend on a fresh, empty store
//   static R peer(R& r);      // a second instance on the same store (a second connection)
#pragma once

#include "support/async.hpp"

#include <stem/contracts/result_backend.hpp>
#include <stem/core/task_id.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <thread>
#include <vector>

namespace backend_kit {

using namespace std::string_literals;

using namespace std::chrono_literals;
using stem_test::awaitable;
using stem_test::elapse;

inline stem::time_point now_us() { return std::chrono::floor<std::chrono::microseconds>(stem::clock::now()); }

inline stem::task_status make_status(std::string id, stem::task_state s) {
    stem::task_status st;
    st.id = std::move(id);
    st.name = "kit.task";
    st.state = s;
    st.queue = "default";
    st.created_at = now_us();
    st.updated_at = now_us();
    return st;
}

template <class F>
void set_get_overwrite_clears_error() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        auto id = stem::make_task_id();
        CHECK_FALSE(co_await r.get(id));
        auto failed = make_status(id, stem::task_state::failed);
        failed.error = stem::task_error{"std::runtime_error", "boom", {{"line", 3}}, true};
        failed.attempt = 2;
        failed.meta["tenant"] = "acme";
        co_await r.set(failed, std::nullopt);
        auto got = co_await r.get(id);
        REQUIRE(got);
        CHECK(*got == failed);
        auto ok = make_status(id, stem::task_state::succeeded);
        ok.result = R"({"v":42})";
        co_await r.set(ok, std::nullopt);
        got = co_await r.get(id);
        REQUIRE(got);
        CHECK(got->state == stem::task_state::succeeded);
        CHECK_FALSE(got->error);
        CHECK(got->result == ok.result);
        CHECK(got->meta.empty());
    });
}

template <class F>
void watch_sees_running_then_succeeded() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        auto writer = F::peer(r);
        auto id = stem::make_task_id();
        auto w = co_await r.watch(id);
        co_await writer.set(make_status(id, stem::task_state::running), std::nullopt);
        auto first = co_await w.next(2s);
        REQUIRE(first);
        CHECK(first->state == stem::task_state::running);
        co_await writer.set(make_status(id, stem::task_state::succeeded), std::nullopt);
        auto second = co_await w.next(2s);
        REQUIRE(second);
        CHECK(second->state == stem::task_state::succeeded);
        CHECK_FALSE(co_await w.next(100ms));
    });
}

template <class F>
void wait_returns_on_terminal_and_times_out() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        auto writer = F::peer(r);
        auto id = stem::make_task_id();
        auto ex = co_await boost::asio::this_coro::executor;
        boost::asio::co_spawn(ex, [&writer, id]() -> awaitable<void> {
            co_await elapse(50ms);
            co_await writer.set(make_status(id, stem::task_state::running), std::nullopt);
            co_await elapse(100ms);
            co_await writer.set(make_status(id, stem::task_state::succeeded), std::nullopt);
        }, boost::asio::detached);
        auto t0 = std::chrono::steady_clock::now();
        auto st = co_await r.wait(id, 10s);
        REQUIRE(st);
        CHECK(st->state == stem::task_state::succeeded);
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);

        auto other = stem::make_task_id();
        co_await r.set(make_status(other, stem::task_state::running), std::nullopt);
        auto late = co_await r.wait(other, 200ms);
        REQUIRE(late);
        CHECK(late->state == stem::task_state::running);  // the latest, not terminal
        CHECK_FALSE(co_await r.wait(stem::make_task_id(), 100ms));
    });
}

template <class F>
void ttl_expiry() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        auto id = stem::make_task_id();
        co_await r.set(make_status(id, stem::task_state::succeeded), 300ms);
        CHECK(co_await r.get(id));
        co_await elapse(700ms);
        CHECK_FALSE(co_await r.get(id));
        CHECK(co_await r.count(stem::task_state::succeeded) == 0);
    });
}

template <class F>
void group_reinit_resets() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        auto gid = stem::make_task_id();
        std::vector<std::string> kids{stem::make_task_id(), stem::make_task_id()};
        stem::group_descriptor desc{gid, kids, {}};
        desc.meta["kind"] = "group";
        co_await r.init_group(desc, std::nullopt);
        CHECK(co_await r.add_group_result(gid, make_status(kids[0], stem::task_state::succeeded)) == 1);
        // The same child finishing twice (a redelivery) counts once.
        CHECK(co_await r.add_group_result(gid, make_status(kids[0], stem::task_state::succeeded)) == 1);
        CHECK(co_await r.claim_chord(gid));
        auto g = co_await r.get_group(gid);
        REQUIRE(g);
        CHECK(g->expected() == 2);
        CHECK(g->completed() == 1);
        CHECK(g->chord_claimed);
        CHECK(g->task_ids == kids);
        stem::group_descriptor again{gid, kids, {}};
        co_await r.init_group(again, std::nullopt);
        g = co_await r.get_group(gid);
        REQUIRE(g);
        CHECK(g->completed() == 0);
        CHECK_FALSE(g->chord_claimed);
        CHECK(co_await r.claim_chord(gid));
        CHECK_FALSE(co_await r.get_group("missing-group"s));
    });
}

/// Many completions from several threads, each with its own instance: the count is exact
/// and the chord is claimed exactly once.
template <class F>
void group_count_exact_under_concurrency() {
    auto r = F::make();
    auto gid = stem::make_task_id();
    constexpr int threads = 4, per_thread = 50;
    std::vector<std::string> kids;
    for (int i = 0; i < threads * per_thread; ++i) kids.push_back(stem::make_task_id());
    stem_test::run([&]() -> awaitable<void> { stem::group_descriptor desc{gid, kids, {}};
        co_await r.init_group(desc, std::nullopt);
    });
    std::atomic<int> claims{0};
    std::atomic<int> saw_last{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            auto mine = F::peer(r);
            stem_test::run([&]() -> awaitable<void> {
                for (int i = 0; i < per_thread; ++i) {
                    auto n = co_await mine.add_group_result(gid, make_status(kids[t * per_thread + i], stem::task_state::succeeded));
                    if (n == kids.size()) {
                        ++saw_last;
                        if (co_await mine.claim_chord(gid)) ++claims;
                    }
                }
                // Everyone tries to claim at the end as well: still exactly one winner.
                if (co_await mine.claim_chord(gid)) ++claims;
            });
        });
    }
    for (auto& th : pool) th.join();
    CHECK(saw_last == 1);
    CHECK(claims == 1);
    stem_test::run([&]() -> awaitable<void> {
        auto g = co_await r.get_group(gid);
        REQUIRE(g);
        CHECK(g->completed() == kids.size());
    });
}

template <class F>
void heartbeats_replace_list_expire() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        stem::worker_heartbeat a;
        a.worker_id = "w-a";
        a.host = "h1";
        a.pid = 10;
        a.queues = {"default"};
        a.inflight = 1;
        a.sent_at = now_us();
        co_await r.set_heartbeat(a, 10s);
        a.inflight = 7;
        co_await r.set_heartbeat(a, 10s);  // replaces
        stem::worker_heartbeat b = a;
        b.worker_id = "w-b";
        co_await r.set_heartbeat(b, 300ms);
        auto list = co_await r.list_heartbeats();
        REQUIRE(list.size() == 2);
        for (auto& hb : list)
            if (hb.worker_id == "w-a") CHECK(hb.inflight == 7);
        co_await elapse(700ms);
        list = co_await r.list_heartbeats();
        REQUIRE(list.size() == 1);
        CHECK(list[0].worker_id == "w-a");
    });
}

template <class F>
void list_and_count_by_state() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        for (int i = 0; i < 3; ++i) co_await r.set(make_status(stem::make_task_id(), stem::task_state::failed), std::nullopt);
        for (int i = 0; i < 2; ++i) co_await r.set(make_status(stem::make_task_id(), stem::task_state::succeeded), std::nullopt);
        CHECK(co_await r.count(stem::task_state::failed) == 3);
        CHECK(co_await r.count(stem::task_state::succeeded) == 2);
        CHECK(co_await r.count(std::nullopt) == 5);
        stem::status_filter first_two{.state = stem::task_state::failed, .limit = 2};
        auto failed = co_await r.list(first_two);
        CHECK(failed.size() == 2);
        for (auto& s : failed) CHECK(s.state == stem::task_state::failed);
        stem::status_filter after_two{.state = stem::task_state::failed, .limit = 10, .offset = 2};
        auto rest = co_await r.list(after_two);
        CHECK(rest.size() == 1);
        // A status that changes state is counted in its new state only.
        auto moving = stem::make_task_id();
        co_await r.set(make_status(moving, stem::task_state::running), std::nullopt);
        CHECK(co_await r.count(stem::task_state::running) == 1);
        co_await r.set(make_status(moving, stem::task_state::succeeded), std::nullopt);
        CHECK(co_await r.count(stem::task_state::running) == 0);
        CHECK(co_await r.count(stem::task_state::succeeded) == 3);
        CHECK(co_await r.count(std::nullopt) == 6);
    });
}

template <class F>
void binary_result_survives() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        auto id = stem::make_task_id();
        auto st = make_status(id, stem::task_state::succeeded);
        st.result = std::string("\x00\x01\xff\xfe bytes", 10);
        st.result_encoder = "custom-bin";
        co_await r.set(st, std::nullopt);
        auto got = co_await r.get(id);
        REQUIRE(got);
        CHECK(got->result == st.result);
        CHECK(got->result_encoder == "custom-bin");
    });
}

/// A backend that claims ordered writes never lets a `running` write, started and not
/// awaited (as the worker does), replace the task's next write. One that does not claim
/// it is not asked to.
template <class F>
void ordered_writes_keep_their_order() {
    stem_test::run([]() -> awaitable<void> {
        auto r = F::make();
        if (!r.capabilities().ordered_writes) co_return;
        auto ex = co_await boost::asio::this_coro::executor;
        std::vector<std::string> ids;
        auto pending = std::make_shared<std::atomic<int>>(0);
        // As a worker's slots do: each task's two writes started in turn, none awaited, the
        // tasks' writes interleaved (so a batching adapter sees both writes of a task at once).
        for (int i = 0; i < 200; ++i) {
            auto id = stem::make_task_id();
            ids.push_back(id);
            for (auto st : {stem::task_state::running, stem::task_state::succeeded}) {
                ++*pending;
                boost::asio::co_spawn(ex, r.set(make_status(id, st), std::nullopt), [pending](std::exception_ptr) { --*pending; });
            }
        }
        while (*pending > 0) co_await elapse(5ms);
        int out_of_order = 0;
        for (auto& id : ids) {
            auto got = co_await r.get(id);
            if (!got || got->state != stem::task_state::succeeded) ++out_of_order;
        }
        CHECK(out_of_order == 0);
        // The listing by state agrees: no task is still indexed as running.
        CHECK(co_await r.count(stem::task_state::running) == 0);
        stem::status_filter running{.state = stem::task_state::running, .limit = 500};
        auto listed = co_await r.list(running);
        CHECK(listed.empty());
        CHECK(co_await r.count(stem::task_state::succeeded) == ids.size());
    });
}

}  // namespace backend_kit

/// Registers every result-backend contract case for fixture F under `label`.
#define STEM_BACKEND_CONTRACT_TESTS(F, label)                                                                          \
    TEST_CASE("contract.backend[" label "]: set, get, overwrite clears the error") { backend_kit::set_get_overwrite_clears_error<F>(); } \
    TEST_CASE("contract.backend[" label "]: watch sees running then succeeded") { backend_kit::watch_sees_running_then_succeeded<F>(); } \
    TEST_CASE("contract.backend[" label "]: wait returns on a terminal state, or the latest on timeout") { backend_kit::wait_returns_on_terminal_and_times_out<F>(); } \
    TEST_CASE("contract.backend[" label "]: TTL expiry") { backend_kit::ttl_expiry<F>(); }                           \
    TEST_CASE("contract.backend[" label "]: re-initialising a group resets it") { backend_kit::group_reinit_resets<F>(); } \
    TEST_CASE("contract.backend[" label "]: group count exact and chord claimed once under concurrency") { backend_kit::group_count_exact_under_concurrency<F>(); } \
    TEST_CASE("contract.backend[" label "]: heartbeats replace, list and expire") { backend_kit::heartbeats_replace_list_expire<F>(); } \
    TEST_CASE("contract.backend[" label "]: list and count by state") { backend_kit::list_and_count_by_state<F>(); } \
    TEST_CASE("contract.backend[" label "]: binary results survive") { backend_kit::binary_result_survives<F>(); } \
    TEST_CASE("contract.backend[" label "]: a running write not awaited never replaces the next write") { backend_kit::ordered_writes_keep_their_order<F>(); }
