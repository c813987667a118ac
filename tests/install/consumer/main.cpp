// A one-task program built against an installed stem by tests/install/install_test.cmake.
// It is also the program whose compile time docs/performance.md reports.
#include <stem/stem.hpp>

#include <cstdio>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

struct square_args {
    int n = 0;
};
BOOST_DESCRIBE_STRUCT(square_args, (), (n))

struct square : stem::task_definition<square_args, int> {
    static constexpr std::string_view name = "consumer.square";
    boost::asio::awaitable<int> operator()(stem::task_context&, square_args a) { co_return a.n * a.n; }
};

int main() {
    boost::asio::io_context io;
    stem::app_options opts;
    opts.worker.install_signal_handlers = false;
    stem::app app{io, stem::memory_broker{}, stem::memory_backend{}, stem::tasks{square{}}, opts};
    app.start();
    int result = -1;
    boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> {
        square_args args{12};
        auto h = co_await app.enqueue<square>(args);
        auto r = co_await h.wait(std::chrono::seconds(5));
        if (r.succeeded()) result = *r.value;
        co_await app.shutdown();
    }, [](std::exception_ptr ep) { if (ep) std::rethrow_exception(ep); });
    io.run();
    std::printf("square(12) through an installed stem: %d\n", result);
    return result == 144 ? 0 : 1;
}
