// quick_start — typed tasks on the in-memory broker and backend, in one process:
// an immediate task, a delayed task, and a task that keeps failing, is retried,
// and ends in the dead-letter queue. Prints each task's final state by name.
#include <stem/stem.hpp>

#include <cstdio>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

using namespace std::chrono_literals;
namespace asio = boost::asio;

struct greet_args {
    std::string name;
};
struct greet_result {
    std::string greeting;
    int letters = 0;
};
BOOST_DESCRIBE_STRUCT(greet_args, (), (name))
BOOST_DESCRIBE_STRUCT(greet_result, (), (greeting, letters))

/// Says hello. Handlers are objects: state and dependencies live in members.
struct greet : stem::task_definition<greet_args, greet_result> {
    static constexpr std::string_view name = "demo.greet";
    asio::awaitable<greet_result> operator()(stem::task_context&, greet_args a) {
        co_return greet_result{fmt::format("Hello, {}!", a.name), static_cast<int>(a.name.size())};
    }
};

struct charge_args {
    std::string card;
    double amount = 0;
};
BOOST_DESCRIBE_STRUCT(charge_args, (), (card, amount))

/// Always fails: the payment gateway is "down". Retried twice, 100 ms apart, then dead-lettered.
struct charge_card : stem::task_definition<charge_args> {
    static constexpr std::string_view name = "demo.charge_card";
    static constexpr stem::task_options options{
        .queue = "default",
        .max_retries = 2,
        .retry = stem::retry_policy{.backoff = false, .default_delay = 100ms, .backoff_max = 1s, .jitter = false}};
    asio::awaitable<void> operator()(stem::task_context& ctx, charge_args a) {
        throw std::runtime_error(fmt::format("gateway unavailable charging {:.2f} to {} (attempt {})", a.amount, a.card,
                                             ctx.attempt() + 1));
        co_return;
    }
};

template <class R>
void report(std::string_view label, const stem::task_result<R>& r) {
    if (r.succeeded()) {
        if constexpr (std::is_same_v<R, greet_result>)
            fmt::print("{:<14} {}  {:<9}  result: {} ({} letters)\n", label, r.id, r.state_name(), r.value->greeting,
                       r.value->letters);
        else
            fmt::print("{:<14} {}  {:<9}\n", label, r.id, r.state_name());
    } else {
        fmt::print("{:<14} {}  {:<9}  error: {}\n", label, r.id, r.state_name(),
                   r.error ? r.error->message : std::string("(none)"));
    }
}

int main() {
    asio::io_context io;
    stem::app_options opts;
    opts.worker.install_signal_handlers = false;
    opts.worker.concurrency = 4;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{greet{}, charge_card{}}, opts};

    app.signals().task_retry.connect([](const stem::task_event& e) {
        fmt::print("  retry: {} attempt {} failed ({}), next attempt at {}\n", e.env.name, e.env.attempt + 1,
                   e.error->message, stem::format_time(*e.next_attempt_at));
    });
    app.start();

    int exit_code = 1;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        // Arguments are built before the co_await expression (GCC 12: see docs/getting-started.md).
        greet_args ada{"Ada"}, grace{"Grace"};
        charge_args charge{"4242-0000", 12.5};
        stem::enqueue_options later;
        later.countdown = 300ms;

        auto now_task = co_await app.enqueue<greet>(ada);
        auto t0 = stem::clock::now();
        auto later_task = co_await app.enqueue<greet>(grace, later);
        auto failing = co_await app.enqueue<charge_card>(charge);

        auto r1 = co_await now_task.wait(5s);
        auto r2 = co_await later_task.wait(5s);
        auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(stem::clock::now() - t0);
        auto r3 = co_await failing.wait(10s);

        fmt::print("\nFinal states:\n");
        report("immediate", r1);
        report("delayed", r2);
        fmt::print("{:<14} (ran {} ms after enqueue; countdown 300 ms)\n", "", delay.count());
        report("charge_card", r3);

        auto dead = co_await app.get_broker().list_dead_letters("default", 10, 0);
        fmt::print("\nDead-letter queue ({} entr{}):\n", dead.total, dead.total == 1 ? "y" : "ies");
        for (auto& d : dead.items) fmt::print("  {}  {}  reason: {}\n", d.env.id, d.env.name, d.reason);

        bool ok = r1.succeeded() && r2.succeeded() && delay >= 300ms && r3.failed() && r3.attempt == 2 &&
                  dead.total == 1 && dead.items[0].env.id == failing.id();
        exit_code = ok ? 0 : 1;
        co_await app.shutdown();
    }, [&](std::exception_ptr ep) {
        if (ep) {
            try { std::rethrow_exception(ep); } catch (const std::exception& e) { fmt::print(stderr, "quick_start: {}\n", e.what()); }
            exit_code = 1;
            io.stop();
        }
    });
    io.run();
    if (exit_code != 0) fmt::print(stderr, "quick_start: the tasks did not end as expected\n");
    return exit_code;
}
