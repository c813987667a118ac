// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// client.hpp — what an adapter talks to: one pipelined connection for ordinary commands,
// a few connections for blocking reads, Lua scripts by EVALSHA.
#pragma once

#include <stem/adapters/redis/connection.hpp>

#include <array>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <openssl/evp.h>
#include <unistd.h>

namespace stem::redis {

/// A Lua script, run with EVALSHA (the server is given its source once, on NOSCRIPT).
class script {
public:
    /// `name` appears in error messages.
    script(std::string name, std::string source) : name_(std::move(name)), src_(std::move(source)) {
        std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
        unsigned int len = 0;
        if (!EVP_Digest(src_.data(), src_.size(), md.data(), &len, EVP_sha1(), nullptr))
            throw error(errc::backend_failure, "redis: SHA-1 of a script failed");
        for (unsigned i = 0; i < len; ++i) {
            char hex[3];
            std::snprintf(hex, sizeof hex, "%02x", md[i]);
            sha_ += hex;
        }
    }
    const std::string& name() const noexcept { return name_; }
    const std::string& source() const noexcept { return src_; }
    const std::string& sha() const noexcept { return sha_; }

private:
    std::string name_;
    std::string src_;
    std::string sha_;
};

namespace detail {

/// The thread that runs every Redis connection of the process (one io_context), started
/// by the first client and kept until the process exits (then stopped, before static
/// objects go): callers on any executor and any thread hand it requests and are answered
/// on their own executor. It is never destroyed, so that no object released on it can
/// stop it from inside.
class io_thread {
public:
    static io_thread& shared() {
        std::lock_guard lk(mu());
        // A forked child has the parent's object but not its thread: it starts its own
        // (and never touches the parent's copy).
        if (!current() || owner() != ::getpid()) {
            (void)stem::error_category();  // made before the exit hook: destroyed after it
            current() = new io_thread();
            owner() = ::getpid();
            std::atexit(&io_thread::stop_at_exit);
        }
        return *current();
    }

    boost::asio::any_io_executor executor() { return io_.get_executor(); }

private:
    io_thread() : work_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}

    static std::mutex& mu() {
        static std::mutex m;
        return m;
    }
    static io_thread*& current() {
        static io_thread* t = nullptr;
        return t;
    }
    static pid_t& owner() {
        static pid_t p = 0;
        return p;
    }
    static void stop_at_exit() {
        auto* t = current();
        if (!t || owner() != ::getpid()) return;
        t->io_.stop();
        if (t->thread_.get_id() == std::this_thread::get_id()) t->thread_.detach();
        else if (t->thread_.joinable()) t->thread_.join();
    }

    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::thread thread_;
};

}  // namespace detail

