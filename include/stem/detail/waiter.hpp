// stem/detail: internals, never included by users directly.
// waiter.hpp — one coroutine waiting for a wake-up from any thread, with a deadline.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

namespace stem::detail {

/// A wake-up for one coroutine, safe from any thread. The object holds no I/O object, so
/// notifiers on other threads may keep it (and drop it last) after the waiting coroutine's
/// io_context is gone: the timer lives in the waiting coroutine's frame and is reachable
/// from here only while it waits. Every touch of that timer (arming, cancelling) happens
/// under the mutex, and the coroutine unhooks it before its frame lets it go.
class waiter {
public:
    waiter() = default;
    waiter(const waiter&) = delete;
    waiter& operator=(const waiter&) = delete;

    /// Wakes the waiter (now, or as soon as it starts waiting).
    void notify() {
        std::lock_guard lk(mu_);
        fired_ = true;
        if (armed_) armed_->cancel();  // completes through the waiter's own executor
    }

    /// Waits until notified (true) or `deadline` (false). Cancellation of the
    /// calling coroutine throws operation_aborted.
    boost::asio::awaitable<bool> wait_until(std::chrono::steady_clock::time_point deadline) {
        if (take_fired()) co_return true;
        boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
        unhook guard{this};
        boost::system::error_code ec;
        auto token = boost::asio::redirect_error(boost::asio::use_awaitable, ec);
        co_await boost::asio::async_initiate<decltype(token), void(boost::system::error_code)>(
            [this, &timer, deadline](auto handler) {
                std::lock_guard lk(mu_);
                timer.expires_at(deadline);
                timer.async_wait(std::move(handler));
                armed_ = &timer;
                if (fired_) timer.cancel();  // notified since the check above
            },
            token);
        if (take_fired()) co_return true;
        if (ec == boost::asio::error::operation_aborted)
            throw boost::system::system_error(ec, "stem: wait cancelled");
        co_return false;
    }

private:
    /// Unhooks the waiting coroutine's timer when its wait ends, or its frame is destroyed.
    /// (A class of its own: GCC 12 cannot mangle a local class in a coroutine.)
    struct unhook {
        waiter* w;
        ~unhook() {
            std::lock_guard lk(w->mu_);
            w->armed_ = nullptr;
        }
    };

    bool take_fired() {
        std::lock_guard lk(mu_);
        return std::exchange(fired_, false);
    }

    std::mutex mu_;
    bool fired_ = false;
    boost::asio::steady_timer* armed_ = nullptr;  ///< the waiting coroutine's timer, while it waits
};

/// The waiters of one store that any change may concern (waiting consumers): each is
/// woken once by the next change, then registers again before it looks. Thread-safe.
class waiter_set {
public:
    void add(const std::shared_ptr<waiter>& w) {
        std::lock_guard lk(mu_);
        if (std::find(waiters_.begin(), waiters_.end(), w) == waiters_.end()) waiters_.push_back(w);
    }
    void drop(const std::shared_ptr<waiter>& w) {
        std::lock_guard lk(mu_);
        std::erase(waiters_, w);
    }
    /// Wakes every registered waiter and forgets them.
    void wake_all() {
        std::vector<std::shared_ptr<waiter>> woken;
        {
            std::lock_guard lk(mu_);
            woken.swap(waiters_);
        }
        for (auto& w : woken) w->notify();
    }

private:
    std::mutex mu_;
    std::vector<std::shared_ptr<waiter>> waiters_;
};

/// Converts a wall-clock deadline to the steady clock for timers.
template <class WallTimePoint>
std::chrono::steady_clock::time_point steady_deadline(WallTimePoint wall) {
    auto now_wall = WallTimePoint::clock::now();
    auto left = wall - now_wall;
    if (left < decltype(left)::zero()) left = decltype(left)::zero();
    return std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
}

}  // namespace stem::detail
