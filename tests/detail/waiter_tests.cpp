// detail::waiter: wake-ups from any thread, deadlines, cancellation, and a waiter that
// outlives the io_context of the coroutine that waited on it (the sanitizer pass checks
// that no I/O object of a dead context is touched).
#include "support/async.hpp"

#include <stem/detail/waiter.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <memory>
#include <thread>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

using namespace std::chrono_literals;
using stem::detail::waiter;

namespace {
std::chrono::steady_clock::time_point in(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }
}  // namespace

TEST_CASE("detail.waiter: a notify before the wait is kept, and a deadline ends the wait") {
    auto w = std::make_shared<waiter>();
    stem_test::run([&]() -> stem_test::awaitable<void> {
        w->notify();
        CHECK(co_await w->wait_until(in(10s)));   // at once
        CHECK_FALSE(co_await w->wait_until(in(20ms)));  // the notify was used up
    });
}

TEST_CASE("detail.waiter: notified from other threads while the io_context runs on two threads") {
    boost::asio::io_context io;
    auto work = boost::asio::make_work_guard(io);
    std::thread second([&] { io.run(); });
    auto w = std::make_shared<waiter>();
    std::atomic<int> woken{0};
    std::atomic<bool> waiting{false};
    std::promise<void> finished;
    boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> {
        for (int i = 0; i < 200; ++i) {
            waiting = true;
            if (co_await w->wait_until(in(10s))) ++woken;
        }
    }, [&](std::exception_ptr) { finished.set_value(); });
    std::atomic<bool> quit{false};
    std::thread notifier([&] {
        while (woken < 200 && !quit) {
            if (waiting.exchange(false)) w->notify();
            std::this_thread::yield();
        }
    });
    std::thread runner([&] { io.run(); });
    auto f = finished.get_future();
    bool done = f.wait_for(30s) == std::future_status::ready;
    quit = true;
    work.reset();
    io.stop();
    notifier.join();
    runner.join();
    second.join();
    CHECK(done);
    CHECK(woken == 200);
}

TEST_CASE("detail.waiter: cancelling the waiting coroutine throws operation_aborted") {
    auto w = std::make_shared<waiter>();
    bool aborted = false;
    stem_test::run([&]() -> stem_test::awaitable<void> {
        boost::asio::cancellation_signal sig;
        bool over = false;
        boost::asio::co_spawn(co_await boost::asio::this_coro::executor,
                              [&]() -> boost::asio::awaitable<void> {
                                  try {
                                      co_await w->wait_until(in(10s));
                                  } catch (const boost::system::system_error& e) {
                                      aborted = e.code() == boost::asio::error::operation_aborted;
                                  }
                                  over = true;
                              },
                              boost::asio::bind_cancellation_slot(sig.slot(), boost::asio::detached));
        co_await stem_test::elapse(20ms);
        sig.emit(boost::asio::cancellation_type::terminal);
        while (!over) co_await stem_test::elapse(5ms);
    });
    CHECK(aborted);
}

TEST_CASE("detail.waiter: kept and notified by another thread after the waiting coroutine's io_context is gone") {
    auto w = std::make_shared<waiter>();
    {
        boost::asio::io_context io;
        boost::asio::co_spawn(io, [w]() -> boost::asio::awaitable<void> { co_await w->wait_until(in(1h)); },
                              boost::asio::detached);
        io.run_for(20ms);  // the coroutine is now suspended on its timer
    }  // the context, and with it the suspended coroutine, is destroyed here
    std::thread other([w = std::move(w)]() mutable {
        w->notify();  // nobody waits: the wake-up is kept
        auto keep = w;
        w.reset();
        stem_test::run([&]() -> stem_test::awaitable<void> { CHECK(co_await keep->wait_until(in(10s))); });
        keep.reset();  // the last reference goes on this thread
    });
    other.join();
}
