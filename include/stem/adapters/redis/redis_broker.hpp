// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// redis_broker.hpp — a broker on Redis Streams: a stream per queue and priority, consumer
// groups, leases with tokens in a sorted set, delayed envelopes in a sorted set, dead
// letters, broadcasts with a consumer group per subscriber. docs/adapters/redis.md.
#pragma once

#include <stem/adapters/redis/client.hpp>
#include <stem/adapters/redis/detail/broker_scripts.hpp>
#include <stem/adapters/redis/detail/coalescer.hpp>
#include <stem/contracts/broker.hpp>
#include <stem/core/clock.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>

namespace stem {

/// Settings of a redis_broker.
struct redis_broker_options {
    redis::config server{};                                        ///< where Redis is
    /// Runs the connections on this executor instead of the process's Redis I/O thread:
    /// no thread hop per request (lower latency). Its execution context must outlive the
    /// adapter, and a multi-threaded context needs no strand (connections make their own).
    boost::asio::any_io_executor executor{};
    std::string namespace_ = "stem";                               ///< key prefix ("{stem}:…")
    std::chrono::milliseconds default_visibility_timeout{30'000};  ///< lease when the envelope names none
    std::chrono::milliseconds dead_letter_retention{7 * 24 * 3'600'000};  ///< older dead letters are removed
    std::chrono::milliseconds broadcast_poll{500};  ///< how often a consumer of broadcast channels looks while idle
    std::size_t broadcast_max_length = 10'000;      ///< broadcast streams are trimmed to about this many entries
    /// How long a batch of acks that meets a lost connection is sent again (after each
    /// reconnection) before its callers get the error.
    std::chrono::milliseconds ack_retry_window{10'000};
};

/// A broker on Redis Streams. Any number of producers and workers on any machines may
/// share one Redis. Ordinary commands of all coroutines share one pipelined connection;
/// an idle consumer waits in `XREADGROUP … BLOCK` on a connection of its own. Acks made
/// at about the same time go to the server together (see ack_many).
///
/// A lease is a member `<priority>:<entry id>:<token>` of a sorted set scored by its
/// expiry: each delivery has its own expiry (its envelope's visibility timeout), extending
/// changes the score of the same member, and taking an expired lease again increments the
/// token, so an ack, extension, retry or dead-lettering with the old token changes nothing.
class redis_broker {
public:
    explicit redis_broker(redis_broker_options o) : s_(std::make_shared<state>(std::move(o))) {}

    /// The namespace (keys start with "{namespace}:").
    const std::string& namespace_name() const noexcept { return s_->opts.namespace_; }

    awaitable<void> publish(envelope e) {
        validate(e);
        auto s = s_;
        redis::request r;
        s->push_publish(r, e, serialize(e), now_ms());
        auto rs = co_await s->exec_ensured(std::move(r), e.queue);
        for (auto& x : rs) redis::checked(*x, "publish");
    }

    /// All envelopes in one round trip (one pipelined write).
    awaitable<void> publish_batch(std::vector<envelope> batch) {
        for (auto& e : batch) validate(e);
        if (batch.empty()) co_return;
        auto s = s_;
        std::set<std::string> queues;
        redis::request r;
        auto now = now_ms();
        for (auto& e : batch) {
            s->push_publish(r, e, serialize(e), now);
            queues.insert(e.queue);
        }
        std::vector<std::string> names(queues.begin(), queues.end());
        auto rs = co_await s->exec_ensured(std::move(r), std::move(names));
        for (auto& x : rs) redis::checked(*x, "publish");
    }

    /// Adds `e` to the broadcast stream of `channel`: every consumer that has read the
    /// channel before gets it once.
    awaitable<void> broadcast(std::string channel, envelope e) {
        validate(e);
        auto s = s_;
        redis::request r;
        r.push("XADD", s->prefix + ":bc:" + channel, "MAXLEN", "~", s->opts.broadcast_max_length, "*", "v", "0", "e", serialize(e));
        auto rs = co_await s->cli.exec(std::move(r));
        redis::checked(*rs.at(0), "broadcast");
    }

    awaitable<std::vector<delivery>> consume(const subscription& sub, std::size_t max, std::chrono::milliseconds wait) {
        if (max == 0) co_return std::vector<delivery>{};
        max = std::min<std::size_t>(max, 1000);  // a script's variadic calls stay well inside Lua's stack
        auto s = s_;
        auto deadline = std::chrono::steady_clock::now() + wait;
        co_await s->ensure(sub.queues);
        for (;;) {
            std::int64_t next_ms = -1;
            auto out = co_await s->claim(sub, max, next_ms);
            auto now = std::chrono::steady_clock::now();
            if (!out.empty() || now >= deadline) co_return out;
            // Wait for new entries in a blocking read, at most until something delayed
            // falls due, a lease expires, or broadcasts are looked at again.
            auto until = deadline;
            if (next_ms >= 0)
                until = std::min(until, now + std::chrono::milliseconds(std::max<std::int64_t>(1, next_ms - now_ms())));
            if (!sub.broadcasts.empty()) until = std::min(until, now + s->opts.broadcast_poll);
            if (sub.queues.empty()) {
                boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, until);
                co_await t.async_wait(boost::asio::use_awaitable);
                continue;
            }
            auto block = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
            out = co_await s->block_read(sub, max, std::max(block, std::chrono::milliseconds(1)));
            if (!out.empty()) co_return out;
        }
    }

    awaitable<bool> ack(const delivery& d) {
        if (d.broadcast) co_return true;
        auto s = s_;
        co_return co_await s->acks->submit(lease_of(d));
    }

    awaitable<bool> nack(const delivery& d, bool requeue) {
        if (d.broadcast) co_return true;
        auto s = s_;
        if (!requeue) co_return co_await s->acks->submit(lease_of(d));
        auto l = lease_of(d);
        std::vector<std::string> args{l.queue, l.priority, l.id, std::to_string(l.token)};
        auto r = co_await s->eval(s->requeue, std::move(args));
        co_return redis::integer(*r) == 1;
    }

    awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) {
        if (d.broadcast) co_return true;
        auto s = s_;
        auto l = lease_of(d);
        std::vector<std::string> args{l.queue, l.priority, l.id, std::to_string(l.token), std::to_string(now_ms() + by.count())};
        auto r = co_await s->eval(s->extend, std::move(args));
        co_return redis::integer(*r) == 1;
    }

