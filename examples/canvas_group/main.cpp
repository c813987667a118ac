// canvas_group — a group on the embedded default (or STEM_BROKER_URL /
// STEM_RESULT_BACKEND_URL): count the words of several lines in parallel, print each
// count as it finishes, then all of them in the order they were given.
#include <stem/adapters/url.hpp>
#include <stem/stem.hpp>

#include <cstdio>
#include <sstream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

using namespace std::chrono_literals;
namespace asio = boost::asio;

/// Counts words; takes longer for short lines, so they finish out of order.
struct count_words : stem::task_definition<std::string, int, count_words> {
    static constexpr std::string_view name = "group.count_words";
    asio::awaitable<int> operator()(stem::task_context&, std::string line) {
        asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(400 / (1 + line.size() / 10)));
        co_await t.async_wait(asio::use_awaitable);
        std::istringstream in(line);
        int n = 0;
        for (std::string w; in >> w;) ++n;
        co_return n;
    }
};

int main() {
    asio::io_context io;
    auto urls = stem::adapter_urls::from_env();
    stem::app_options opts;
    opts.worker.install_signal_handlers = false;
    opts.worker.concurrency = 8;
    stem::app app{io, stem::make_broker(urls.broker), stem::make_backend(urls.backend), stem::tasks{count_words{}}, opts};
    app.start();
    int exit_code = 1;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        stem::canvas cv{app};
        std::vector<std::string> lines{"a", "two words", "the quick brown fox jumps over the lazy dog", "stem runs tasks in groups"};
        std::vector<stem::typed_signature<count_words>> calls;
        for (auto& l : lines) calls.push_back(count_words::sig(l));
        auto group = co_await cv.group(calls);
        fmt::print("group {} of {} tasks\n", group.id(), group.size());
        auto stream = group.stream();
        while (auto item = co_await stream.next(30s))
            fmt::print("  finished: line {} has {} words\n", item->index, item->result.value.value_or(-1));
        auto all = co_await group.wait(30s);
        if (all.succeeded()) fmt::print("in order: {}\n", *all.value);
        exit_code = all.succeeded() && *all.value == std::vector<int>{1, 2, 9, 5} ? 0 : 1;
        co_await app.shutdown();
    }, asio::detached);
    io.run();
    return exit_code;
}
