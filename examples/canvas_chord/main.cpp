// canvas_chord — map and reduce on the embedded default (or STEM_BROKER_URL /
// STEM_RESULT_BACKEND_URL): square 1..100 in parallel, then one callback adds the
// squares up, receiving them in the order they were given. A second chord has a branch
// that fails: the callback is skipped and the chord names the branch.
#include <stem/adapters/url.hpp>
#include <stem/stem.hpp>

#include <cstdio>
#include <numeric>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

using namespace std::chrono_literals;
namespace asio = boost::asio;

/// x*x; refuses negative numbers for good.
struct square : stem::task_definition<long, long, square> {
    static constexpr std::string_view name = "chord.square";
    asio::awaitable<long> operator()(stem::task_context&, long x) {
        if (x < 0) throw stem::task_failure(fmt::format("{} is negative", x), "bad_input");
        co_return x * x;
    }
};
struct add_all : stem::task_definition<std::vector<long>, long, add_all> {
    static constexpr std::string_view name = "chord.add_all";
    asio::awaitable<long> operator()(stem::task_context&, std::vector<long> xs) { co_return std::accumulate(xs.begin(), xs.end(), 0L); }
};

int main() {
    asio::io_context io;
    auto urls = stem::adapter_urls::from_env();
    stem::app_options opts;
    opts.worker.install_signal_handlers = false;
    opts.worker.concurrency = 16;
    stem::app app{io, stem::make_broker(urls.broker), stem::make_backend(urls.backend), stem::tasks{square{}, add_all{}}, opts};
    app.start();
    int exit_code = 1;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        stem::canvas cv{app};
        std::vector<stem::typed_signature<square>> header;
        for (long i = 1; i <= 100; ++i) header.push_back(square::sig(i));
        auto chord = co_await cv.chord(header, add_all::sig());
        auto r = co_await chord.wait(60s);
        fmt::print("sum of the squares of 1..100: {}\n", r.succeeded() ? fmt::format("{}", *r.value) : std::string("not finished"));

        std::vector<stem::typed_signature<square>> with_bad;
        for (long i : {3L, -4L, 5L}) with_bad.push_back(square::sig(i));
        auto failing = co_await cv.chord(with_bad, add_all::sig());
        auto f = co_await failing.wait(60s);
        if (f.failure) fmt::print("second chord failed at branch {}: {}\n", f.failure->index, f.failure->error.message);
        exit_code = r.succeeded() && *r.value == 338350 && f.failure && f.failure->index == 1 ? 0 : 1;
        co_await app.shutdown();
    }, asio::detached);
    io.run();
    return exit_code;
}
