// stem/adapters/memory: the in-process adapters (tests, demos; no server, not durable).
// memory_broker.hpp — a broker in process memory: priorities, delays, leases, dead letters, broadcast.
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/detail/broadcast_log.hpp>
#include <stem/detail/chunked_deque.hpp>
#include <stem/detail/waiter.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include <boost/asio/this_coro.hpp>
#include <boost/unordered/unordered_flat_map.hpp>

namespace stem {

/// Settings of a memory_broker.
struct memory_broker_options {
    std::chrono::milliseconds default_visibility_timeout{30'000};  ///< lease when the envelope names none
    std::size_t max_broadcast_backlog = 10'000;  ///< per channel; a subscriber further behind misses the oldest
};

/// A broker held in process memory. Copies share one store, so two copies act
/// as two connections to the same broker (broadcast fan-out spans them).
/// Thread-safe: any thread and any executor may call it (a mutex guards the store).
class memory_broker {
public:
    explicit memory_broker(memory_broker_options o = {}) : s_(std::make_shared<state>(o)) {}

    awaitable<void> publish(envelope e) {
        validate(e);
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            s_->enqueue(std::move(e), clock::now());
            s_->take_waiters(wake);
        }
        for (auto& w : wake) w->notify();
        co_return;
    }

    awaitable<void> publish_batch(std::vector<envelope> batch) {
        for (auto& e : batch) validate(e);
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            auto now = clock::now();
            for (auto& e : batch) s_->enqueue(std::move(e), now);
            s_->take_waiters(wake);
        }
        for (auto& w : wake) w->notify();
        co_return;
    }

