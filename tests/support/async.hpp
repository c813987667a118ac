// Test support: run a coroutine to completion on a fresh io_context, with a guard timeout.
#pragma once

#include <stem/contracts/broker.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace stem_test {

using namespace std::chrono_literals;
template <class T>
using awaitable = boost::asio::awaitable<T>;

/// Runs `make()`'s coroutine on `io` until it and everything it spawned finish.
/// Fails if that takes longer than `guard`.
template <class F>
void run(boost::asio::io_context& io, F make, std::chrono::milliseconds guard = 30s) {
    std::exception_ptr failure;
    bool done = false;
    boost::asio::co_spawn(io, make(), [&](std::exception_ptr ep) {
        failure = ep;
        done = true;
    });
    io.restart();
    auto until = std::chrono::steady_clock::now() + guard;
    while (!done && std::chrono::steady_clock::now() < until) {
        if (io.run_one_for(100ms) == 0 && io.stopped()) io.restart();
    }
    if (!done) throw std::runtime_error("test coroutine did not finish within its guard time");
    if (failure) std::rethrow_exception(failure);
}

template <class F>
void run(F make, std::chrono::milliseconds guard = 30s) {
    boost::asio::io_context io;
    run(io, std::move(make), guard);
}

/// Waits `d` of real time (for deadlines and TTLs to pass; never for synchronisation).
inline awaitable<void> elapse(std::chrono::milliseconds d) {
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, d);
    co_await t.async_wait(boost::asio::use_awaitable);
}

}  // namespace stem_test
