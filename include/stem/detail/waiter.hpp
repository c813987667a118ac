// stem/detail: internals, never included by users directly.
// waiter.hpp — one coroutine waiting for a wake-up from any thread, with a deadline.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

namespace stem::detail {

/// A wake-up for one coroutine, safe from any thread and on any executor. The
/// timer lives on a strand of the waiter's executor: `notify` posts to that strand,
/// and `wait_until` enters it before arming the timer, so the two never overlap
/// even when the waiting coroutine runs on a multi-threaded io_context.
class waiter : public std::enable_shared_from_this<waiter> {
public:
    explicit waiter(boost::asio::any_io_executor ex) : strand_(boost::asio::make_strand(std::move(ex))), timer_(strand_) {}

    /// Wakes the waiter (now, or as soon as it starts waiting).
    void notify() {
        boost::asio::post(strand_, [self = shared_from_this()] {
            self->fired_ = true;
            self->timer_.cancel();
        });
    }

    /// Waits until notified (true) or `deadline` (false). Cancellation of the
    /// calling coroutine throws operation_aborted.
    boost::asio::awaitable<bool> wait_until(std::chrono::steady_clock::time_point deadline) {
        co_await boost::asio::dispatch(strand_, boost::asio::use_awaitable);
        if (fired_.exchange(false)) co_return true;
        timer_.expires_at(deadline);
        boost::system::error_code ec;
        co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
        if (fired_.exchange(false)) co_return true;
        if (ec == boost::asio::error::operation_aborted)
            throw boost::system::system_error(ec, "stem: wait cancelled");
        co_return false;
    }

private:
    boost::asio::strand<boost::asio::any_io_executor> strand_;
    boost::asio::steady_timer timer_;
    std::atomic<bool> fired_{false};
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
