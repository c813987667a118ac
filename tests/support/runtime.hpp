// Test support for runtime tests: a one-number argument type and app options for tests.
#pragma once

#include "support/async.hpp"

#include <stem/stem.hpp>

#include <chrono>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

namespace stem_test {

/// Arguments of the small test tasks.
struct num_args {
    int x = 0;
};
BOOST_DESCRIBE_STRUCT(num_args, (), (x))

/// App options for tests: no OS signal handlers, no environment, short waits.
inline stem::app_options app_options(std::size_t concurrency) {
    using namespace std::chrono_literals;
    stem::app_options o;
    o.signals_from_env = false;
    o.worker.install_signal_handlers = false;
    o.worker.concurrency = concurrency;
    o.worker.prefetch_multiplier = 4;
    o.worker.poll_wait = 100ms;
    o.worker.heartbeat_interval = 50ms;
    o.worker.soft_shutdown_timeout = 300ms;
    return o;
}

/// The broker's stats of `queue` once nothing is pending, in flight or delayed, or the
/// last seen after `within`: a worker records a result before it acknowledges the
/// delivery, so a test that has seen the result may still see the delivery in flight.
template <class Broker>
awaitable<stem::queue_stats> settled_stats(Broker& b, std::string queue, std::chrono::milliseconds within = std::chrono::seconds(5)) {
    auto until = std::chrono::steady_clock::now() + within;
    auto st = co_await b.stats(queue);
    while (st.pending + st.inflight + st.delayed != 0 && std::chrono::steady_clock::now() < until) {
        co_await elapse(std::chrono::milliseconds(20));
        st = co_await b.stats(queue);
    }
    co_return st;
}

/// The test executable's own pid (forked worker processes have another).
inline const pid_t test_process = ::getpid();

/// Runs for `x` ms (renewing its 1 s lease) in any process but the test's own; at once in
/// the test's process. Returns the pid that ran it: for worker processes killed mid-task.
struct slow_in_child : stem::task_definition<num_args, long> {
    static constexpr std::string_view name = "test.slow_in_child";
    static constexpr stem::task_options options{.visibility_timeout = std::chrono::milliseconds(1000)};
    boost::asio::awaitable<long> operator()(stem::task_context& ctx, num_args a) {
        using namespace std::chrono_literals;
        if (::getpid() != test_process) {
            boost::asio::steady_timer t(co_await boost::asio::this_coro::executor);
            for (int waited = 0; waited < a.x; waited += 200) {
                t.expires_after(200ms);
                co_await t.async_wait(boost::asio::use_awaitable);
                co_await ctx.extend_lease(1000ms);
            }
        }
        co_return long(::getpid());
    }
};

/// Takes `x` ms; leases of 2 s, so work lost to a server restart comes back quickly.
struct sleepy : stem::task_definition<num_args, int> {
    static constexpr std::string_view name = "test.sleepy";
    static constexpr stem::task_options options{.visibility_timeout = std::chrono::milliseconds(2000)};
    boost::asio::awaitable<int> operator()(stem::task_context&, num_args a) {
        boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, std::chrono::milliseconds(a.x));
        co_await t.async_wait(boost::asio::use_awaitable);
        co_return a.x;
    }
};

}  // namespace stem_test
