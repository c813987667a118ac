// stem/adapters/memory: the in-process adapters (tests, demos; no server, not durable).
// memory_backend.hpp — a result backend in process memory: statuses with TTL, waiting, groups, heartbeats.
#pragma once

#include <stem/contracts/result_backend.hpp>
#include <stem/detail/waiter.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/this_coro.hpp>
#include <boost/container_hash/hash.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

namespace stem {

/// Settings of a memory_backend.
struct memory_backend_options {
    std::chrono::milliseconds default_ttl{24 * 3'600'000};  ///< how long statuses and groups are kept
};

/// A result backend held in process memory. Copies share one store.
/// Thread-safe: any thread and any executor may call it (a mutex guards the store).
class memory_backend {
public:
    explicit memory_backend(memory_backend_options o = {}) : s_(std::make_shared<state>(o)) {}

    /// Writes when called: set is not a coroutine and takes the status by reference, so it
    /// is moved once, into the store; the awaitable it returns has nothing left to do.
    awaitable<void> set(const task_status& st, std::optional<std::chrono::milliseconds> ttl) { return set(task_status(st), ttl); }
    awaitable<void> set(task_status&& st, std::optional<std::chrono::milliseconds> ttl) {
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            auto now = clock::now();
            s_->sweep(now);
            auto expires = now + ttl.value_or(s_->opts.default_ttl);
            if (st.updated_at == time_point{}) st.updated_at = now;
            if (st.created_at == time_point{}) st.created_at = now;
            if (!s_->watchers.empty()) s_->feed_watchers(st, wake);
            if (!s_->waiters.empty() && is_terminal(st.state)) {
                if (auto it = s_->waiters.find(st.id); it != s_->waiters.end()) {
                    for (auto& w : it->second) wake.push_back(w);
                    s_->waiters.erase(it);
                }
            }
            auto key = status_key::of(st.id);
            auto state = st.state;
            if (auto it = s_->statuses.find(key); it != s_->statuses.end()) {
                auto& e = it->second;
                s_->by_state[std::size_t(e.state)]--;
                e.expires = expires;
                e.state = state;
                *e.status = std::move(st);
                it->first.id = e.status->id;  // the same id, in the new status's string
            } else {
                auto boxed = std::make_unique<task_status>(std::move(st));
                key.id = boxed->id;
                s_->statuses.emplace(key, entry{expires, state, std::move(boxed)});
            }
            s_->by_state[std::size_t(state)]++;
        }
        for (auto& w : wake) w->notify();
        return done();
    }

    awaitable<std::optional<task_status>> get(std::string id) {
        std::lock_guard lk(s_->mu);
        co_return s_->lookup(id, clock::now());
    }

    awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        std::shared_ptr<detail::waiter> w;
        for (;;) {
            {
                std::lock_guard lk(s_->mu);
                auto st = s_->lookup(id, clock::now());
                if ((st && is_terminal(st->state)) || std::chrono::steady_clock::now() >= deadline) {
                    if (w) s_->drop_waiter(id, w);
                    co_return st;
                }
                if (!w) w = std::make_shared<detail::waiter>();
                auto& list = s_->waiters[id];
                if (std::find(list.begin(), list.end(), w) == list.end()) list.push_back(w);
            }
            try {
                co_await w->wait_until(deadline);
            } catch (...) {
                std::lock_guard lk(s_->mu);
                s_->drop_waiter(id, w);
                throw;
            }
        }
    }

    awaitable<status_watch> watch(std::string id) {
        auto src = std::make_shared<watch_impl>();
        std::lock_guard lk(s_->mu);
        src->owner = s_;
        src->id = id;
        s_->watchers[id].push_back(src);
        co_return status_watch{src};
    }

    awaitable<std::vector<task_status>> list(status_filter f) {
        std::lock_guard lk(s_->mu);
        auto now = clock::now();
        std::vector<const task_status*> hits;
        for (auto& [key, e] : s_->statuses) {
            if (e.expires <= now) continue;
            if (f.state && e.state != *f.state) continue;
            if (!f.name.empty() && e.status->name != f.name) continue;
            hits.push_back(e.status.get());
        }
        std::sort(hits.begin(), hits.end(), [](auto* a, auto* b) {
            return std::tie(a->updated_at, a->id) < std::tie(b->updated_at, b->id);
        });
        std::vector<task_status> out;
        for (std::size_t i = f.offset; i < hits.size() && out.size() < f.limit; ++i) out.push_back(*hits[i]);
        co_return out;
    }

    awaitable<std::uint64_t> count(std::optional<task_state> state) {
        std::lock_guard lk(s_->mu);
        s_->sweep(clock::now(), true);
        if (state) co_return s_->by_state[std::size_t(*state)];
        co_return s_->statuses.size();
    }

    awaitable<void> init_group(group_descriptor g, std::optional<std::chrono::milliseconds> ttl) {
        std::lock_guard lk(s_->mu);
        auto now = clock::now();
        auto& slot = s_->groups[g.id];
        slot.record = group_record{g.id, std::move(g.task_ids), {}, false, std::move(g.meta), now};
        slot.expires = now + ttl.value_or(s_->opts.default_ttl);
        co_return;
    }

    awaitable<std::size_t> add_group_result(std::string group_id, task_status st) {
        std::lock_guard lk(s_->mu);
        auto* g = s_->group(group_id, clock::now());
        if (!g) throw error(errc::not_found, fmt::format("group '{}' does not exist or has expired", group_id));
        auto id = st.id;
        g->record.results.insert_or_assign(std::move(id), std::move(st));
        co_return g->record.results.size();
    }

    awaitable<std::optional<group_record>> get_group(std::string group_id) {
        std::lock_guard lk(s_->mu);
        auto* g = s_->group(group_id, clock::now());
        if (!g) co_return std::nullopt;
        co_return g->record;
    }

    awaitable<bool> claim_chord(std::string group_id) {
        std::lock_guard lk(s_->mu);
        auto* g = s_->group(group_id, clock::now());
        if (!g || g->record.chord_claimed) co_return false;
        g->record.chord_claimed = true;
        co_return true;
    }

    awaitable<void> set_heartbeat(worker_heartbeat hb, std::chrono::milliseconds ttl) {
        std::lock_guard lk(s_->mu);
        auto expires = clock::now() + ttl;
        auto id = hb.worker_id;
        s_->heartbeats.insert_or_assign(std::move(id), std::pair{std::move(hb), expires});
        co_return;
    }

    /// Writes apply at once, in the order they are made.
    backend_capabilities capabilities() const noexcept { return {.ordered_writes = true, .in_process = true}; }

    awaitable<std::vector<worker_heartbeat>> list_heartbeats() {
        std::lock_guard lk(s_->mu);
        auto now = clock::now();
        std::vector<worker_heartbeat> out;
        std::erase_if(s_->heartbeats, [&](auto& kv) { return kv.second.second <= now; });
        for (auto& [id, hb] : s_->heartbeats) out.push_back(hb.first);
        co_return out;
    }