    /// Releases the delivery and publishes `next` (delayed if it has a not_before) in one
    /// script: no dead letter, nothing lost in between.
    awaitable<bool> retry(const delivery& d, envelope next) {
        validate(next);
        auto s = s_;
        auto l = lease_of(d);
        auto due = next.not_before ? to_ms(*next.not_before) : 0;
        std::vector<std::string> args{l.queue, l.priority, l.id, std::to_string(l.token), next.queue, std::to_string(next.priority),
                                   std::to_string(visibility_ms(next)), std::to_string(due), serialize(next)};
        auto r = co_await s->eval(s->retry, std::move(args));
        co_return redis::integer(*r) == 1;
    }

    awaitable<bool> dead_letter(const delivery& d, std::string reason) {
        auto s = s_;
        lease l;
        if (d.broadcast) l.queue = d.queue;
        else l = lease_of(d);
        std::vector<std::string> args{l.queue, l.priority, l.id, std::to_string(l.token), d.env.id, reason, serialize(d.env),
                                   std::to_string(s->opts.dead_letter_retention.count())};
        auto r = co_await s->eval(s->dead, std::move(args));
        co_return redis::integer(*r) == 1;
    }

    /// Dead letters of `queue` (all queues when empty), oldest first.
    awaitable<dead_letter_page> list_dead_letters(std::string queue, std::size_t limit, std::size_t offset) {
        auto s = s_;
        std::vector<std::string> args{queue, std::to_string(offset), std::to_string(limit)};
        auto r = co_await s->eval(s->dead_page, std::move(args));
        dead_letter_page page;
        page.total = std::uint64_t(redis::integer(redis::at(*r, 0)));
        for (std::size_t i = 1; i < redis::size(*r); ++i) page.items.push_back(read_dead(redis::text(redis::at(*r, i))));
        co_return page;
    }

    awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string id) {
        auto s = s_;
        redis::request req;
        req.push("HGET", s->prefix + ":dead_data", id);
        auto rs = co_await s->cli.exec(std::move(req));
        auto& r = redis::checked(*rs.at(0), "get_dead_letter");
        if (redis::is_nil(r)) co_return std::nullopt;
        co_return read_dead(redis::text(r));
    }

