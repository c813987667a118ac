// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// client.hpp — what an adapter talks to: one pipelined connection for ordinary commands,
// a few connections for blocking reads, Lua scripts by EVALSHA.
#pragma once

#include <stem/adapters/redis/connection.hpp>

#include <array>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
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

/// The thread that runs every Redis connection of the process (one io_context): callers
/// on any executor and any thread hand it requests and are answered on their own executor.
/// It runs while at least one client holds it (`acquire`/`release`); when the last client
/// goes, the thread finishes the closing of its connections and returns, and `release`
/// waits for that (unless called on the thread itself), so no Redis work is still running
/// when the program exits and its static objects are destroyed. The object itself is
/// never destroyed, so that a client released on the thread cannot destroy it from inside.
class io_thread {
public:
    /// The process's I/O thread, started if no client holds it.
    static io_thread& acquire() {
        auto spin = spin_window();
        std::unique_lock lk(mu());
        // A forked child has the parent's object but not its thread: it makes its own
        // (and never touches the parent's copy).
        if (!current() || owner() != ::getpid()) {
            (void)stem::error_category();  // made before the exit hook: destroyed after it
            current() = new io_thread();
            owner() = ::getpid();
            std::atexit(&io_thread::stop_at_exit);
        }
        auto& t = *current();
        if (t.users_++ == 0) {
            t.work_.emplace(t.io_.get_executor());
            if (!t.running_) {  // the previous thread has left run() for good: a new one
                if (t.thread_.joinable()) t.thread_.join();
                t.io_.restart();
                t.spin_ = spin;
                t.running_ = true;
                t.thread_ = std::thread([&t] { t.run(); });
            }
        }
        return t;
    }

    /// Gives up a hold taken by `acquire`. The last one lets the thread finish.
    void release() {
        std::unique_lock lk(mu());
        if (--users_ != 0) return;
        work_.reset();
        if (thread_.get_id() == std::this_thread::get_id()) return;
        // Closing connections takes a few handler runs; a connection some caller leaked
        // would keep the thread forever, so it is stopped after a grace period.
        if (!idle_.wait_for(lk, std::chrono::seconds(5), [this] { return !running_ || users_ != 0; })) io_.stop();
        idle_.wait(lk, [this] { return !running_ || users_ != 0; });
    }

    boost::asio::any_io_executor executor() { return io_.get_executor(); }

    /// How long the thread polls after work before it sleeps: `STEM_REDIS_SPIN_US`
    /// microseconds (0 to 10,000; default 100; 0 sleeps at once).
    static std::chrono::microseconds spin_window() {
        const char* v = std::getenv("STEM_REDIS_SPIN_US");
        if (!v) return std::chrono::microseconds(100);
        std::string_view text(v);
        long us = -1;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), us);
        if (ec != std::errc{} || end != text.data() + text.size() || us < 0 || us > 10'000)
            throw error(errc::invalid_argument,
                        fmt::format("STEM_REDIS_SPIN_US must be a whole number of microseconds from 0 to 10000, got '{}'", text));
        return std::chrono::microseconds(us);
    }

private:
    io_thread() = default;

    void run() {
        for (;;) {
            // After each piece of work the thread keeps polling for `spin_` before it sleeps
            // in the kernel (yielding the core to any thread that has work): a request posted
            // meanwhile needs no wake-up, which costs tens of microseconds.
            auto busy = std::chrono::steady_clock::now();
            for (;;) {
                if (io_.poll() > 0) {
                    busy = std::chrono::steady_clock::now();
                    continue;
                }
                if (io_.stopped()) break;
                if (std::chrono::steady_clock::now() - busy < spin_) {
                    std::this_thread::yield();
                    continue;
                }
                if (io_.run_one() == 0) break;
                busy = std::chrono::steady_clock::now();
            }
            std::lock_guard lk(mu());
            if (users_ != 0) {  // taken again while run() was returning
                io_.restart();
                continue;
            }
            running_ = false;
            idle_.notify_all();
            return;
        }
    }

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
    /// For clients still alive at exit.
    static void stop_at_exit() {
        auto* t = current();
        if (!t || owner() != ::getpid()) return;
        t->io_.stop();
        if (t->thread_.get_id() == std::this_thread::get_id()) t->thread_.detach();
        else if (t->thread_.joinable()) t->thread_.join();
    }

    boost::asio::io_context io_;
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
    std::thread thread_;
    std::condition_variable idle_;
    int users_ = 0;
    bool running_ = false;
    std::chrono::microseconds spin_{100};
};

}  // namespace detail

/// The connections of one adapter object to one server, run by the process's Redis I/O
/// thread, or by `ex` when one is given (no thread hop per request, the lowest latency: then
/// `ex`'s execution context must outlive the client). Connections close when the client is
/// destroyed (and, with the shared thread, have closed when the last client's destructor
/// returns).
class client {
public:
    explicit client(config c, boost::asio::any_io_executor ex = {})
        : io_(ex ? nullptr : &detail::io_thread::acquire()), ex_(ex ? ex : io_->executor()), cfg_(std::move(c)) {}
    ~client() {
        {
            std::lock_guard lk(mu_);
            if (main_) main_->close();
            for (auto& c : idle_blocking_) c->close();
            for (auto& w : busy_blocking_)  // their callers went away (a consumer cancelled mid-read)
                if (auto c = w.lock()) c->close();
            main_.reset();
            idle_blocking_.clear();
        }
        if (io_) io_->release();
    }
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    /// Loads `s` on every (re)connection, before other commands: EVALSHA finds it.
    /// Call before the first command.
    void preload(const script& s) { preload_.push_back(s.source()); }

    /// The executor the connections run on.
    boost::asio::any_io_executor executor() const { return ex_; }

    /// Runs `req` on the shared pipelined connection. If the caller is cancelled after it
    /// was sent, its replies go to `orphan` when they arrive.
    awaitable<std::vector<reply>> exec(request req, connection::orphan_handler orphan = {}) {
        auto c = main();
        co_return co_await c->exec(std::move(req), std::move(orphan));
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

    /// Sends `req` at once, in call order with this thread's other commands, without
    /// waiting for it (errors are dropped: only for work that has a fallback).
    void send(request req) { main()->send(std::move(req), {}); }

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
        if (!c) {
            c = std::make_shared<connection>(executor(), cfg_, connection::push_handler{}, preload_);
            std::lock_guard lk(mu_);
            std::erase_if(busy_blocking_, [](auto& w) { return w.expired(); });
            busy_blocking_.push_back(c);
        }
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

    detail::io_thread* io_;
    boost::asio::any_io_executor ex_;
    config cfg_;
    std::vector<std::string> preload_;
    std::mutex mu_;
    std::shared_ptr<connection> main_;
    std::vector<std::shared_ptr<connection>> idle_blocking_;
    std::vector<std::weak_ptr<connection>> busy_blocking_;  ///< every blocking connection made
    std::shared_ptr<pool_state> pool_ = std::make_shared<pool_state>(pool_state{this});
};

}  // namespace stem::redis