    awaitable<void> broadcast(std::string channel, envelope e) {
        validate(e);
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            s_->channels.append(channel, std::move(e));
            s_->take_waiters(wake);
        }
        for (auto& w : wake) w->notify();
        co_return;
    }

    awaitable<std::vector<delivery>> consume(const subscription& sub, std::size_t max, std::chrono::milliseconds wait) {
        if (max == 0) co_return std::vector<delivery>{};
        auto deadline = std::chrono::steady_clock::now() + wait;
        std::shared_ptr<detail::waiter> w;
        for (;;) {
            std::vector<delivery> out;
            time_point next_event = time_point::max();
            {
                std::lock_guard lk(s_->mu);
                auto now = clock::now();
                s_->reclaim(now);
                s_->take(sub, max, now, out);
                if (!out.empty()) {
                    if (w) s_->drop_waiter(w);
                    co_return out;
                }
                if (std::chrono::steady_clock::now() >= deadline) {
                    if (w) s_->drop_waiter(w);
                    co_return out;
                }
                next_event = s_->next_event(sub);
                if (!w) w = std::make_shared<detail::waiter>();
                s_->add_waiter(w);
            }
            auto until = deadline;
            if (next_event != time_point::max()) until = std::min(until, detail::steady_deadline(next_event));
            try {
                co_await w->wait_until(until);
            } catch (...) {
                std::lock_guard lk(s_->mu);
                s_->drop_waiter(w);
                throw;
            }
        }
    }

    awaitable<bool> ack(const delivery& d) {
        if (d.broadcast) co_return true;
        std::lock_guard lk(s_->mu);
        auto it = s_->find_lease(d);
        if (it == s_->inflight.end()) co_return false;
        s_->queue(it->second.queue).inflight--;
        s_->inflight.erase(it);
        co_return true;
    }

    awaitable<bool> nack(const delivery& d, bool requeue) {
        if (d.broadcast) co_return true;
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            auto it = s_->find_lease(d);
            if (it == s_->inflight.end()) co_return false;
            auto& q = s_->queue(it->second.queue);
            q.inflight--;
            if (requeue) {
                q.ready[it->second.env.priority].push_front(std::move(it->second.env));
                q.ready_count++;
                s_->take_waiters(wake);
            }
            s_->inflight.erase(it);
        }
        for (auto& w : wake) w->notify();
        co_return true;
    }

    awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) {
        if (d.broadcast) co_return true;
        std::lock_guard lk(s_->mu);
        auto it = s_->find_lease(d);
        if (it == s_->inflight.end() || it->second.lease_expires < clock::now()) co_return false;
        auto& lease = it->second;
        lease.lease_expires = clock::now() + by;
        s_->leases.push_back({lease.lease_expires, d.tag});
        std::push_heap(s_->leases.begin(), s_->leases.end(), std::greater<>{});
        co_return true;
    }

    awaitable<bool> retry(const delivery& d, envelope next) {
        validate(next);
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            auto it = s_->find_lease(d);
            if (it == s_->inflight.end()) co_return false;
            s_->queue(it->second.queue).inflight--;
            s_->inflight.erase(it);
            s_->enqueue(std::move(next), clock::now());
            s_->take_waiters(wake);
        }
        for (auto& w : wake) w->notify();
        co_return true;
    }

    awaitable<bool> dead_letter(const delivery& d, std::string reason) {
        std::lock_guard lk(s_->mu);
        if (d.broadcast) {
            s_->queue(d.queue).dead.push_back({d.env, std::move(reason), clock::now()});
            co_return true;
        }
        auto it = s_->find_lease(d);
        if (it == s_->inflight.end()) co_return false;
        auto& q = s_->queue(it->second.queue);
        q.inflight--;
        q.dead.push_back({std::move(it->second.env), std::move(reason), clock::now()});
        s_->inflight.erase(it);
        co_return true;
    }

    /// Dead letters of `queue` (all queues when empty), oldest first.
    awaitable<dead_letter_page> list_dead_letters(std::string queue, std::size_t limit, std::size_t offset) {
        std::lock_guard lk(s_->mu);
        dead_letter_page page;
        std::size_t skipped = 0;
        s_->for_dead(queue, [&](const dead_letter_entry& dl) {
            ++page.total;
            if (skipped < offset) { ++skipped; return; }
            if (page.items.size() < limit) page.items.push_back(dl);
        });
        co_return page;
    }

    awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string id) {
        std::lock_guard lk(s_->mu);
        std::optional<dead_letter_entry> found;
        s_->for_dead("", [&](const dead_letter_entry& dl) {
            if (!found && dl.env.id == id) found = dl;
        });
        co_return found;
    }

    /// Moves up to `o.limit` of the oldest dead letters of `queue` back to their queue
    /// with attempt 0 (hidden until now + `o.delay` if given). Dry run: report only.
    awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string queue, replay_options o) {
        std::vector<dead_letter_entry> out;
        std::vector<std::shared_ptr<detail::waiter>> wake;
        {
            std::lock_guard lk(s_->mu);
            auto now = clock::now();
            for (auto& [name, q] : s_->queues) {
                if (!queue.empty() && name != queue) continue;
                while (!q.dead.empty() && out.size() < o.limit) {
                    if (o.dry_run) {
                        for (std::size_t i = 0; i < q.dead.size() && out.size() < o.limit; ++i) out.push_back(q.dead[i]);
                        break;
                    }
                    out.push_back(std::move(q.dead.front()));
                    q.dead.pop_front();
                    envelope e = out.back().env;
                    e.attempt = 0;
                    e.not_before.reset();
                    if (o.delay) e.not_before = now + *o.delay;
                    s_->enqueue(std::move(e), now);
                }
            }
            if (!o.dry_run) s_->take_waiters(wake);
        }
        for (auto& w : wake) w->notify();
        co_return out;
    }

    /// Removes the dead letters of `queue` (all when empty); returns how many (would have been) removed.
    awaitable<std::uint64_t> purge_dead_letters(std::string queue, bool dry_run) {
        std::lock_guard lk(s_->mu);
        std::uint64_t n = 0;
        for (auto& [name, q] : s_->queues) {
            if (!queue.empty() && name != queue) continue;
            n += q.dead.size();
            if (!dry_run) q.dead.clear();
        }
        co_return n;
    }

    /// Removes every pending and delayed envelope of `queue`; returns how many.
    awaitable<std::uint64_t> purge(std::string queue) {
        std::lock_guard lk(s_->mu);
        auto it = s_->queues.find(queue);
        if (it == s_->queues.end()) co_return 0;
        auto& q = it->second;
        std::uint64_t n = q.ready_count + q.delayed.size();
        for (auto& b : q.ready) b.clear();
        q.ready_count = 0;
        q.delayed.clear();
        co_return n;
    }

    awaitable<queue_stats> stats(std::string queue) {
        std::lock_guard lk(s_->mu);
        s_->reclaim(clock::now());
        auto it = s_->queues.find(queue);
        if (it == s_->queues.end()) co_return queue_stats{queue, 0, 0, 0, 0};
        auto& q = it->second;
        co_return queue_stats{queue, q.ready_count, q.delayed.size(), q.inflight, q.dead.size()};
    }

    awaitable<std::vector<std::string>> queues() {
        std::lock_guard lk(s_->mu);
        std::vector<std::string> out;
        for (auto& [name, q] : s_->queues) out.push_back(name);
        co_return out;
    }

    broker_capabilities capabilities() const noexcept {
        return {.priority = true, .delay = true, .cross_process_broadcast = false, .durable = false};
    }

