// canvas_chain — a typed chain on the embedded default (SQLite files under .stem/, or the
// adapters named by STEM_BROKER_URL / STEM_RESULT_BACKEND_URL): parse a line of numbers,
// add them up, format the total; each step takes the previous step's result. A second
// chain gets a bad line: its first step fails and the chain says which step and why.
#include <stem/adapters/url.hpp>
#include <stem/stem.hpp>

#include <charconv>
#include <cstdio>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

using namespace std::chrono_literals;
namespace asio = boost::asio;

/// "1,2,3" -> {1, 2, 3}; anything else fails for good (no retry helps).
struct parse_numbers : stem::task_definition<std::string, std::vector<long>, parse_numbers> {
    static constexpr std::string_view name = "chain.parse_numbers";
    asio::awaitable<std::vector<long>> operator()(stem::task_context&, std::string line) {
        std::vector<long> out;
        for (std::size_t pos = 0; pos <= line.size();) {
            auto end = std::min(line.find(',', pos), line.size());
            long v = 0;
            auto [p, ec] = std::from_chars(line.data() + pos, line.data() + end, v);
            if (ec != std::errc{} || p != line.data() + end)
                throw stem::task_failure(fmt::format("'{}' is not a number", line.substr(pos, end - pos)), "bad_input");
            out.push_back(v);
            pos = end + 1;
        }
        co_return out;
    }
};
struct add_up : stem::task_definition<std::vector<long>, long, add_up> {
    static constexpr std::string_view name = "chain.add_up";
    asio::awaitable<long> operator()(stem::task_context&, std::vector<long> xs) {
        long total = 0;
        for (auto x : xs) total += x;
        co_return total;
    }
};
struct format_total : stem::task_definition<long, std::string, format_total> {
    static constexpr std::string_view name = "chain.format_total";
    asio::awaitable<std::string> operator()(stem::task_context&, long total) { co_return fmt::format("total = {}", total); }
};

int main() {
    asio::io_context io;
    auto urls = stem::adapter_urls::from_env();
    stem::app_options opts;
    opts.worker.install_signal_handlers = false;
    stem::app app{io, stem::make_broker(urls.broker), stem::make_backend(urls.backend),
                  stem::tasks{parse_numbers{}, add_up{}, format_total{}}, opts};
    app.start();
    int exit_code = 1;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        stem::canvas cv{app};
        std::string good = "4,8,15,16,23,42", bad = "4,8,fifteen";
        // parse_numbers -> add_up -> format_total: types checked at compile time.
        auto chain = co_await cv.chain(parse_numbers::sig(good), add_up::sig(), format_total::sig());
        auto r = co_await chain.wait(30s);
        fmt::print("chain over \"{}\": {}\n", good, r.succeeded() ? *r.value : std::string("did not finish"));

        auto broken = co_await cv.chain(parse_numbers::sig(bad), add_up::sig(), format_total::sig());
        auto f = co_await broken.wait(30s);
        if (f.failure)
            fmt::print("chain over \"{}\": step {} ({}) failed: {}: {}\n", bad, f.failure->index, f.failure->task_name,
                       f.failure->error.type, f.failure->error.message);
        exit_code = r.succeeded() && *r.value == "total = 108" && f.failure && f.failure->index == 0 ? 0 : 1;
        co_await app.shutdown();
    }, asio::detached);
    io.run();
    return exit_code;
}
