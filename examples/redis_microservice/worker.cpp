// redis_microservice worker — prices orders from the "orders" queue of a shared Redis.
// Run as many as you like, on as many machines; stop one with SIGTERM (it finishes what it
// holds first). See producer.cpp for the other side.
#include "tasks.hpp"

#include <cstdio>
#include <stdexcept>

#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

boost::asio::awaitable<shop::invoice> shop::price_order::operator()(stem::task_context&, order o) {
    // A bad order will not get better by retrying: fail it at once (task_failure is not retried).
    if (o.lines.empty()) throw stem::task_failure(fmt::format("order {} has no lines", o.id), "invalid_order");
    invoice inv{o.id, 0, 0, long(::getpid())};
    for (auto& l : o.lines) {
        inv.total += l.quantity * l.unit_price;
        inv.items += l.quantity;
    }
    if (o.coupon == "TENOFF") inv.total *= 0.9;
    co_return inv;
}

int main() {
    boost::asio::io_context io;
    auto u = shop::urls();
    stem::app_options opts;
    opts.worker.queues = {"orders"};
    opts.worker.concurrency = 16;
    stem::app app{io, stem::make_broker(u.broker), stem::make_backend(u.backend), stem::tasks{shop::price_order{}}, opts};
    app.signals().task_failed.connect([](const stem::task_event& e) {
        fmt::print("[worker {}] {} failed: {}\n", ::getpid(), e.env.id, e.error ? e.error->message : "");
        std::fflush(stdout);
    });
    fmt::print("[worker {}] pricing orders from {}\n", ::getpid(), stem::detail::redact_password(u.broker));
    std::fflush(stdout);
    app.start();
    io.run();  // until SIGTERM / SIGINT
    fmt::print("[worker {}] stopped\n", ::getpid());
    return 0;
}
