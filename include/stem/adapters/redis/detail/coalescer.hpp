// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/coalescer.hpp — many small calls made at about the same time become one: while
// one batch is at the server, the next one gathers (acks, status writes).
#pragma once

#include <stem/detail/posted_handler.hpp>

#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace stem::redis::detail {

/// Runs `run_batch(items)` for every item submitted while the previous batch was in
/// progress; each caller gets its own element of the result. At most one batch is in
/// progress at a time, and at most `max_batch` items go in one.
template <class Item, class Result>
class coalescer : public std::enable_shared_from_this<coalescer<Item, Result>> {
public:
    using batch_fn = std::function<boost::asio::awaitable<std::vector<Result>>(std::vector<Item>&)>;

    coalescer(batch_fn f, std::size_t max_batch) : run_(std::move(f)), max_(max_batch) {}

    boost::asio::awaitable<Result> submit(Item item) {
        return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, Result)>(
            [self = this->shared_from_this()](auto handler, Item it) {
                auto ex = boost::asio::get_associated_executor(handler);
                auto h = stem::detail::make_posted_handler<std::exception_ptr, Result>(std::move(handler));
                bool start = false;
                {
                    std::lock_guard lk(self->mu_);
                    self->items_.push_back(std::move(it));
                    self->waiting_.push_back(std::move(h));
                    start = !std::exchange(self->busy_, true);
                }
                if (start) boost::asio::co_spawn(ex, self->drain(), boost::asio::detached);
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
                    busy_ = false;
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
            for (std::size_t i = 0; i < hs.size(); ++i) hs[i]->complete(failure, failure ? Result{} : std::move(results[i]));
        }
    }

    batch_fn run_;
    std::size_t max_;
    std::mutex mu_;
    std::vector<Item> items_;
    std::vector<std::unique_ptr<handler>> waiting_;
    bool busy_ = false;
};

}  // namespace stem::redis::detail
