// redis_microservice producer — sends orders to the workers through Redis and prints the
// invoices they send back (the producer awaits each result by pub/sub: no polling). It
// exits 0 when every order was priced correctly (and the empty one failed as it should).
#include "tasks.hpp"

#include <cmath>
#include <cstdio>

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

using namespace std::chrono_literals;

int main() {
    boost::asio::io_context io;
    auto u = shop::urls();
    // Only a producer here: no handlers, no worker. The task type alone says where
    // price_order goes and what it returns.
    auto broker = stem::make_broker(u.broker);
    auto backend = stem::make_backend(u.backend);
    stem::signals signals;
    stem::payload_encoder_registry encoders;
    stem::producer<stem::any_broker, stem::any_backend> app{broker, backend, signals, encoders};
    int exit_code = 1;
    boost::asio::co_spawn(io, [&]() -> boost::asio::awaitable<void> {
        std::vector<shop::order> orders;
        for (int i = 1; i <= 20; ++i)
            orders.push_back({fmt::format("ord-{:03}", i), {{"tea", i, 2.5}, {"cup", 1, 8.0}}, i % 4 == 0 ? "TENOFF" : ""});
        orders.push_back({"ord-empty", {}, ""});
        std::vector<stem::task_handle<shop::invoice>> handles;
        for (auto& o : orders) handles.push_back(co_await app.enqueue<shop::price_order>(o));
        fmt::print("[producer {}] sent {} orders to {}\n", ::getpid(), orders.size(), stem::detail::redact_password(u.broker));
        bool ok = true;
        for (std::size_t i = 0; i < orders.size(); ++i) {
            auto r = co_await handles[i].wait(30s);
            auto& o = orders[i];
            if (o.lines.empty()) {
                fmt::print("  {:<9} {:<9} {}\n", o.id, r.state_name(), r.error ? r.error->message : "");
                ok = ok && r.failed();
                continue;
            }
            double expect = 0;
            for (auto& l : o.lines) expect += l.quantity * l.unit_price;
            if (o.coupon == "TENOFF") expect *= 0.9;
            bool right = r.succeeded() && std::abs(r.value->total - expect) < 1e-9 && r.value->worker_pid != long(::getpid());
            ok = ok && right;
            if (r.succeeded())
                fmt::print("  {:<9} {:<9} total {:7.2f}  items {:3}  (worker {})\n", o.id, r.state_name(), r.value->total, r.value->items,
                           r.value->worker_pid);
            else
                fmt::print("  {:<9} {}\n", o.id, r.state_name());
        }
        exit_code = ok ? 0 : 1;
    }, [&](std::exception_ptr ep) {
        if (ep) {
            try {
                std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                fmt::print(stderr, "producer: {}\n", e.what());
            }
        }
        io.stop();
    });
    io.run();
    fmt::print("[producer {}] {}\n", ::getpid(), exit_code == 0 ? "all invoices correct" : "FAILED");
    return exit_code;
}
