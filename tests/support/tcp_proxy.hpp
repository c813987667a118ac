// Test support: a TCP proxy on loopback that cuts a connection at a chosen moment, for
// tests of what a client does when its connection is lost between a command and its reply.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace stem_test {

/// Forwards every connection made to `port()` to the server at `host:port`. Once armed with
/// `cut_after(text)`, the next bytes a client sends that contain `text` still reach the
/// server, and that connection is closed when the server next sends anything (the answer
/// to them, or to a request before them): the command runs, and its answer is lost.
class tcp_proxy {
public:
    tcp_proxy(boost::asio::any_io_executor ex, const std::string& host, unsigned short port)
        : s_(std::make_shared<state>(ex)) {
        boost::asio::ip::tcp::endpoint local(boost::asio::ip::make_address("127.0.0.1"), 0);
        s_->acceptor.open(local.protocol());
        s_->acceptor.bind(local);
        s_->acceptor.listen();
        s_->upstream = boost::asio::ip::tcp::resolver(ex).resolve(host, std::to_string(port));
        boost::asio::co_spawn(ex, accept_loop(s_), boost::asio::detached);
    }
    tcp_proxy(const tcp_proxy&) = delete;
    tcp_proxy& operator=(const tcp_proxy&) = delete;
    ~tcp_proxy() {
        boost::system::error_code ignored;
        s_->acceptor.close(ignored);
        for (auto& w : s_->sessions)
            if (auto p = w.lock()) p->close();
    }

    unsigned short port() const { return s_->acceptor.local_endpoint().port(); }
    /// Arms the one cut (see the class comment).
    void cut_after(std::string text) { s_->pattern = std::move(text); }
    /// How many connections were cut.
    std::size_t cuts() const { return s_->cuts; }

private:
    using tcp = boost::asio::ip::tcp;

    struct session {
        explicit session(boost::asio::any_io_executor ex) : client(ex), server(ex) {}
        tcp::socket client, server;
        bool cut = false;  ///< the server's next answer is dropped with the connection
        void close() {
            boost::system::error_code ignored;
            client.close(ignored);
            server.close(ignored);
        }
    };

    struct state {
        explicit state(boost::asio::any_io_executor ex) : acceptor(ex) {}
        tcp::acceptor acceptor;
        tcp::resolver::results_type upstream;
        std::string pattern;
        std::size_t cuts = 0;
        std::vector<std::weak_ptr<session>> sessions;
    };

    static boost::asio::awaitable<void> accept_loop(std::shared_ptr<state> s) {
        for (;;) {
            auto accepted = co_await s->acceptor.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
            if (std::get<0>(accepted)) co_return;
            auto ses = std::make_shared<session>(s->acceptor.get_executor());
            ses->client = std::move(std::get<1>(accepted));
            s->sessions.push_back(ses);
            boost::asio::co_spawn(s->acceptor.get_executor(), serve(s, ses), boost::asio::detached);
        }
    }

    static boost::asio::awaitable<void> serve(std::shared_ptr<state> s, std::shared_ptr<session> ses) {
        auto connected = co_await boost::asio::async_connect(ses->server, s->upstream, boost::asio::as_tuple(boost::asio::use_awaitable));
        if (std::get<0>(connected)) {
            ses->close();
            co_return;
        }
        boost::asio::co_spawn(ses->client.get_executor(), pump(s, ses, true), boost::asio::detached);
        co_await pump(s, ses, false);
    }

    /// Copies one direction until either side closes.
    static boost::asio::awaitable<void> pump(std::shared_ptr<state> s, std::shared_ptr<session> ses, bool upward) {
        auto& from = upward ? ses->client : ses->server;
        auto& to = upward ? ses->server : ses->client;
        std::vector<char> buf(64 * 1024);
        for (;;) {
            auto got = co_await from.async_read_some(boost::asio::buffer(buf), boost::asio::as_tuple(boost::asio::use_awaitable));
            if (std::get<0>(got)) break;
            auto n = std::get<1>(got);
            if (!upward && ses->cut) {
                ++s->cuts;
                break;
            }
            if (upward && !s->pattern.empty() && std::string_view(buf.data(), n).find(s->pattern) != std::string_view::npos) {
                s->pattern.clear();
                ses->cut = true;
            }
            auto put = co_await boost::asio::async_write(to, boost::asio::buffer(buf.data(), n), boost::asio::as_tuple(boost::asio::use_awaitable));
            if (std::get<0>(put)) break;
        }
        ses->close();
    }

    std::shared_ptr<state> s_;
};

}  // namespace stem_test