    /// Publishes the oldest `o.limit` dead letters again (attempt 0), oldest first.
    awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string queue, replay_options o) {
        auto s = s_;
        auto page = co_await list_dead_letters(queue, o.limit, 0);
        if (o.dry_run) co_return std::move(page.items);
        std::vector<dead_letter_entry> replayed;
        std::set<std::string> queues;
        for (auto& dl : page.items) queues.insert(dl.env.queue);
        std::vector<std::string> names(queues.begin(), queues.end());
        co_await s->ensure(names);
        auto now = clock::now();
        for (auto& dl : page.items) {
            envelope e = dl.env;
            e.attempt = 0;
            e.not_before.reset();
            if (o.delay) e.not_before = now + *o.delay;
            auto due = e.not_before ? to_ms(*e.not_before) : 0;
            std::vector<std::string> args{e.id, e.queue, std::to_string(e.priority), std::to_string(visibility_ms(e)), std::to_string(due),
                                       serialize(e)};
            auto r = co_await s->eval(s->replay_one, std::move(args));
            if (redis::integer(*r) == 1) replayed.push_back(std::move(dl));
        }
        co_return replayed;
    }

    awaitable<std::uint64_t> purge_dead_letters(std::string queue, bool dry_run) {
        auto s = s_;
        if (dry_run) {
            auto page = co_await list_dead_letters(queue, 0, 0);
            co_return page.total;
        }
        std::vector<std::string> args{queue};
        auto r = co_await s->eval(s->purge_dead, std::move(args));
        co_return std::uint64_t(redis::integer(*r));
    }

    /// Removes every pending and delayed envelope of `queue` (leased ones stay); returns how many.
    awaitable<std::uint64_t> purge(std::string queue) {
        auto s = s_;
        std::vector<std::string> args{queue};
        auto r = co_await s->eval(s->purge, std::move(args));
        co_return std::uint64_t(redis::integer(*r));
    }

    awaitable<queue_stats> stats(std::string queue) {
        auto s = s_;
        std::vector<std::string> args{queue};
        auto r = co_await s->eval(s->stats_script, std::move(args));
        queue_stats st;
        st.queue = queue;
        st.pending = std::uint64_t(std::max<std::int64_t>(0, redis::integer(redis::at(*r, 0))));
        st.delayed = std::uint64_t(redis::integer(redis::at(*r, 1)));
        st.inflight = std::uint64_t(redis::integer(redis::at(*r, 2)));
        st.dead = std::uint64_t(redis::integer(redis::at(*r, 3)));
        co_return st;
    }

    awaitable<std::vector<std::string>> queues() {
        auto s = s_;
        redis::request req;
        req.push("SMEMBERS", s->prefix + ":queues");
        auto rs = co_await s->cli.exec(std::move(req));
        auto& r = redis::checked(*rs.at(0), "queues");
        std::vector<std::string> out;
        for (std::size_t i = 0; i < redis::size(r); ++i) out.emplace_back(redis::text(redis::at(r, i)));
        std::sort(out.begin(), out.end());
        co_return out;
    }

    broker_capabilities capabilities() const { return {.priority = true, .delay = true, .cross_process_broadcast = true, .durable = true}; }