/// The connections of one adapter object to one server, run by the process's Redis I/O
/// thread, or by `ex` when one is given (no thread hop per request, the lowest latency: then
/// `ex`'s execution context must outlive the client). Connections close when the client is
/// destroyed.
class client {
public:
    explicit client(config c, boost::asio::any_io_executor ex = {})
        : ex_(ex ? ex : detail::io_thread::shared().executor()), cfg_(std::move(c)) {}
    ~client() {
        std::lock_guard lk(mu_);
        if (main_) main_->close();
        for (auto& c : idle_blocking_) c->close();
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    /// Loads `s` on every (re)connection, before other commands: EVALSHA finds it.
    /// Call before the first command.
    void preload(const script& s) { preload_.push_back(s.source()); }

    /// The executor the connections run on.
    boost::asio::any_io_executor executor() const { return ex_; }

    /// Runs `req` on the shared pipelined connection.
    awaitable<std::vector<reply>> exec(request req) {
        auto c = main();
        co_return co_await c->exec(std::move(req));
    }

    /// Appends an EVALSHA of `s` to `r`.
    static void push_script(request& r, const script& s, const std::vector<std::string>& keys, const std::vector<std::string>& args) {
        std::vector<std::string_view> argv;
        argv.reserve(3 + keys.size() + args.size());
        auto nkeys = std::to_string(keys.size());
        argv.push_back("EVALSHA");
        argv.push_back(s.sha());
        argv.push_back(nkeys);
        for (auto& k : keys) argv.push_back(k);
        for (auto& a : args) argv.push_back(a);
        r.push_range(argv.begin(), argv.end());
    }

    /// Runs `s` and returns its reply (an error reply throws, naming the script).
    awaitable<reply> eval(const script& s, std::vector<std::string> keys, std::vector<std::string> args) {
        request r;
        push_script(r, s, keys, args);
        auto c = main();
        auto rs = co_await c->exec(std::move(r));
        if (is_error(*rs.at(0)) && text(*rs[0]).starts_with("NOSCRIPT")) {
            request again;
            again.push("SCRIPT", "LOAD", s.source());
            push_script(again, s, keys, args);
            rs = co_await c->exec(std::move(again));
            checked(*rs.at(0), s.name());
            rs.erase(rs.begin());
        }
        checked(*rs.at(0), s.name());
        co_return std::move(rs[0]);
    }

    /// Sends an EVALSHA of `s` at once, in call order with this thread's other commands,
    /// without waiting for it (errors are dropped: only for work that has a fallback).
    void send_script(const script& s, const std::vector<std::string>& keys, const std::vector<std::string>& args) {
        request r;
        push_script(r, s, keys, args);
        main()->send(std::move(r), {});
    }

    /// Runs a blocking command (XREADGROUP … BLOCK) on a connection of its own, so the
    /// shared connection never waits behind it. If the caller is cancelled, the replies
    /// that arrive later go to `orphan`.
    awaitable<std::vector<reply>> exec_blocking(request req, connection::orphan_handler orphan) {
        std::shared_ptr<connection> c;
        {
            std::lock_guard lk(mu_);
            if (!idle_blocking_.empty()) {
                c = std::move(idle_blocking_.back());
                idle_blocking_.pop_back();
            }
        }
        if (!c) c = std::make_shared<connection>(executor(), cfg_, connection::push_handler{}, preload_);
        // The connection goes back to the pool once its reply is in, whoever takes it.
        std::weak_ptr<pool_state> pool = pool_;
        auto give_back = [pool, weak = std::weak_ptr<connection>(c)] {
            auto conn = weak.lock();
            if (!conn) return;
            if (auto p = pool.lock()) p->give_back(conn);
            else conn->close();
        };
        std::vector<reply> out;
        try {
            connection::orphan_handler late = [orphan = std::move(orphan), give_back](std::vector<reply> rs) {
                give_back();
                if (orphan) orphan(std::move(rs));
            };
            out = co_await c->exec(std::move(req), std::move(late));
        } catch (const boost::system::system_error& e) {
            if (e.code() != boost::asio::error::operation_aborted) give_back();  // lost: it reconnects by itself
            throw;
        }
        give_back();
        co_return out;
    }

private:
    /// Idle blocking connections, shared with their completion callbacks.
    struct pool_state {
        client* owner;
        void give_back(const std::shared_ptr<connection>& c) {
            std::lock_guard lk(owner->mu_);
            if (owner->idle_blocking_.size() < 8) owner->idle_blocking_.push_back(c);
            else c->close();
        }
    };

    std::shared_ptr<connection> main() {
        std::lock_guard lk(mu_);
        if (!main_) main_ = std::make_shared<connection>(executor(), cfg_, connection::push_handler{}, preload_);
        return main_;
    }

    boost::asio::any_io_executor ex_;
    config cfg_;
    std::vector<std::string> preload_;
    std::mutex mu_;
    std::shared_ptr<connection> main_;
    std::vector<std::shared_ptr<connection>> idle_blocking_;
    std::shared_ptr<pool_state> pool_ = std::make_shared<pool_state>(pool_state{this});
};

}  // namespace stem::redis
