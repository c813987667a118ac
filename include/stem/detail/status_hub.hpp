// stem/detail: internals, never included by users directly.
// status_hub.hpp — waiting for and watching task statuses kept in a database: this
// process's writes wake waiters at once; other processes' writes are found by reading
// again when poked (a notification) or at each poll.
#pragma once

#include <stem/contracts/result_backend.hpp>
#include <stem/detail/waiter.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/this_coro.hpp>
#include <boost/json/serialize.hpp>

namespace stem::detail {

/// Reads a task's current status from the store.
using status_reader = std::function<awaitable<std::optional<task_status>>(const std::string& id)>;

class status_hub : public std::enable_shared_from_this<status_hub> {
public:
    explicit status_hub(std::chrono::milliseconds poll_interval) : poll_(poll_interval) {}

    /// After this process wrote `st` (committed): wake its waiters, feed its watchers.
    void published(const task_status& st) {
        std::vector<std::shared_ptr<waiter>> wake;
        {
            std::lock_guard lk(mu_);
            if (is_terminal(st.state)) {
                take_waiters(st.id, wake);
                for (auto& w : wake) handed_[w.get()] = st;  // no need to read it back
            }
            if (auto it = watchers_.find(st.id); it != watchers_.end())
                for (auto& wp : it->second)
                    if (auto w = wp.lock()) {
                        w->pending.push_back(st);
                        wake.push_back(w->w);
                    }
        }
        for (auto& w : wake) w->notify();
    }

    /// Another process changed `id`: waiters and watchers read it again.
    void poke(const std::string& id) {
        std::vector<std::shared_ptr<waiter>> wake;
        {
            std::lock_guard lk(mu_);
            take_waiters(id, wake);
            if (auto it = watchers_.find(id); it != watchers_.end())
                for (auto& wp : it->second)
                    if (auto w = wp.lock()) wake.push_back(w->w);
        }
        for (auto& w : wake) w->notify();
    }

    /// Everything may have changed (a notification connection came back): all read again.
    void poke_all() {
        std::vector<std::shared_ptr<waiter>> wake;
        {
            std::lock_guard lk(mu_);
            for (auto& [id, list] : waiters_) wake.insert(wake.end(), list.begin(), list.end());
            waiters_.clear();
            for (auto& [id, list] : watchers_)
                for (auto& wp : list)
                    if (auto w = wp.lock()) wake.push_back(w->w);
        }
        for (auto& w : wake) w->notify();
    }

    /// Waits until `id` is terminal (re-reading on every wake-up and poll), or the timeout.
    awaitable<std::optional<task_status>> wait(status_reader read, std::string id, std::chrono::milliseconds timeout) {
        auto self = shared_from_this();
        auto deadline = std::chrono::steady_clock::now() + timeout;
        auto w = std::make_shared<waiter>();
        struct unregister {
            status_hub* h;
            const std::string& id;
            std::shared_ptr<waiter> w;
            ~unregister() {
                h->drop_waiter(id, w);
                std::lock_guard lk(h->mu_);
                h->handed_.erase(w.get());
            }
        } guard{this, id, w};
        for (;;) {
            add_waiter(id, w);  // before reading: a write from now on wakes us
            // A store that fails for a while (a server restarting) is read again at the next
            // poll; if it still fails when the time is up, the caller gets the error.
            std::optional<task_status> st;
            std::exception_ptr failure;
            try {
                st = co_await read(id);
            } catch (const std::exception&) {
                failure = std::current_exception();
            }
            bool late = std::chrono::steady_clock::now() >= deadline;
            if (failure && late) std::rethrow_exception(failure);
            if ((st && is_terminal(st->state)) || late) co_return st;
            co_await w->wait_until(std::min(deadline, std::chrono::steady_clock::now() + poll_));
            std::optional<task_status> handed;
            {
                std::lock_guard lk(mu_);
                if (auto it = handed_.find(w.get()); it != handed_.end()) {
                    handed = std::move(it->second);
                    handed_.erase(it);
                }
            }
            if (handed) co_return handed;
        }
    }

    /// A watch of `id` from now on.
    awaitable<status_watch> watch(status_reader read, std::string id) {
        auto src = std::make_shared<watch_impl>(shared_from_this(), read, id);
        {
            std::lock_guard lk(mu_);
            watchers_[id].push_back(src);
        }
        // Statuses written before the watch opened are not reported; remember the latest.
        auto st = co_await read(id);
        if (st) src->last_seen = stem::serialize(*st);
        co_return status_watch{src};
    }

private:
    /// In-process writes arrive through `pending`, in order; another process's writes are
    /// found by reading the row and comparing it with the last one reported, so a watch
    /// across processes may skip an intermediate status.
    struct watch_impl final : watch_source {
        watch_impl(std::shared_ptr<status_hub> h, status_reader r, std::string i)
            : w(std::make_shared<waiter>()), hub(std::move(h)), read(std::move(r)), id(std::move(i)) {}
        ~watch_impl() override {
            std::lock_guard lk(hub->mu_);
            if (auto it = hub->watchers_.find(id); it != hub->watchers_.end()) {
                std::erase_if(it->second, [](auto& wp) { return wp.expired(); });
                if (it->second.empty()) hub->watchers_.erase(it);
            }
        }
        awaitable<std::optional<task_status>> next(std::chrono::milliseconds timeout) override {
            auto deadline = std::chrono::steady_clock::now() + timeout;
            for (;;) {
                std::optional<task_status> st;
                {
                    std::lock_guard lk(hub->mu_);
                    if (!pending.empty()) {
                        st = std::move(pending.front());
                        pending.pop_front();
                    }
                }
                if (!st) st = co_await read(id);  // another process may have written
                if (st) {
                    auto text = stem::serialize(*st);
                    if (text != last_seen) {
                        last_seen = std::move(text);
                        co_return st;
                    }
                }
                auto now = std::chrono::steady_clock::now();
                if (now >= deadline) co_return std::nullopt;
                co_await w->wait_until(std::min(deadline, now + hub->poll_));
            }
        }
        std::shared_ptr<waiter> w;
        std::shared_ptr<status_hub> hub;
        status_reader read;
        std::string id;
        std::deque<task_status> pending;  // guarded by hub->mu_
        std::string last_seen;            // the last status reported (as JSON)
    };

    void add_waiter(const std::string& id, const std::shared_ptr<waiter>& w) {
        std::lock_guard lk(mu_);
        auto& list = waiters_[id];
        if (std::find(list.begin(), list.end(), w) == list.end()) list.push_back(w);
    }
    void drop_waiter(const std::string& id, const std::shared_ptr<waiter>& w) {
        std::lock_guard lk(mu_);
        auto it = waiters_.find(id);
        if (it == waiters_.end()) return;
        std::erase(it->second, w);
        if (it->second.empty()) waiters_.erase(it);
    }
    void take_waiters(const std::string& id, std::vector<std::shared_ptr<waiter>>& out) {
        if (auto it = waiters_.find(id); it != waiters_.end()) {
            for (auto& w : it->second) out.push_back(w);
            waiters_.erase(it);
        }
    }

    std::chrono::milliseconds poll_;
    std::mutex mu_;
    std::map<std::string, std::vector<std::shared_ptr<waiter>>> waiters_;
    std::map<std::string, std::vector<std::weak_ptr<watch_impl>>> watchers_;
    std::map<const waiter*, task_status> handed_;  ///< terminal statuses given to woken waiters
};

}  // namespace stem::detail
