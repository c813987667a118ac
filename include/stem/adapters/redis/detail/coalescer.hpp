// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/coalescer.hpp — many small calls made at about the same time become one: while
// batches are at the server, the next one gathers (acks, status writes).
#pragma once

#include <stem/detail/posted_handler.hpp>
#include <stem/detail/serial_executor.hpp>

#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace stem::redis::detail {

/// Runs `run_batch(items)` for the items submitted while earlier batches were in progress;
/// each caller gets its own element of the result. At most `max_in_flight` batches are in
/// progress at a time, and at most `max_batch` items go in one. Batches run on one strand
/// and are taken in submission order, so when `run_batch` sends its request before its first
/// real suspension (as a pipelined connection's exec does), requests go out in that order.
template <class Item, class Result>
class coalescer : public std::enable_shared_from_this<coalescer<Item, Result>> {
public:
    using batch_fn = std::function<boost::asio::awaitable<std::vector<Result>>(std::vector<Item>&)>;

    coalescer(const boost::asio::any_io_executor& ex, batch_fn f, std::size_t max_batch, std::size_t max_in_flight)
        : strand_(stem::detail::serial_executor(ex)), run_(std::move(f)), max_(max_batch), max_in_flight_(max_in_flight) {}

    boost::asio::awaitable<Result> submit(Item item) {
        return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, Result)>(
            [self = this->shared_from_this()](auto handler, Item it) {
                auto h = stem::detail::make_posted_handler<std::exception_ptr, Result>(std::move(handler));
                bool start = false;
                {
                    std::lock_guard lk(self->mu_);
                    self->items_.push_back(std::move(it));
                    self->waiting_.push_back(std::move(h));
                    start = self->in_flight_ < self->max_in_flight_ && self->items_.size() > self->in_flight_ * self->max_ / 2;
                    if (start) ++self->in_flight_;
                }
                if (start) boost::asio::co_spawn(self->strand_, self->drain(), boost::asio::detached);
            },
            boost::asio::use_awaitable, std::move(item));
    }

private:
    using handler = stem::detail::posted_handler<std::exception_ptr, Result>;

    boost::asio::awaitable<void> drain() {
        auto self = this->shared_from_this();
        for (;;) {
            std::vector<Item> items;
            std::vector<std::unique_ptr<handler>> hs;
            {
                std::lock_guard lk(mu_);
                if (items_.empty()) {
                    --in_flight_;
                    co_return;
                }
                auto n = std::min(max_, items_.size());
                items.assign(std::make_move_iterator(items_.begin()), std::make_move_iterator(items_.begin() + n));
                hs.assign(std::make_move_iterator(waiting_.begin()), std::make_move_iterator(waiting_.begin() + n));
                items_.erase(items_.begin(), items_.begin() + n);
                waiting_.erase(waiting_.begin(), waiting_.begin() + n);
            }
            std::exception_ptr failure;
            std::vector<Result> results;
            try {
                results = co_await run_(items);
                if (results.size() != hs.size()) throw std::logic_error("coalescer: one result per item expected");
            } catch (...) {
                failure = std::current_exception();
            }
            if (failure) results.assign(hs.size(), Result{});
            complete_all(std::move(hs), failure, std::move(results));
        }
    }

    /// Answers the callers of a batch with one post per executor (typically one, the
    /// application's), not one per caller.
    static void complete_all(std::vector<std::unique_ptr<handler>> hs, std::exception_ptr failure, std::vector<Result> results) {
        using answer = std::pair<std::unique_ptr<handler>, Result>;
        std::vector<answer> left;
        for (std::size_t i = 0; i < hs.size(); ++i) left.emplace_back(std::move(hs[i]), std::move(results[i]));
        while (!left.empty()) {
            auto ex = left.front().first->executor();
            auto group = std::make_shared<std::vector<answer>>();
            std::vector<answer> others;
            for (auto& a : left) (a.first->executor() == ex ? *group : others).push_back(std::move(a));
            boost::asio::post(ex, [group, failure, ex] { invoke_from(group, 0, failure, ex); });
            left = std::move(others);
        }
    }

    /// Runs the handlers of `group` from `first` on; should one throw, the rest are posted
    /// again before the exception leaves (as separately posted handlers would be).
    template <class Group>
    static void invoke_from(const std::shared_ptr<Group>& group, std::size_t first, std::exception_ptr failure,
                            const boost::asio::any_io_executor& ex) {
        for (auto i = first; i < group->size(); ++i) {
            try {
                (*group)[i].first->invoke(failure, std::move((*group)[i].second));
            } catch (...) {
                if (i + 1 < group->size()) boost::asio::post(ex, [group, i, failure, ex] { invoke_from(group, i + 1, failure, ex); });
                throw;
            }
        }
    }

    boost::asio::any_io_executor strand_;  ///< a strand (see serial_executor)
    batch_fn run_;
    std::size_t max_, max_in_flight_;
    std::mutex mu_;
    std::vector<Item> items_;
    std::vector<std::unique_ptr<handler>> waiting_;
    std::size_t in_flight_ = 0;  ///< drain loops running
};

}  // namespace stem::redis::detail
