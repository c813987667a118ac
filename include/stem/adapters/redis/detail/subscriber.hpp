// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/subscriber.hpp — one pub/sub connection per backend: channels subscribed while
// someone listens, messages handed to a callback, subscriptions renewed after a reconnect.
#pragma once

#include <stem/adapters/redis/connection.hpp>
#include <stem/detail/waiter.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/this_coro.hpp>

namespace stem::redis::detail {

class subscriber : public std::enable_shared_from_this<subscriber> {
public:
    /// `on_message(channel, payload)`; `on_resubscribed(channel)` after a reconnection
    /// (messages may have been missed meanwhile). Both run on the connection's strand.
    using message_fn = std::function<void(const std::string&, std::string)>;
    using resubscribed_fn = std::function<void(const std::string&)>;

    /// Its connection runs on `ex` (the client's I/O thread).
    subscriber(boost::asio::any_io_executor ex, config cfg, message_fn on_message, resubscribed_fn on_resubscribed)
        : ex_(std::move(ex)), cfg_(std::move(cfg)), on_message_(std::move(on_message)), on_resubscribed_(std::move(on_resubscribed)) {}

    ~subscriber() {
        std::lock_guard lk(mu_);
        if (conn_) conn_->close();
    }

    /// Subscribes to `channel` (once for all its listeners) and waits until the server has
    /// confirmed it, or `deadline` (then messages may come later or not at all).
    awaitable<void> subscribe(std::string channel, std::chrono::steady_clock::time_point deadline) {
        auto w = std::make_shared<stem::detail::waiter>();
        std::shared_ptr<connection> c;
        bool first = false;
        {
            std::lock_guard lk(mu_);
            if (!conn_) start();
            c = conn_;
            auto& ch = channels_[channel];
            first = ch.listeners++ == 0;
            if (!ch.confirmed) ch.waiting.push_back(w);
        }
        if (first) {
            request r;
            r.push("SUBSCRIBE", channel);
            connection::orphan_handler none;
            co_await c->exec(std::move(r), std::move(none), false);
        }
        {
            std::lock_guard lk(mu_);
            if (channels_[channel].confirmed) co_return;
        }
        co_await w->wait_until(deadline);
    }

    /// One listener of `channel` is gone; the last one unsubscribes.
    void unsubscribe(const std::string& channel) {
        std::shared_ptr<connection> c;
        {
            std::lock_guard lk(mu_);
            auto it = channels_.find(channel);
            if (it == channels_.end() || --it->second.listeners > 0) return;
            channels_.erase(it);
            c = conn_;
        }
        if (!c) return;
        request r;
        r.push("UNSUBSCRIBE", channel);
        boost::asio::co_spawn(c->get_executor(), send(c, std::move(r)), boost::asio::detached);
    }

private:
    struct channel_state {
        int listeners = 0;
        bool confirmed = false;
        bool renewing = false;  ///< subscribed again after a reconnection
        std::vector<std::shared_ptr<stem::detail::waiter>> waiting;
    };

    static awaitable<void> send(std::shared_ptr<connection> c, request r) {
        try {
            connection::orphan_handler none;
            co_await c->exec(std::move(r), std::move(none), false);
        } catch (const std::exception&) {
            // The connection is gone; channels are renewed when it is back.
        }
    }

    void start() {
        std::weak_ptr<subscriber> weak = weak_from_this();
        conn_ = std::make_shared<connection>(ex_, cfg_, [weak](reply r) {
            if (auto self = weak.lock()) self->on_push(std::move(r));
        });
        conn_->on_connect([weak] {
            if (auto self = weak.lock()) self->renew();
        });
    }

    /// After a (re)connection: every channel is subscribed again.
    void renew() {
        std::vector<std::string> names;
        std::shared_ptr<connection> c;
        {
            std::lock_guard lk(mu_);
            for (auto& [name, ch] : channels_) {
                ch.renewing = ch.confirmed;
                ch.confirmed = false;
                names.push_back(name);
            }
            c = conn_;
        }
        if (names.empty() || !c) return;
        request r;
        std::vector<std::string_view> argv{"SUBSCRIBE"};
        for (auto& n : names) argv.push_back(n);
        r.push_range(argv.begin(), argv.end());
        boost::asio::co_spawn(c->get_executor(), send(c, std::move(r)), boost::asio::detached);
    }

    void on_push(reply r) {
        auto kind = text(at(*r, 0));
        if (kind == "message" && size(*r) >= 3) {
            on_message_(std::string(text(at(*r, 1))), std::string(text(at(*r, 2))));
            return;
        }
        if (kind != "subscribe" || size(*r) < 2) return;
        std::string channel(text(at(*r, 1)));
        std::vector<std::shared_ptr<stem::detail::waiter>> wake;
        bool renewed = false;
        {
            std::lock_guard lk(mu_);
            auto it = channels_.find(channel);
            if (it == channels_.end()) return;
            it->second.confirmed = true;
            renewed = std::exchange(it->second.renewing, false);
            wake.swap(it->second.waiting);
        }
        for (auto& w : wake) w->notify();
        if (renewed) on_resubscribed_(channel);
    }

    boost::asio::any_io_executor ex_;
    config cfg_;
    message_fn on_message_;
    resubscribed_fn on_resubscribed_;
    std::mutex mu_;
    std::shared_ptr<connection> conn_;
    std::map<std::string, channel_state> channels_;
};

}  // namespace stem::redis::detail
