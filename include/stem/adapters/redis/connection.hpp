// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// connection.hpp — one pipelined connection: any number of requests in flight, replies
// matched in order, reconnection with capped exponential backoff, TCP or TLS.
#pragma once

#include <stem/adapters/redis/detail/protocol.hpp>
#include <stem/adapters/redis/redis_config.hpp>
#include <stem/detail/posted_handler.hpp>
#include <stem/detail/serial_executor.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace stem::redis {

/// A connection to one Redis server, shared by any number of coroutines. Requests are
/// written as they come (everything queued while a write is in progress goes out in the
/// next write) and replies are handed back in order. The connection connects on first
/// use and again after it is lost, waiting `reconnect_min`, doubling up to
/// `reconnect_max`; requests in flight when it is lost fail with an error naming the
/// server, and so do requests queued while a connection attempt fails.
///
/// All its work runs on a strand of the executor it was made with; callers may be on any
/// executor and resume on their own. Cancelling a call completes it at once with
/// `operation_aborted` (a request already sent still runs on the server; its replies go
/// to the `orphan` function given with it, if any).
class connection : public std::enable_shared_from_this<connection> {
public:
    using strand_type = boost::asio::any_io_executor;  ///< a strand (see detail::serial_executor)
    /// Receives the replies that are not answers to a request (pub/sub messages).
    using push_handler = std::function<void(reply)>;
    /// Replies of a request whose caller went away.
    using orphan_handler = std::function<void(std::vector<reply>)>;

    /// `preload`: scripts loaded (SCRIPT LOAD) after each connection, before other commands.
    connection(boost::asio::any_io_executor ex, config cfg, push_handler on_push = {}, std::vector<std::string> preload = {})
        : strand_(stem::detail::serial_executor(std::move(ex))), cfg_(std::move(cfg)), on_push_(std::move(on_push)), preload_(std::move(preload)),
          wake_(strand_), retry_(strand_), tls_ctx_(boost::asio::ssl::context::tls_client) {
        if (cfg_.tls) setup_tls();
    }

    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    strand_type get_executor() const { return strand_; }

    /// Called (on the strand) after each successful (re)connection, before queued requests
    /// are written; what it queues goes first.
    void on_connect(std::function<void()> f) { on_connect_ = std::move(f); }

    /// Sends `req` and returns one reply per command, in order. Error replies are returned,
    /// not thrown; a lost connection throws stem::error (backend_failure). With
    /// `expect_replies` false (SUBSCRIBE on a connection with a push handler), it returns
    /// once written.
    boost::asio::awaitable<std::vector<reply>> exec(request req, orphan_handler orphan = {}, bool expect_replies = true) {
        return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, std::vector<reply>)>(
            [self = shared_from_this(), expect_replies](auto handler, request r, orphan_handler o) mutable {
                auto h = stem::detail::make_posted_handler<std::exception_ptr, std::vector<reply>>(std::move(handler));
                auto slot = h->cancellation_slot();
                auto op = std::make_shared<op_base>();
                op->expected = expect_replies ? r.commands() : 0;
                op->payload = r.take_payload();
                op->orphan = std::move(o);
                op->handler = std::move(h);
                if (slot.is_connected()) {
                    std::weak_ptr<op_base> w = op;
                    slot.assign([self, w](boost::asio::cancellation_type) {
                        boost::asio::post(self->strand_, [self, w] {
                            if (auto o = w.lock()) self->cancel(o);
                        });
                    });
                }
                boost::asio::post(self->strand_, [self, op = std::move(op)]() mutable { self->submit(std::move(op)); });
            },
            boost::asio::use_awaitable, std::move(req), std::move(orphan));
    }

    /// Queues `req` now, in call order with everything else queued from this thread, without
    /// waiting: its replies go to `on_reply` (nothing is called if the connection is lost).
    void send(request req, orphan_handler on_reply) {
        auto op = std::make_shared<op_base>();
        op->expected = req.commands();
        op->payload = req.take_payload();
        op->orphan = std::move(on_reply);
        boost::asio::post(strand_, [self = shared_from_this(), op = std::move(op)]() mutable { self->submit(std::move(op)); });
    }

    /// Stops: fails what is queued or in flight and closes the socket. Safe from any thread.
    void close() {
        boost::asio::post(strand_, [self = shared_from_this()] {
            self->closed_ = true;
            self->wake_.cancel();
            self->retry_.cancel();
            self->drop_socket();
            self->fail_all("the connection was closed");
        });
    }

