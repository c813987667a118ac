// redis_microservice — the task types shared by its producer and worker programs. In a real
// service this header is the contract between teams: both sides compile against it.
#pragma once

#include <stem/adapters/url.hpp>
#include <stem/stem.hpp>

#include <cstdlib>
#include <string>
#include <vector>

namespace shop {

struct line {
    std::string sku;
    int quantity = 0;
    double unit_price = 0;
};
struct order {
    std::string id;
    std::vector<line> lines;
    std::string coupon;  ///< "" or e.g. "TENOFF" (10% off)
};
struct invoice {
    std::string order_id;
    double total = 0;
    int items = 0;
    long worker_pid = 0;
};
BOOST_DESCRIBE_STRUCT(line, (), (sku, quantity, unit_price))
BOOST_DESCRIBE_STRUCT(order, (), (id, lines, coupon))
BOOST_DESCRIBE_STRUCT(invoice, (), (order_id, total, items, worker_pid))

/// Prices an order. Declared here; the worker defines the handler.
struct price_order : stem::task_definition<order, invoice> {
    static constexpr std::string_view name = "shop.price_order";
    static constexpr stem::task_options options{.queue = "orders", .max_retries = 3};
    boost::asio::awaitable<invoice> operator()(stem::task_context& ctx, order o);
};

/// Where Redis is: STEM_BROKER_URL / STEM_RESULT_BACKEND_URL, else a local server.
inline stem::adapter_urls urls() {
    stem::adapter_urls u{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"};
    if (const char* b = std::getenv("STEM_BROKER_URL"); b && *b) u.broker = b;
    if (const char* r = std::getenv("STEM_RESULT_BACKEND_URL"); r && *r) u.backend = r;
    return u;
}

}  // namespace shop