private:
    struct delayed_item {
        time_point due;
        std::uint64_t seq;
        envelope env;
        bool operator>(const delayed_item& o) const { return std::tie(due, seq) > std::tie(o.due, o.seq); }
    };
    struct queue_state {
        std::array<detail::chunked_deque<envelope>, max_priority + 1> ready;
        std::uint64_t ready_count = 0;
        std::vector<delayed_item> delayed;  // min-heap on (due, seq)
        std::deque<dead_letter_entry> dead;
        std::uint64_t inflight = 0;
    };
    struct lease {
        envelope env;
        std::string queue;
        time_point lease_expires;
    };
    struct lease_ref {
        time_point expires;
        std::uint64_t tag;
        bool operator>(const lease_ref& o) const { return std::tie(expires, tag) > std::tie(o.expires, o.tag); }
    };
    struct state {
        explicit state(memory_broker_options o) : opts(o), channels(o.max_broadcast_backlog) {}
        memory_broker_options opts;
        std::mutex mu;
        std::map<std::string, queue_state, std::less<>> queues;
        boost::unordered_flat_map<std::uint64_t, lease> inflight;  // small: at most what consumers hold
        std::vector<lease_ref> leases;  // min-heap; stale entries skipped
        detail::broadcast_log channels;
        std::vector<std::shared_ptr<detail::waiter>> waiters;
        std::uint64_t next_tag = 1;
        std::uint64_t next_seq = 0;

        queue_state& queue(std::string_view name) {
            auto it = queues.find(name);
            if (it == queues.end()) it = queues.emplace(std::string(name), queue_state{}).first;
            return it->second;
        }
        void enqueue(envelope e, time_point now) {
            auto& q = queue(e.queue);
            if (e.not_before && *e.not_before > now) {
                auto due = *e.not_before;
                q.delayed.push_back({due, next_seq++, std::move(e)});
                std::push_heap(q.delayed.begin(), q.delayed.end(), std::greater<>{});
            } else {
                auto p = e.priority;
                q.ready[p].push_back(std::move(e));
                q.ready_count++;
            }
        }
        void promote_due(queue_state& q, time_point now) {
            while (!q.delayed.empty() && q.delayed.front().due <= now) {
                std::pop_heap(q.delayed.begin(), q.delayed.end(), std::greater<>{});
                auto item = std::move(q.delayed.back());
                q.delayed.pop_back();
                auto p = item.env.priority;
                q.ready[p].push_back(std::move(item.env));
                q.ready_count++;
            }
        }
        /// Expired leases go back to the front of their queue, to be delivered again.
        void reclaim(time_point now) {
            while (!leases.empty() && leases.front().expires <= now) {
                std::pop_heap(leases.begin(), leases.end(), std::greater<>{});
                auto ref = leases.back();
                leases.pop_back();
                auto it = inflight.find(ref.tag);
                if (it == inflight.end() || it->second.lease_expires != ref.expires) continue;  // acked or extended
                auto& q = queue(it->second.queue);
                q.inflight--;
                auto p = it->second.env.priority;
                q.ready[p].push_front(std::move(it->second.env));
                q.ready_count++;
                inflight.erase(it);
            }
        }
        boost::unordered_flat_map<std::uint64_t, lease>::iterator find_lease(const delivery& d) {
            auto it = inflight.find(d.tag);
            if (it == inflight.end() || it->second.lease_expires < clock::now()) {
                if (it != inflight.end()) {
                    // The lease ran out: return the envelope to its queue now rather than at the next consume.
                    reclaim(clock::now());
                }
                return inflight.end();
            }
            return it;
        }
        void take(const subscription& sub, std::size_t max, time_point now, std::vector<delivery>& out) {
            std::vector<queue_state*> qs;
            qs.reserve(sub.queues.size());
            std::uint64_t ready = 0;
            for (auto& name : sub.queues) {
                auto& q = queue(name);
                promote_due(q, now);
                qs.push_back(&q);
                ready += q.ready_count;
            }
            out.reserve(out.size() + std::min<std::uint64_t>(max, ready));  // deliveries are moved once, not on growth
            // Highest priority first across every subscribed queue; within one priority,
            // the queues take turns starting from a rotating position.
            std::size_t start = rotation++;
            for (int p = max_priority; p >= 0 && out.size() < max; --p) {
                bool any = true;
                while (any && out.size() < max) {
                    any = false;
                    for (std::size_t k = 0; k < qs.size() && out.size() < max; ++k) {
                        std::size_t i = (start + k) % qs.size();
                        auto& bucket = qs[i]->ready[p];
                        if (bucket.empty()) continue;
                        any = true;
                        grant(sub.queues[i], *qs[i], bucket, now, out);
                    }
                }
            }
            channels.read(sub, max, out);
        }
        void grant(const std::string& qname, queue_state& q, detail::chunked_deque<envelope>& bucket, time_point now,
                   std::vector<delivery>& out) {
            // Built in place, the envelope moved once and copied once (into the lease): an
            // envelope is not cheap to move.
            auto tag = next_tag++;
            auto& d = out.emplace_back(std::move(bucket.front()), qname, tag, tag);
            bucket.pop_front();
            q.ready_count--;
            q.inflight++;
            d.lease_expires = now + d.env.visibility_timeout.value_or(opts.default_visibility_timeout);
            inflight.try_emplace(d.tag, d.env, qname, d.lease_expires);
            leases.push_back({d.lease_expires, d.tag});
            std::push_heap(leases.begin(), leases.end(), std::greater<>{});
        }
        /// When something may become deliverable without a publish: a delay or a lease running out.
        time_point next_event(const subscription& sub) {
            time_point t = time_point::max();
            for (auto& name : sub.queues) {
                auto& q = queue(name);
                if (!q.delayed.empty()) t = std::min(t, q.delayed.front().due);
            }
            if (!leases.empty()) t = std::min(t, leases.front().expires);
            return t;
        }
        template <class F>
        void for_dead(std::string_view queue_name, F&& f) {
            for (auto& [name, q] : queues) {
                if (!queue_name.empty() && name != queue_name) continue;
                for (auto& dl : q.dead) f(dl);
            }
        }
        void add_waiter(const std::shared_ptr<detail::waiter>& w) {
            if (std::find(waiters.begin(), waiters.end(), w) == waiters.end()) waiters.push_back(w);
        }
        void drop_waiter(const std::shared_ptr<detail::waiter>& w) {
            std::erase(waiters, w);
        }
        /// Every waiting consumer re-checks after a change (they are few: one per worker).
        void take_waiters(std::vector<std::shared_ptr<detail::waiter>>& out) {
            if (waiters.empty()) return;
            out.swap(waiters);
        }
        std::size_t rotation = 0;
    };
    std::shared_ptr<state> s_;
};

static_assert(broker<memory_broker>);

}  // namespace stem