private:
    struct state;
    static awaitable<void> done() { co_return; }
    struct watch_impl final : detail::watch_source {
        ~watch_impl() override {
            if (auto o = owner.lock()) {
                std::lock_guard lk(o->mu);
                if (auto it = o->watchers.find(id); it != o->watchers.end()) {
                    std::erase_if(it->second, [](auto& wp) { return wp.expired(); });
                    if (it->second.empty()) o->watchers.erase(it);
                }
            }
        }
        awaitable<std::optional<task_status>> next(std::chrono::milliseconds timeout) override {
            auto deadline = std::chrono::steady_clock::now() + timeout;
            for (;;) {
                if (auto o = owner.lock()) {
                    std::lock_guard lk(o->mu);
                    if (!pending.empty()) {
                        auto st = std::move(pending.front());
                        pending.pop_front();
                        co_return st;
                    }
                } else {
                    co_return std::nullopt;
                }
                if (!co_await w->wait_until(deadline)) co_return std::nullopt;
            }
        }
        std::weak_ptr<state> owner;
        std::string id;
        std::deque<task_status> pending;  // guarded by owner->mu
        std::shared_ptr<detail::waiter> w = std::make_shared<detail::waiter>();
    };
    /// A task id and its hash: growing the table rehashes without reading the ids. In the
    /// table, the id is a view of the record's own `task_status::id` (the id is not stored
    /// twice); replacing the record points it at the new record's string.
    struct status_key {
        mutable std::string_view id;
        std::size_t hash;
        static status_key of(std::string_view id) noexcept { return {id, boost::hash<std::string_view>{}(id)}; }
    };
    struct status_key_ops {
        using is_avalanching = void;  // boost::hash of a string already mixes well
        std::size_t operator()(const status_key& k) const noexcept { return k.hash; }
        bool operator()(const status_key& a, const status_key& b) const noexcept { return a.hash == b.hash && a.id == b.id; }
    };
    struct entry {
        time_point expires;
        task_state state;
        std::unique_ptr<task_status> status;
    };
    struct group_slot {
        group_record record;
        time_point expires;
    };
    struct state {
        explicit state(memory_backend_options o) : opts(o) {}
        memory_backend_options opts;
        std::mutex mu;
        // Open addressing (Boost 1.81's flat map) over boxed records: few cache misses per
        // lookup, growing the table moves pointers, not half-kilobyte statuses, and the
        // sweep reads expiry and state without touching the records.
        boost::unordered_flat_map<status_key, entry, status_key_ops, status_key_ops> statuses;
        std::array<std::uint64_t, 6> by_state{};  // may still count expired entries until the next sweep
        time_point next_sweep{};
        std::unordered_map<std::string, group_slot> groups;
        std::map<std::string, std::pair<worker_heartbeat, time_point>> heartbeats;
        std::unordered_map<std::string, std::vector<std::shared_ptr<detail::waiter>>> waiters;
        std::unordered_map<std::string, std::vector<std::weak_ptr<watch_impl>>> watchers;

        std::optional<task_status> lookup(const std::string& id, time_point now) {
            auto it = statuses.find(status_key::of(id));
            if (it == statuses.end()) return std::nullopt;
            if (it->second.expires <= now) {
                by_state[std::size_t(it->second.state)]--;
                statuses.erase(it);
                return std::nullopt;
            }
            return *it->second.status;
        }
        group_slot* group(const std::string& id, time_point now) {
            auto it = groups.find(id);
            if (it == groups.end()) return nullptr;
            if (it->second.expires <= now) {
                groups.erase(it);
                return nullptr;
            }
            return &it->second;
        }
        /// Drops expired statuses and groups: a scan at most once a second, or now when `full`.
        /// Between scans, lookups treat expired entries as absent.
        void sweep(time_point now, bool full = false) {
            if (!full && now < next_sweep) return;
            next_sweep = now + std::chrono::seconds(1);
            boost::unordered::erase_if(statuses, [&](const auto& kv) {
                if (kv.second.expires > now) return false;
                by_state[std::size_t(kv.second.state)]--;
                return true;
            });
            std::erase_if(groups, [&](auto& kv) { return kv.second.expires <= now; });
        }
        void feed_watchers(const task_status& st, std::vector<std::shared_ptr<detail::waiter>>& wake) {
            auto it = watchers.find(st.id);
            if (it == watchers.end()) return;
            for (auto& wp : it->second) {
                if (auto w = wp.lock()) {
                    w->pending.push_back(st);
                    wake.push_back(w->w);
                }
            }
        }
        void drop_waiter(const std::string& id, const std::shared_ptr<detail::waiter>& w) {
            auto it = waiters.find(id);
            if (it == waiters.end()) return;
            std::erase(it->second, w);
            if (it->second.empty()) waiters.erase(it);
        }
    };
    std::shared_ptr<state> s_;
};

static_assert(result_backend<memory_backend>);

}  // namespace stem
