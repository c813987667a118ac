// The coalescer behind the Redis adapters' acks and status writes: callers answered one by
// one, several batches in flight, batches taken in submission order (no server needed).
#include "support/async.hpp"

#include <stem/adapters/redis/detail/coalescer.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <vector>

#include <boost/asio/detached.hpp>

using namespace std::chrono_literals;
using stem_test::awaitable;

namespace {

struct batch_log {
    std::vector<int> taken;  ///< items in the order the batches took them
    std::size_t running = 0, peak = 0;
};

/// A coalescer whose batches last a few milliseconds and answer item × 10; a batch holding
/// `poison` fails.
auto make_coalescer(boost::asio::any_io_executor ex, batch_log& log, int poison) {
    using coalescer = stem::redis::detail::coalescer<int, int>;
    return std::make_shared<coalescer>(
        ex,
        [ex, &log, poison](std::vector<int>& items) -> awaitable<std::vector<int>> {
            log.taken.insert(log.taken.end(), items.begin(), items.end());
            log.peak = std::max(log.peak, ++log.running);
            co_await stem_test::elapse(5ms);
            --log.running;
            if (std::find(items.begin(), items.end(), poison) != items.end()) throw std::runtime_error("batch failed");
            std::vector<int> out;
            for (int i : items) out.push_back(i * 10);
            co_return out;
        },
        4, 3);
}

}  // namespace

TEST_CASE("adapters.redis: the coalescer answers each caller, keeps batches in order, several in flight") {
    stem_test::run([]() -> awaitable<void> {
        auto ex = co_await boost::asio::this_coro::executor;
        batch_log log;
        auto c = make_coalescer(ex, log, 13);
        constexpr int n = 40;
        std::vector<int> got(n, -1);
        int done = 0, failed = 0;
        for (int i = 0; i < n; ++i)
            boost::asio::co_spawn(ex, [&, i]() -> awaitable<void> {
                try {
                    got[i] = co_await c->submit(i);
                } catch (const std::runtime_error&) {
                    ++failed;
                }
                ++done;
            }, boost::asio::detached);
        while (done < n) co_await stem_test::elapse(1ms);
        std::vector<int> all(n);
        std::iota(all.begin(), all.end(), 0);
        CHECK(log.taken == all);  // batches took the items in submission order
        CHECK(log.peak > 1);      // more than one batch at a time ...
        CHECK(log.peak <= 3);     // ... but no more than allowed
        // The batch holding 13 failed for all its callers (at most a batch of 4); the others
        // got their own answers.
        CHECK(failed >= 1);
        CHECK(failed <= 4);
        CHECK(got[13] == -1);
        for (int i = 0; i < n; ++i)
            if (got[i] != -1) CHECK(got[i] == i * 10);
        CHECK(std::count(got.begin(), got.end(), -1) == failed);
    });
}