private:
    /// What a delivery's lease is made of (kept in delivery::queue, locator and token).
    struct lease {
        std::string queue;
        std::string priority;  ///< "0".."9"; empty for a broadcast
        std::string id;        ///< stream entry id
        std::uint64_t token = 0;
    };

    static lease lease_of(const delivery& d) {
        auto colon = d.locator.find(':');
        if (colon == std::string::npos) throw error(errc::invalid_argument, "redis_broker: the delivery has no lease locator");
        return {d.queue, d.locator.substr(0, colon), d.locator.substr(colon + 1), d.token};
    }

    /// A lease's member of `P:leases:<queue>`: "<priority>:<entry id>:<token>".
    template <class Priority>
    static std::string lease_member(const Priority& priority, std::string_view id, std::uint64_t token) {
        return fmt::format("{}:{}:{}", priority, id, token);
    }

    static std::int64_t to_ms(time_point t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }
    static std::int64_t now_ms() { return to_ms(clock::now()); }
    static std::int64_t visibility_ms(const envelope& e) { return e.visibility_timeout ? std::int64_t(e.visibility_timeout->count()) : 0; }

    /// A dead-letter record (JSON {q, r, t, e}); an envelope that no longer decodes is shown
    /// with its queue, and its text as the arguments.
    static dead_letter_entry read_dead(std::string_view rec) {
        auto v = boost::json::parse(rec).as_object();
        dead_letter_entry dl;
        std::string text(v.at("e").as_string());
        try {
            dl.env = parse_envelope(text);
        } catch (const std::exception&) {
            dl.env.queue = std::string(v.at("q").as_string());
            dl.env.name = "(undecodable)";
            dl.env.args = std::move(text);
        }
        dl.reason = std::string(v.at("r").as_string());
        dl.dead_at = time_point(std::chrono::milliseconds(v.at("t").to_number<std::int64_t>()));
        return dl;
    }

    struct state : std::enable_shared_from_this<state> {
        explicit state(redis_broker_options o)
            : opts(std::move(o)), prefix("{" + opts.namespace_ + "}"), cli(opts.server, opts.executor),
              reclaim(script("reclaim", redis::detail::broker_lua::reclaim)), ensure_script(script("ensure", redis::detail::broker_lua::ensure)),
              requeue(script("requeue", redis::detail::broker_lua::requeue)), extend(script("extend", redis::detail::broker_lua::extend)),
              retry(script("retry", redis::detail::broker_lua::retry)), dead(script("dead", redis::detail::broker_lua::dead)), dead_page(script("dead_page", redis::detail::broker_lua::dead_page)),
              replay_one(script("replay_one", redis::detail::broker_lua::replay_one)), purge_dead(script("purge_dead", redis::detail::broker_lua::purge_dead)), purge(script("purge", redis::detail::broker_lua::purge)),
              stats_script(script("stats", redis::detail::broker_lua::stats)), sweep(script("sweep", redis::detail::broker_lua::sweep)), broadcast_read(script("broadcast_read", redis::detail::broker_lua::broadcast_read)),
              ack_orphan(script("ack", redis::detail::broker_lua::ack)) {
            if (opts.namespace_.empty() || opts.namespace_.find_first_of("{}") != std::string::npos)
                throw error(errc::invalid_argument, fmt::format("redis_broker: bad namespace '{}'", opts.namespace_));
            acks = std::make_shared<redis::detail::coalescer<lease, bool>>(
                cli.executor(), [this](std::vector<lease>& ls) { return ack_many(ls); }, 256, 8);
            for (auto* sc : {&reclaim, &ensure_script, &requeue, &extend, &retry, &dead, &dead_page, &replay_one,
                             &purge_dead, &purge, &stats_script, &sweep, &broadcast_read})
                cli.preload(*sc);
        }

        static redis::script script(const char* name, std::string_view body) {
            return redis::script(name, std::string(redis::detail::broker_lua::prelude) + std::string(body));
        }

        /// Runs `s` with ARGV = prefix, now (ms), args...
        /// `P:q:<queue>:<p>`, the stream of a queue's priority p.
        template <class Priority>
        std::string stream_name(std::string_view queue, const Priority& priority) const {
            return fmt::format("{}:q:{}:{}", prefix, queue, priority);
        }
        /// `P:leases:<queue>`.
        std::string leases_key(std::string_view queue) const { return fmt::format("{}:leases:{}", prefix, queue); }

        awaitable<redis::reply> eval(const redis::script& s, std::vector<std::string> args) {
            args.insert(args.begin(), {prefix, std::to_string(now_ms())});
            std::vector<std::string> keys{prefix + ":queues"};
            co_return co_await cli.eval(s, std::move(keys), std::move(args));
        }

        void push_publish(redis::request& r, const envelope& e, const std::string& text, std::int64_t now) {
            auto vis = std::to_string(visibility_ms(e));
            if (e.not_before && to_ms(*e.not_before) > now) {
                r.push("ZADD", prefix + ":delayed:" + e.queue, to_ms(*e.not_before),
                       std::to_string(e.priority) + ":" + vis + ":" + text);
            } else {
                r.push("XADD", stream_name(e.queue, e.priority), "*", "v", vis, "e", text);
            }
        }

        /// Creates the streams and groups of queues this object has not seen yet.
        awaitable<void> ensure(const std::vector<std::string>& queues) {
            std::vector<std::string> fresh;
            {
                std::lock_guard lk(mu);
                for (auto& q : queues)
                    if (!ensured.contains(q)) fresh.push_back(q);
            }
            if (fresh.empty()) co_return;
            co_await eval(ensure_script, fresh);
            std::lock_guard lk(mu);
            ensured.insert(fresh.begin(), fresh.end());
        }
        awaitable<std::vector<redis::reply>> exec_ensured(redis::request r, std::vector<std::string> queues) {
            co_await ensure(queues);
            co_return co_await cli.exec(std::move(r));
        }
        awaitable<std::vector<redis::reply>> exec_ensured(redis::request r, const std::string& queue) {
            std::vector<std::string> queues(1, queue);
            co_return co_await exec_ensured(std::move(r), std::move(queues));
        }
        void forget_ensured() {
            std::lock_guard lk(mu);
            ensured.clear();
        }

        /// One round trip: broadcasts, the reclaim script, a plain XREADGROUP of the queues'
        /// streams (and now and then the sweep); then `settle` keeps the best `max`.
        awaitable<std::vector<delivery>> claim(const subscription& sub, std::size_t max, std::int64_t& next_ms) {
            auto now = now_ms();
            std::vector<std::string> args{prefix, std::to_string(now), sub.consumer};
            redis::request r;
            bool bc = !sub.broadcasts.empty();
            if (bc) {
                auto a = args;
                a.push_back(std::to_string(max));
                a.insert(a.end(), sub.broadcasts.begin(), sub.broadcasts.end());
                redis::client::push_script(r, broadcast_read, {prefix + ":queues"}, a);
            }
            bool q = !sub.queues.empty();
            read_plan plan;
            if (q) {
                auto a = args;
                a.push_back(std::to_string(max));
                a.push_back(std::to_string(opts.default_visibility_timeout.count()));
                a.insert(a.end(), sub.queues.begin(), sub.queues.end());
                redis::client::push_script(r, reclaim, {prefix + ":queues"}, a);
                plan = read_command(sub, max, std::nullopt);
                r.push_range(plan.argv.begin(), plan.argv.end());
            }
            bool sweeping = q && due_for_sweep();
            if (sweeping) {
                auto a = args;
                a.push_back(std::to_string(opts.default_visibility_timeout.count()));
                a.insert(a.end(), sub.queues.begin(), sub.queues.end());
                redis::client::push_script(r, sweep, {prefix + ":queues"}, a);
            }
            // Where each reply is.
            std::size_t at_reclaim = bc, at_read = bc + 1, at_sweep = bc + 2;
            // If this call is cancelled, what the server took or read anyway goes to the next
            // consumer at once.
            auto orphan = [weak = weak_from_this(), queues = sub.queues, plan, q, at_reclaim, at_read](std::vector<redis::reply> rs) {
                auto self = weak.lock();
                if (!self || !q || rs.size() <= at_read) return;
                std::vector<candidate> cs;
                std::int64_t ignored = 0;
                self->gather(cs, rs[at_reclaim].get(), rs[at_read].get(), plan, ignored);
                self->settle(cs, queues, 0);
            };
            auto rs = co_await cli.exec(std::move(r), std::move(orphan));
            const redisReply* bc_rep = bc ? rs[0].get() : nullptr;
            const redisReply* reclaimed = q ? rs[at_reclaim].get() : nullptr;
            const redisReply* read = q ? rs[at_read].get() : nullptr;
            const redisReply* swept = sweeping ? rs[at_sweep].get() : nullptr;
            bool nogroup = read && redis::is_error(*read) && redis::text(*read).find("NOGROUP") != std::string_view::npos;
            bool failed = false, noscript = false;
            for (auto* x : {bc_rep, reclaimed, nogroup ? nullptr : read, swept})
                if (x && redis::is_error(*x)) {
                    failed = true;
                    noscript = noscript || redis::text(*x).starts_with("NOSCRIPT");
                }
            std::vector<candidate> cs;
            gather(cs, reclaimed, read, plan, next_ms);
            // After a failure, what was taken or read goes to the next consumer at once.
            auto fresh = settle(cs, sub.queues, failed ? 0 : max);
            if (nogroup) {
                forget_ensured();  // someone removed the keys: make them again
                co_await ensure(sub.queues);
            }
            if (noscript) {
                // First use on this server: load the scripts and try again.
                redis::request load;
                for (auto* sc : {&broadcast_read, &reclaim, &sweep}) load.push("SCRIPT", "LOAD", sc->source());
                for (auto& x : co_await cli.exec(std::move(load))) redis::checked(*x, "SCRIPT LOAD");
                co_return co_await claim(sub, max, next_ms);
            }
            std::vector<delivery> out;
            if (bc) {
                auto& b = redis::checked(*bc_rep, "broadcast_read");
                for (std::size_t k = 0; k + 1 < redis::size(b); k += 2) {
                    delivery d;
                    d.queue = sub.broadcasts.at(std::size_t(redis::integer(redis::at(b, k))) - 1);
                    d.broadcast = true;
                    try {
                        d.env = parse_envelope(redis::text(redis::at(b, k + 1)));
                    } catch (const std::exception&) {
                        continue;  // a broadcast nobody can read: nothing to keep
                    }
                    out.push_back(std::move(d));
                }
            }
            if (q) redis::checked(*reclaimed, "reclaim");
            if (read && !nogroup) redis::checked(*read, "XREADGROUP");
            if (sweeping) redis::checked(*swept, "sweep");
            if (out.empty()) co_return fresh;
            std::move(fresh.begin(), fresh.end(), std::back_inserter(out));
            co_return out;
        }

        /// Decodes a delivered envelope; one that does not decode is dead-lettered with the
        /// reason (false) and the consumer goes on.
        bool decode_or_bury(delivery& d, std::string_view text) {
            try {
                d.env = parse_envelope(text);
                return true;
            } catch (const std::exception& e) {
                auto l = lease_of(d);
                d.env.id = fmt::format("undecodable-{}", l.id);
                d.env.queue = d.queue;
                auto reason = fmt::format("decode-error: {}", e.what());
                std::vector<std::string> args{l.queue, l.priority, l.id, std::to_string(l.token), d.env.id, reason, std::string(text),
                                              std::to_string(opts.dead_letter_retention.count())};
                boost::asio::co_spawn(cli.executor(), bury(shared_from_this(), std::move(args)), boost::asio::detached);
                return false;
            }
        }
        static awaitable<void> bury(std::shared_ptr<state> self, std::vector<std::string> args) {
            try {
                co_await self->eval(self->dead, std::move(args));
            } catch (const std::exception&) {
                // Its lease runs out and the next consumer tries (and buries) it again.
            }
        }

        bool due_for_sweep() {
            auto now = std::chrono::steady_clock::now();
            std::lock_guard lk(mu);
            if (now < next_sweep) return false;
            next_sweep = now + opts.default_visibility_timeout;
            return true;
        }

        /// Waits in XREADGROUP … BLOCK for new entries of the subscription's queues, then
        /// leases what it got.
        awaitable<std::vector<delivery>> block_read(const subscription& sub, std::size_t max, std::chrono::milliseconds block) {
            auto plan = read_command(sub, max, block);
            redis::request r;
            r.push_range(plan.argv.begin(), plan.argv.end());
            // Entries a cancelled reader got are leased as expired: the next consumer takes them.
            auto orphan = [weak = weak_from_this(), queues = sub.queues, plan](std::vector<redis::reply> rs) {
                auto self = weak.lock();
                if (!self || rs.empty()) return;
                std::vector<candidate> cs;
                std::int64_t ignored = 0;
                self->gather(cs, nullptr, rs[0].get(), plan, ignored);
                self->settle(cs, queues, 0);
            };
            redis::connection::orphan_handler on_orphan = std::move(orphan);
            auto rs = co_await cli.exec_blocking(std::move(r), std::move(on_orphan));
            auto& rep = *rs.at(0);
            if (redis::is_error(rep) && redis::text(rep).find("NOGROUP") != std::string_view::npos) {
                forget_ensured();  // someone removed the keys: make them again
                co_await ensure(sub.queues);
                co_return std::vector<delivery>{};
            }
            redis::checked(rep, "XREADGROUP");
            if (redis::is_nil(rep)) co_return std::vector<delivery>{};
            std::vector<candidate> cs;
            add_read(cs, rep, plan);
            co_return settle(cs, sub.queues, max);
        }

        /// A stream of a read: which queue of the subscription, which priority.
        struct stream_key {
            std::size_t queue;
            int priority;
        };

        /// An XREADGROUP of every stream of a subscription's queues, highest priority first.
        /// Its COUNT applies to each stream, so it may read more than `max` in all.
        struct read_plan {
            std::vector<std::string> argv;
            std::vector<stream_key> keys;
            std::size_t first_key = 0;  ///< where the stream names start in argv

            const stream_key* find(std::string_view name) const {
                for (std::size_t k = 0; k < keys.size(); ++k)
                    if (argv[first_key + k] == name) return &keys[k];
                return nullptr;
            }
        };

        read_plan read_command(const subscription& sub, std::size_t max, std::optional<std::chrono::milliseconds> block) const {
            read_plan plan;
            plan.argv = {"XREADGROUP", "GROUP", "stem", sub.consumer, "COUNT", std::to_string(max)};
            if (block) {
                plan.argv.emplace_back("BLOCK");
                plan.argv.push_back(std::to_string(block->count()));
            }
            plan.argv.emplace_back("STREAMS");
            plan.first_key = plan.argv.size();
            for (std::size_t qi = 0; qi < sub.queues.size(); ++qi)
                for (int p = 9; p >= 0; --p) {
                    plan.argv.push_back(stream_name(sub.queues[qi], p));
                    plan.keys.push_back({qi, p});
                }
            plan.argv.insert(plan.argv.end(), plan.keys.size(), ">");
            return plan;
        }

        static std::string_view field(const redisReply& f, std::string_view name) {
            for (std::size_t i = 0; i + 1 < redis::size(f); i += 2)
                if (redis::text(redis::at(f, i)) == name) return redis::text(redis::at(f, i + 1));
            return {};
        }

        /// An entry taken by a consume: taken again by the reclaim script (leased already), or
        /// just read (no lease yet). Views into the replies.
        struct candidate {
            std::size_t queue;  ///< index in the subscription's queues
            int priority;
            std::string_view id, text;
            std::uint64_t token;
            std::int64_t expires;  ///< the reclaim script's lease; 0 when just read
            std::string_view vis;  ///< the visibility field of an entry just read
        };

        /// Adds the entries of an XREADGROUP reply of `plan` to `cs`.
        static void add_read(std::vector<candidate>& cs, const redisReply& rep, const read_plan& plan) {
            for (std::size_t s = 0; s < redis::size(rep); ++s) {
                auto& stream = redis::at(rep, s);
                auto* key = plan.find(redis::text(redis::at(stream, 0)));
                if (!key) continue;
                auto& entries = redis::at(stream, 1);
                for (std::size_t e = 0; e < redis::size(entries); ++e) {
                    auto& item = redis::at(entries, e);
                    auto& fields = redis::at(item, 1);
                    cs.push_back({key->queue, key->priority, redis::text(redis::at(item, 0)), field(fields, "e"), 1, 0, field(fields, "v")});
                }
            }
        }

        /// Adds to `cs` what the reclaim script took again (and sets `next_ms`), then what
        /// the XREADGROUP of `plan` read; replies that are errors or empty add nothing.
        void gather(std::vector<candidate>& cs, const redisReply* reclaimed, const redisReply* read, const read_plan& plan,
                    std::int64_t& next_ms) const {
            if (reclaimed && !redis::is_error(*reclaimed)) {
                auto& c = *reclaimed;
                next_ms = redis::integer(redis::at(c, 0));
                for (std::size_t k = 1; k + 6 <= redis::size(c); k += 6)
                    cs.push_back({std::size_t(redis::integer(redis::at(c, k))) - 1, int(redis::integer(redis::at(c, k + 1))),
                                  redis::text(redis::at(c, k + 2)), redis::text(redis::at(c, k + 5)),
                                  std::uint64_t(redis::integer(redis::at(c, k + 3))), redis::integer(redis::at(c, k + 4)), {}});
            }
            if (read && !redis::is_error(*read) && !redis::is_nil(*read)) add_read(cs, *read, plan);
        }

        /// Returns the `keep` candidates of highest priority (in order taken within one
        /// priority) as deliveries, leasing those just read for their visibility timeout. The
        /// others (read beyond what the caller asked for, since XREADGROUP's COUNT applies to
        /// each stream, or by a reader that went away) get a lease that has already expired,
        /// scored so that the next consumer takes them highest priority first. One ZADD per
        /// queue, sent without waiting (one round trip less): it is queued on the shared
        /// connection before any ack of these deliveries can be, so it runs first. Should it
        /// be lost with the connection, the entries are orphans, which the sweep delivers
        /// again (their holders may still ack them meanwhile: see ack_many).
        std::vector<delivery> settle(std::vector<candidate>& cs, const std::vector<std::string>& queues, std::size_t keep) {
            std::stable_sort(cs.begin(), cs.end(), [](const candidate& a, const candidate& b) { return a.priority > b.priority; });
            keep = std::min(keep, cs.size());
            std::vector<std::vector<std::string>> zadd(queues.size());
            auto now = now_ms();
            for (std::size_t i = 0; i < cs.size(); ++i) {
                auto& c = cs[i];
                std::int64_t score = 9 - c.priority;  // expired, highest priority first
                if (i < keep) {
                    if (c.expires > 0) continue;  // leased by the reclaim script
                    std::int64_t vis = 0;
                    std::from_chars(c.vis.data(), c.vis.data() + c.vis.size(), vis);
                    score = c.expires = now + (vis > 0 ? vis : opts.default_visibility_timeout.count());
                }
                auto& z = zadd[c.queue];
                if (z.empty()) z = {"ZADD", leases_key(queues[c.queue])};
                z.push_back(std::to_string(score));
                z.push_back(lease_member(c.priority, c.id, c.token));
            }
            redis::request r;
            for (auto& z : zadd)
                if (!z.empty()) r.push_range(z.begin(), z.end());
            if (r.commands() > 0) cli.send(std::move(r));
            std::vector<delivery> out;
            out.reserve(keep);
            for (std::size_t i = 0; i < keep; ++i) {
                auto& d = out.emplace_back();
                d.queue = queues[cs[i].queue];
                d.locator = fmt::format("{}:{}", cs[i].priority, cs[i].id);
                d.token = cs[i].token;
                d.lease_expires = time_point(std::chrono::milliseconds(cs[i].expires));
                if (!decode_or_bury(d, cs[i].text)) out.pop_back();
            }
            return out;
        }

        /// Acks in two pipelined round trips of plain commands (a script's per-call and
        /// per-string costs made it the dearest command of a task). First one ZREM per lease:
        /// removing its member "<p>:<id>:<token>" is the atomic test that the lease is still
        /// this delivery's (one taken again carries the next token). Then, per stream, XACK
        /// and XDEL of the entries whose lease was removed. A lease not found may be an
        /// orphan of this delivery (its ZADD was lost, or an earlier attempt of this batch
        /// was cut off after its ZREM): the `ack` script, in the second round trip, decides.
        /// A lost connection does not lose the batch: what is not yet decided or done is sent
        /// again after the reconnection, for up to `ack_retry_window`, through the `ack`
        /// script once it may have run (it then leaves an entry delivered again to another
        /// holder alone). A lease the server gave an error for counts as not released
        /// (false): its delivery runs out and is delivered again. Neither fails the other
        /// acks of the batch.
        awaitable<std::vector<bool>> ack_many(std::vector<lease>& ls) {
            auto self = shared_from_this();  // alive while a batch waits to be sent again
            std::vector<ack_step> steps(ls.size(), ack_step::remove_lease);
            std::vector<bool> out(ls.size());
            auto give_up = std::chrono::steady_clock::now() + opts.ack_retry_window;
            auto wait = opts.server.reconnect_min;
            for (;;) {
                auto lost = co_await ack_steps(ls, steps, out);
                if (!lost) co_return out;
                if (std::chrono::steady_clock::now() + wait > give_up) std::rethrow_exception(lost);
                boost::asio::steady_timer t(co_await boost::asio::this_coro::executor, wait);
                co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
                wait = std::min(wait * 2, opts.server.reconnect_max);
            }
        }

        /// Where each ack of a batch stands. A step whose request may have run without its
        /// reply arriving is sent again as a `resend` (the `ack` script, told that an entry
        /// no longer pending was acknowledged by the attempt cut off).
        enum class ack_step : char { remove_lease, finish, finish_resend, check, check_resend, done };

        /// One attempt at the steps of ack_many still to do; `out[i]` is set as the ack of
        /// `ls[i]` is decided. Returns the error if the connection was lost.
        awaitable<std::exception_ptr> ack_steps(std::vector<lease>& ls, std::vector<ack_step>& steps, std::vector<bool>& out) {
            std::exception_ptr lost;
            redis::request release;
            std::vector<std::size_t> asked;
            for (std::size_t i = 0; i < ls.size(); ++i)
                if (steps[i] == ack_step::remove_lease) {
                    release.push("ZREM", leases_key(ls[i].queue), lease_member(ls[i].priority, ls[i].id, ls[i].token));
                    asked.push_back(i);
                }
            if (!asked.empty()) {
                std::vector<redis::reply> held;
                try {
                    held = co_await cli.exec(std::move(release));
                } catch (const error&) {
                    lost = std::current_exception();
                }
                if (lost) co_return lost;
                for (std::size_t k = 0; k < asked.size(); ++k) {
                    auto i = asked[k];
                    bool removed = !redis::is_error(*held[k]) && redis::integer(*held[k]) == 1;
                    steps[i] = removed ? ack_step::finish : redis::is_error(*held[k]) ? ack_step::done : ack_step::check;
                    out[i] = removed;
                }
            }
            std::vector<std::pair<std::string, std::vector<std::string_view>>> streams;  // stream key, entry ids
            std::vector<std::size_t> scripted;
            for (std::size_t i = 0; i < ls.size(); ++i) {
                if (steps[i] == ack_step::done) continue;
                if (steps[i] != ack_step::finish) {
                    scripted.push_back(i);
                    continue;
                }
                auto key = stream_name(ls[i].queue, ls[i].priority);
                auto g = std::find_if(streams.begin(), streams.end(), [&](auto& s) { return s.first == key; });
                if (g == streams.end()) g = streams.insert(streams.end(), {std::move(key), {}});
                g->second.push_back(ls[i].id);
            }
            if (streams.empty() && scripted.empty()) co_return nullptr;
            redis::request done;
            for (auto& [key, ids] : streams) {
                std::vector<std::string_view> argv{"XACK", key, "stem"};
                argv.insert(argv.end(), ids.begin(), ids.end());
                done.push_range(argv.begin(), argv.end());
                argv.erase(argv.begin() + 2);  // XDEL <stream> <ids...>
                argv[0] = "XDEL";
                done.push_range(argv.begin(), argv.end());
            }
            for (auto i : scripted) push_ack_script(done, ls[i], steps[i] != ack_step::check);
            for (auto& st : steps) {  // from now on, each may have run
                if (st == ack_step::finish) st = ack_step::finish_resend;
                else if (st == ack_step::check) st = ack_step::check_resend;
            }
            std::vector<redis::reply> rs;
            try {
                rs = co_await cli.exec(std::move(done));  // errors of XACK and XDEL: see above
            } catch (const error&) {
                lost = std::current_exception();
            }
            if (lost) co_return lost;
            auto base = 2 * streams.size();
            for (std::size_t k = 0; k < scripted.size(); ++k) {
                auto& r = *rs[base + k];
                if (steps[scripted[k]] == ack_step::check_resend) out[scripted[k]] = !redis::is_error(r) && redis::integer(r) == 1;
            }
            for (auto& st : steps) st = ack_step::done;
            co_return nullptr;
        }

        /// The `ack` script of a lease, sent with its source (EVAL, not EVALSHA: it is rare,
        /// and can then never meet NOSCRIPT in the middle of a batch).
        void push_ack_script(redis::request& r, const lease& l, bool resend) {
            auto key = prefix + ":queues", now = std::to_string(now_ms()), token = std::to_string(l.token);
            std::array<std::string_view, 11> argv{"EVAL", ack_orphan.source(), "1", key, prefix, now,
                                                  l.queue, l.priority, l.id, token, resend ? "1" : "0"};
            r.push_range(argv.begin(), argv.end());
        }

        redis_broker_options opts;
        std::string prefix;
        redis::client cli;
        redis::script reclaim, ensure_script, requeue, extend, retry, dead, dead_page, replay_one, purge_dead, purge,
            stats_script, sweep, broadcast_read, ack_orphan;
        std::shared_ptr<redis::detail::coalescer<lease, bool>> acks;
        std::mutex mu;
        std::set<std::string> ensured;
        std::chrono::steady_clock::time_point next_sweep{};
    };

    std::shared_ptr<state> s_;
};

static_assert(broker<redis_broker>);

}  // namespace stem