private:
    using handler_type = stem::detail::posted_handler<std::exception_ptr, std::vector<reply>>;

    struct op_base {
        std::string payload;
        std::size_t expected = 0;
        std::vector<reply> replies;
        orphan_handler orphan;
        std::unique_ptr<handler_type> handler;
        /// The caller has been answered, went away, or never waited (`send`).
        bool finished() const noexcept { return !handler || handler->done(); }
        void complete(std::exception_ptr e, std::vector<reply> r) {
            if (handler) handler->complete(e, std::move(r));
        }
    };

    void submit(std::shared_ptr<op_base> op) {
        if (closed_) {
            op->complete(failure("the connection was closed"), {});
            return;
        }
        queued_.push_back(std::move(op));
        wake_.cancel();
        start();
    }

    void cancel(const std::shared_ptr<op_base>& op) {
        if (op->finished()) return;
        auto it = std::find(queued_.begin(), queued_.end(), op);
        if (it != queued_.end()) queued_.erase(it);  // never sent: forget it; sent: its replies become orphans
        op->complete(std::make_exception_ptr(boost::system::system_error(boost::asio::error::operation_aborted)), {});
    }

    void start() {
        if (running_ || closed_) return;
        running_ = true;
        boost::asio::co_spawn(strand_, run(shared_from_this()), boost::asio::detached);
    }

    std::exception_ptr failure(const std::string& why) const {
        return std::make_exception_ptr(error(errc::backend_failure, fmt::format("redis {}: {}", cfg_.display(), why)));
    }

    void fail_all(const std::string& why) {
        auto e = failure(why);
        auto sent = std::move(sent_);
        auto queued = std::move(queued_);
        sent_.clear();
        queued_.clear();
        for (auto& op : sent) op->complete(e, {});
        for (auto& op : queued) op->complete(e, {});
    }

    void drop_socket() {
        connected_ = false;
        boost::system::error_code ignored;
        if (tls_) tls_->lowest_layer().close(ignored);
        if (socket_) socket_->close(ignored);
    }

    /// Connects, serves, and reconnects after a loss, until closed.
    static boost::asio::awaitable<void> run(std::shared_ptr<connection> self) {
        using namespace boost::asio::experimental::awaitable_operators;
        // If the io_context is destroyed while this runs, the requests it holds (and the
        // callers' coroutines they hold) go with it instead of keeping each other alive.
        struct drop_on_destroy {
            connection* c;
            ~drop_on_destroy() {
                auto sent = std::move(c->sent_);
                auto queued = std::move(c->queued_);
            }
        } guard{self.get()};
        std::chrono::milliseconds backoff = self->cfg_.reconnect_min;
        while (!self->closed_) {
            std::string why;
            try {
                co_await self->connect();
                backoff = self->cfg_.reconnect_min;
                self->connected_ = true;
                if (self->on_connect_) self->on_connect_();
                auto stopped = co_await (self->read_loop() || self->write_loop());
                why = std::visit([](auto& w) { return w; }, stopped);
            } catch (const std::exception& e) {
                why = e.what();
            }
            bool was_connected = self->connected_;
            self->drop_socket();
            if (self->closed_) break;
            self->fail_all(was_connected ? "connection lost: " + why : "cannot connect: " + why);
            // Wait before the next attempt (new requests wait with it).
            self->retry_.expires_after(backoff);
            co_await self->retry_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
            backoff = std::min(backoff * 2, self->cfg_.reconnect_max);
        }
        self->running_ = false;
    }

    boost::asio::awaitable<void> connect() {
        using namespace boost::asio::experimental::awaitable_operators;
        broken_ = false;
        reader_.emplace();
        boost::asio::steady_timer deadline(strand_, cfg_.connect_timeout);
        // (operator|| waits for the first to finish without an exception: failures come as values)
        auto r = co_await (attempt() || deadline.async_wait(boost::asio::use_awaitable));
        if (r.index() == 1) throw error(errc::timeout, fmt::format("no connection within {} ms", cfg_.connect_timeout.count()));
        if (auto failed = std::get<0>(r)) std::rethrow_exception(failed);
    }

    boost::asio::awaitable<std::exception_ptr> attempt() {
        try {
            co_await connect_and_login();
        } catch (...) {
            co_return std::current_exception();
        }
        co_return nullptr;
    }

    boost::asio::awaitable<void> connect_and_login() {
        using boost::asio::ip::tcp;
        tcp::resolver resolver(strand_);
        auto endpoints = co_await resolver.async_resolve(cfg_.host, std::to_string(cfg_.port), boost::asio::use_awaitable);
        if (cfg_.tls) {
            tls_.emplace(strand_, tls_ctx_);
            if (!cfg_.tls_allow_insecure) {
                tls_->set_verify_mode(boost::asio::ssl::verify_peer);
                tls_->set_verify_callback(boost::asio::ssl::host_name_verification(cfg_.host));
            }
            SSL_set_tlsext_host_name(tls_->native_handle(), cfg_.host.c_str());
            co_await boost::asio::async_connect(tls_->lowest_layer(), endpoints, boost::asio::use_awaitable);
            tls_->lowest_layer().set_option(tcp::no_delay(true));
            co_await tls_->async_handshake(boost::asio::ssl::stream_base::client, boost::asio::use_awaitable);
        } else {
            socket_.emplace(strand_);
            co_await boost::asio::async_connect(*socket_, endpoints, boost::asio::use_awaitable);
            socket_->set_option(tcp::no_delay(true));
        }
        // Log in and choose the database before anything else.
        request hello;
        if (!cfg_.password.empty()) {
            if (cfg_.user.empty()) hello.push("AUTH", cfg_.password);
            else hello.push("AUTH", cfg_.user, cfg_.password);
        }
        if (cfg_.database != 0) hello.push("SELECT", cfg_.database);
        for (auto& src : preload_) hello.push("SCRIPT", "LOAD", src);
        if (hello.commands() == 0) co_return;
        writing_.assign(1, hello.take_payload());
        co_await write();
        for (std::size_t got = 0; got < hello.commands();) {
            auto n = co_await read_some();
            reader_->feed(rbuf_.data(), n);
            while (auto r = reader_->next()) {
                ++got;
                if (is_error(*r)) throw error(errc::backend_failure, fmt::format("set-up refused: {}", text(*r)));
            }
        }
    }

    boost::asio::awaitable<std::size_t> read_some() {
        if (tls_) co_return co_await tls_->async_read_some(boost::asio::buffer(rbuf_), boost::asio::use_awaitable);
        co_return co_await socket_->async_read_some(boost::asio::buffer(rbuf_), boost::asio::use_awaitable);
    }
    /// Writes `writing_`.
    boost::asio::awaitable<void> write() {
        if (tls_) {
            wbuf_.clear();
            for (auto& p : writing_) wbuf_ += p;
            co_await boost::asio::async_write(*tls_, boost::asio::buffer(wbuf_), boost::asio::use_awaitable);
        } else {
            buffers_.clear();
            for (auto& p : writing_) buffers_.push_back(boost::asio::buffer(p));
            co_await boost::asio::async_write(*socket_, buffers_, boost::asio::use_awaitable);
        }
    }

    /// Returns why it stopped.
    boost::asio::awaitable<std::string> read_loop() {
        try {
            for (;;) {
                auto n = co_await read_some();
                reader_->feed(rbuf_.data(), n);
                while (auto r = reader_->next()) dispatch(std::move(r));
            }
        } catch (const std::exception& e) {
            broken_ = true;
            wake_.cancel();
            co_return std::string(e.what());
        }
    }

    boost::asio::awaitable<std::string> write_loop() {
        try {
            for (;;) {
                if (queued_.empty()) {
                    wake_.expires_at(std::chrono::steady_clock::time_point::max());
                    co_await wake_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
                    if (closed_) co_return std::string("the connection was closed");
                    if (broken_) co_return std::string("the reader stopped");
                    continue;
                }
                // The payloads go out as they are, in one gathered write (TLS: copied into
                // one buffer, so that records are not cut per request).
                writing_.clear();
                std::vector<std::shared_ptr<op_base>> unanswered;  // requests that get no reply
                for (auto& op : queued_) {
                    writing_.push_back(std::move(op->payload));
                    if (op->expected == 0) unanswered.push_back(std::move(op));
                    else sent_.push_back(std::move(op));
                }
                queued_.clear();
                co_await write();
                for (auto& op : unanswered) op->complete(nullptr, {});
            }
        } catch (const std::exception& e) {
            broken_ = true;
            co_return std::string(e.what());
        }
    }

    static bool is_push(const redisReply& r) {
        if (r.type != REDIS_REPLY_ARRAY || r.elements < 1 || r.element[0]->type != REDIS_REPLY_STRING) return false;
        auto kind = text(*r.element[0]);
        return kind == "message" || kind == "pmessage" || kind == "subscribe" || kind == "unsubscribe" ||
               kind == "psubscribe" || kind == "punsubscribe";
    }

    void dispatch(reply r) {
        if (on_push_ && is_push(*r)) {
            on_push_(std::move(r));
            return;
        }
        if (sent_.empty()) return;  // nothing asked for it (cannot happen with a well-behaved server)
        auto& op = sent_.front();
        op->replies.push_back(std::move(r));
        if (op->replies.size() < op->expected) return;
        auto done = std::move(op);
        sent_.pop_front();
        if (done->finished()) {
            if (done->orphan) done->orphan(std::move(done->replies));
        } else {
            done->complete(nullptr, std::move(done->replies));
        }
    }

    void setup_tls() {
        namespace ssl = boost::asio::ssl;
        if (cfg_.tls_ca_cert.empty()) tls_ctx_.set_default_verify_paths();
        else tls_ctx_.load_verify_file(cfg_.tls_ca_cert);
        if (!cfg_.tls_client_cert.empty()) {
            tls_ctx_.use_certificate_chain_file(cfg_.tls_client_cert);
            tls_ctx_.use_private_key_file(cfg_.tls_client_key, ssl::context::pem);
        }
        tls_ctx_.set_verify_mode(cfg_.tls_allow_insecure ? ssl::verify_none : ssl::verify_peer);
    }

    strand_type strand_;
    config cfg_;
    push_handler on_push_;
    std::vector<std::string> preload_;
    std::function<void()> on_connect_;
    boost::asio::steady_timer wake_;
    boost::asio::steady_timer retry_;  ///< the wait before a reconnection
    boost::asio::ssl::context tls_ctx_;
    std::optional<boost::asio::ip::tcp::socket> socket_;
    std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket>> tls_;
    std::optional<detail::reply_reader> reader_;
    std::array<char, 64 * 1024> rbuf_{};
    std::vector<std::string> writing_;  ///< payloads being written
    std::vector<boost::asio::const_buffer> buffers_;
    std::string wbuf_;  ///< TLS: the payloads in one piece
    std::deque<std::shared_ptr<op_base>> queued_;  ///< waiting to be written
    std::deque<std::shared_ptr<op_base>> sent_;    ///< written, waiting for replies
    bool running_ = false;
    bool connected_ = false;
    bool broken_ = false;  ///< the reader or the writer of this connection stopped
    bool closed_ = false;
};

}  // namespace stem::redis
