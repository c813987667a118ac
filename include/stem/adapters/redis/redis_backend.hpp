// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// redis_backend.hpp — a result backend in Redis: statuses with TTL, waiting and watching by
// pub/sub across processes, groups and chords, heartbeats, listing and counting by state.
#pragma once

#include <stem/adapters/redis/client.hpp>
#include <stem/adapters/redis/detail/backend_scripts.hpp>
#include <stem/adapters/redis/detail/coalescer.hpp>
#include <stem/adapters/redis/detail/subscriber.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/detail/status_hub.hpp>
#include <stem/detail/status_row.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace stem {

/// Settings of a redis_backend.
struct redis_backend_options {
    redis::config server{};                                 ///< where Redis is
    /// Runs the connections on this executor instead of the process's Redis I/O thread:
    /// no thread hop per request (lower latency). Its execution context must outlive the
    /// adapter, and a multi-threaded context needs no strand (connections make their own).
    boost::asio::any_io_executor executor{};
    std::string namespace_ = "stem";                        ///< key prefix ("{stem}:…")
    std::chrono::milliseconds default_ttl{24 * 3'600'000};  ///< statuses and groups kept this long by default
};

/// A result backend in Redis. Any number of processes on any machines may share it. A
/// waiter or watcher is subscribed to the task's channel when it reads the status (a waiter
/// reads once beside subscribing, and again once subscribed), and every write publishes the
/// new status there, so a result written anywhere wakes it at once (no polling). Writes made
/// at about the same time go to the server as one MULTI … EXEC.
/// Statuses and groups expire with their TTL (Redis removes the keys; the state indexes,
/// scored by expiry, are cut when listed or counted).
class redis_backend {
public:
    explicit redis_backend(redis_backend_options o = {}) : s_(std::make_shared<state>(std::move(o))) { s_->init(); }

    awaitable<void> set(task_status st, std::optional<std::chrono::milliseconds> ttl) {
        auto s = s_;
        auto now = clock::now();
        if (st.updated_at == time_point{}) st.updated_at = now;
        if (st.created_at == time_point{}) st.created_at = now;
        // What GET finds and what is published (see detail/backend_scripts.hpp).
        std::string stored;
        stored.append(to_string(st.state)).append(1, '\0').append(st.name).append(1, '\0');
        serialize_to(stored, st);
        state::write w{st.id, st.state, std::move(stored), ttl.value_or(s->opts.default_ttl).count()};
        co_await s->writes->submit(std::move(w));
        s->hub->published(st);
    }

    awaitable<std::optional<task_status>> get(std::string id) {
        auto s = s_;
        co_return co_await s->read(id);
    }

    awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds timeout) {
        auto s = s_;
        auto deadline = std::chrono::steady_clock::now() + timeout;
        auto channel = s->channel(id);
        state::listening guard{s, channel};
        // The first read runs beside the subscription: a task already finished costs one
        // round trip, not two. Otherwise the hub reads again once subscribed, so a status
        // written between that read and the subscription is not missed.
        using namespace boost::asio::experimental::awaitable_operators;
        auto first = co_await (s->subs->subscribe(channel, deadline) && first_read(s, id));
        if (first && is_terminal(first->state)) co_return first;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        co_return co_await s->hub->wait(reader(s), std::move(id), std::max(left, std::chrono::milliseconds(0)));
    }

    awaitable<status_watch> watch(std::string id) {
        auto s = s_;
        auto channel = s->channel(id);
        auto guard = std::make_shared<state::listening>(s, channel);
        co_await s->subs->subscribe(channel, std::chrono::steady_clock::now() + s->opts.server.connect_timeout);
        auto inner = co_await s->hub->watch(reader(s), std::move(id));
        co_return status_watch{std::make_shared<subscribed_watch>(std::move(inner), std::move(guard))};
    }

    awaitable<std::vector<task_status>> list(status_filter f) {
        auto s = s_;
        std::vector<std::string> args{f.state ? std::string(to_string(*f.state)) : std::string(), f.name, std::to_string(f.offset),
                                      std::to_string(f.limit)};
        auto r = co_await s->eval(s->list_script, std::move(args));
        std::vector<task_status> out;
        for (std::size_t i = 0; i < redis::size(*r); ++i)
            out.push_back(task_status_from_json(boost::json::parse(redis::text(redis::at(*r, i)))));
        co_return out;
    }

    awaitable<std::uint64_t> count(std::optional<task_state> st) {
        auto s = s_;
        std::vector<std::string> args{st ? std::string(to_string(*st)) : std::string()};
        auto r = co_await s->eval(s->count_script, std::move(args));
        co_return std::uint64_t(redis::integer(*r));
    }

    awaitable<void> init_group(group_descriptor g, std::optional<std::chrono::milliseconds> ttl) {
        auto s = s_;
        boost::json::array ids;
        for (auto& t : g.task_ids) ids.emplace_back(t);
        std::vector<std::string> args{g.id, boost::json::serialize(ids), boost::json::serialize(g.meta),
                                      std::to_string(ttl.value_or(s->opts.default_ttl).count())};
        co_await s->eval(s->group_init, std::move(args));
    }

    awaitable<std::size_t> add_group_result(std::string group_id, task_status st) {
        auto s = s_;
        std::vector<std::string> args{group_id, st.id, serialize(st)};
        auto r = co_await s->eval(s->group_add, std::move(args));
        auto n = redis::integer(*r);
        if (n < 0) throw error(errc::not_found, fmt::format("group '{}' does not exist or has expired", group_id));
        co_return std::size_t(n);
    }

    awaitable<std::optional<group_record>> get_group(std::string group_id) {
        auto s = s_;
        redis::request req;
        req.push("HGETALL", s->prefix + ":g:" + group_id);
        auto rs = co_await s->cli.exec(std::move(req));
        auto& r = redis::checked(*rs.at(0), "get_group");
        if (redis::size(r) == 0) co_return std::nullopt;
        group_record g;
        g.id = group_id;
        for (std::size_t i = 0; i + 1 < redis::size(r); i += 2) {
            auto k = redis::text(redis::at(r, i));
            auto v = redis::text(redis::at(r, i + 1));
            if (k == "ids") {
                auto ids = boost::json::parse(v);
                for (auto& x : ids.as_array()) g.task_ids.emplace_back(x.as_string());
            } else if (k == "meta") {
                g.meta = boost::json::parse(v).as_object();
            } else if (k == "claimed") {
                g.chord_claimed = v == "1";
            } else if (k == "created") {
                g.created_at = time_point(std::chrono::milliseconds(redis::integer(redis::at(r, i + 1))));
            } else if (k.starts_with("r:")) {
                auto st = task_status_from_json(boost::json::parse(v));
                auto id = st.id;
                g.results.insert_or_assign(std::move(id), std::move(st));
            }
        }
        co_return g;
    }

    awaitable<bool> claim_chord(std::string group_id) {
        auto s = s_;
        std::vector<std::string> args{group_id};
        auto r = co_await s->eval(s->group_claim, std::move(args));
        co_return redis::integer(*r) == 1;
    }

    awaitable<void> set_heartbeat(worker_heartbeat hb, std::chrono::milliseconds ttl) {
        auto s = s_;
        std::vector<std::string> args{hb.worker_id, boost::json::serialize(to_json(hb)), std::to_string(ttl.count())};
        co_await s->eval(s->heartbeat, std::move(args));
    }

    /// Status writes go through one coalescer, whose batches reach the server in order on one
    /// connection.
    backend_capabilities capabilities() const noexcept { return {.ordered_writes = true}; }

    awaitable<std::vector<worker_heartbeat>> list_heartbeats() {
        auto s = s_;
        std::vector<std::string> args;
        auto r = co_await s->eval(s->heartbeats, std::move(args));
        std::vector<worker_heartbeat> out;
        for (std::size_t i = 0; i < redis::size(*r); ++i)
            out.push_back(worker_heartbeat_from_json(boost::json::parse(redis::text(redis::at(*r, i)))));
        co_return out;
    }

private:
    /// A hub watch that keeps its channel subscribed while it lives.
    template <class Guard>
    struct subscribed_watch_t final : detail::watch_source {
        subscribed_watch_t(status_watch w, std::shared_ptr<Guard> g) : inner(std::move(w)), guard(std::move(g)) {}
        awaitable<std::optional<task_status>> next(std::chrono::milliseconds timeout) override { return inner.next(timeout); }
        status_watch inner;
        std::shared_ptr<Guard> guard;
    };

    struct state : std::enable_shared_from_this<state> {
        /// One status to store.
        struct write {
            std::string id;
            task_state state;
            std::string stored;  ///< "<state>\0<name>\0<JSON>"
            std::int64_t ttl_ms = 0;
        };

        /// Keeps a channel subscribed for its lifetime.
        struct listening {
            listening(std::shared_ptr<state> st, std::string ch) : s(std::move(st)), channel(std::move(ch)) {}
            ~listening() { s->subs->unsubscribe(channel); }
            listening(const listening&) = delete;
            listening& operator=(const listening&) = delete;
            std::shared_ptr<state> s;
            std::string channel;
        };

        explicit state(redis_backend_options o)
            : opts(std::move(o)), prefix("{" + opts.namespace_ + "}"), cli(opts.server, opts.executor),
              // Waiters are woken by messages; the hub's own re-reading is only a backstop.
              hub(std::make_shared<detail::status_hub>(std::chrono::hours(1))), list_script(script("list", redis::detail::backend_lua::list)), count_script(script("count", redis::detail::backend_lua::count)),
              group_init(script("group_init", redis::detail::backend_lua::group_init)), group_add(script("group_add", redis::detail::backend_lua::group_add)),
              group_claim(script("group_claim", redis::detail::backend_lua::group_claim)), heartbeat(script("heartbeat", redis::detail::backend_lua::heartbeat)),
              heartbeats(script("heartbeats", redis::detail::backend_lua::heartbeats)) {
            if (opts.namespace_.empty() || opts.namespace_.find_first_of("{}") != std::string::npos)
                throw error(errc::invalid_argument, fmt::format("redis_backend: bad namespace '{}'", opts.namespace_));
            for (auto* sc : {&list_script, &count_script, &group_init, &group_add, &group_claim, &heartbeat, &heartbeats})
                cli.preload(*sc);
            writes = std::make_shared<redis::detail::coalescer<write, bool>>(
                cli.executor(), [this](std::vector<write>& ws) { return write_many(ws); }, 128, 8);
        }

        void init() {
            std::weak_ptr<state> weak = weak_from_this();
            auto channel_prefix = prefix + ":c:";
            subs = std::make_shared<redis::detail::subscriber>(
                cli.executor(), opts.server,
                [weak, channel_prefix](const std::string& channel, std::string payload) {
                    auto self = weak.lock();
                    if (!self || !channel.starts_with(channel_prefix)) return;
                    try {
                        self->hub->published(task_status_from_json(boost::json::parse(stored_json(payload).value())));
                    } catch (const std::exception&) {
                        self->hub->poke(channel.substr(channel_prefix.size()));  // read it instead
                    }
                },
                [weak, channel_prefix](const std::string& channel) {
                    if (auto self = weak.lock(); self && channel.starts_with(channel_prefix))
                        self->hub->poke(channel.substr(channel_prefix.size()));
                });
        }

        static redis::script script(const char* name, std::string_view body) {
            return redis::script(name, std::string(redis::detail::backend_lua::prelude) + std::string(body));
        }

        std::string channel(const std::string& id) const { return prefix + ":c:" + id; }
        std::string status_key(const std::string& id) const { return prefix + ":s:" + id; }

        awaitable<redis::reply> eval(const redis::script& s, std::vector<std::string> args) {
            auto now = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch()).count();
            args.insert(args.begin(), {prefix, std::to_string(now)});
            std::vector<std::string> keys{prefix + ":idx:running"};
            co_return co_await cli.eval(s, std::move(keys), std::move(args));
        }

        /// One MULTI … EXEC for the whole batch (no script: a script's per-call and per-string
        /// costs are what bounded the server here). Per status a SET (with its TTL) and a
        /// PUBLISH of the stored value; per state index a ZADD of the ids that join it and a ZREM
        /// of the others, so an id stays in its current state's index only, whatever state it
        /// was in before. The last write of an id in the batch wins: the ones before it are not
        /// sent (typically a task's `running` status and its result).
        awaitable<std::vector<bool>> write_many(std::vector<write>& ws) {
            auto last = detail::last_of_each(ws.size(), [&](std::size_t i) -> std::string_view { return ws[i].id; });
            auto now = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch()).count();
            constexpr std::size_t n_states = std::size_t(task_state::cancelled) + 1;
            std::vector<const write*> sent;
            sent.reserve(ws.size());
            redis::request r;
            std::size_t bytes = 64;
            for (auto& w : ws) bytes += 2 * w.stored.size() + 8 * w.id.size() + 160;
            r.reserve(bytes);
            r.push("MULTI");
            for (std::size_t i = 0; i < ws.size(); ++i) {
                if (!last[i]) continue;
                auto& w = ws[i];
                r.push("SET", status_key(w.id), w.stored, "PX", w.ttl_ms);
                r.push("PUBLISH", channel(w.id), w.stored);
                sent.push_back(&w);
            }
            std::vector<std::string_view> leave, join;
            std::vector<std::string> scores;  // ZADD's scores (reserved: join's views stay valid)
            leave.reserve(sent.size() + 2);
            join.reserve(2 * sent.size() + 2);
            scores.reserve(sent.size());
            for (std::size_t st = 0; st < n_states; ++st) {
                auto key = index_key(task_state(st));
                leave.assign({"ZREM", key});
                join.assign({"ZADD", key});
                for (auto* w : sent) {
                    if (w->state != task_state(st)) {
                        leave.push_back(w->id);
                    } else {
                        join.push_back(scores.emplace_back(std::to_string(now + w->ttl_ms)));
                        join.push_back(w->id);
                    }
                }
                if (leave.size() > 2) r.push_range(leave.begin(), leave.end());
                if (join.size() > 2) r.push_range(join.begin(), join.end());
            }
            r.push("EXEC");
            auto rs = co_await cli.exec(std::move(r));
            auto& done = redis::checked(*rs.back(), "set");  // EXECABORT when a command was refused
            if (redis::is_nil(done)) throw error(errc::backend_failure, "redis_backend: a status batch was not applied");
            for (std::size_t i = 0; i < redis::size(done); ++i) redis::checked(redis::at(done, i), "set");
            co_return std::vector<bool>(ws.size(), true);
        }

        std::string index_key(task_state st) const { return fmt::format("{}:idx:{}", prefix, to_string(st)); }

        awaitable<std::optional<task_status>> read(const std::string& id) {
            redis::request req;
            req.push("GET", status_key(id));
            auto rs = co_await cli.exec(std::move(req));
            auto& r = redis::checked(*rs.at(0), "get");
            if (redis::is_nil(r)) co_return std::nullopt;
            auto json = stored_json(redis::text(r));
            if (!json) throw error(errc::backend_failure, fmt::format("redis_backend: status of '{}' is malformed", id));
            co_return task_status_from_json(boost::json::parse(*json));
        }

        /// The JSON part of a stored status "<state>\0<name>\0<JSON>".
        static std::optional<std::string_view> stored_json(std::string_view v) {
            auto first = v.find('\0');
            auto second = first == std::string_view::npos ? first : v.find('\0', first + 1);
            if (second == std::string_view::npos) return std::nullopt;
            return v.substr(second + 1);
        }

        redis_backend_options opts;
        std::string prefix;
        redis::client cli;
        std::shared_ptr<detail::status_hub> hub;
        std::shared_ptr<redis::detail::subscriber> subs;
        redis::script list_script, count_script, group_init, group_add, group_claim, heartbeat, heartbeats;
        std::shared_ptr<redis::detail::coalescer<write, bool>> writes;
    };
    using subscribed_watch = subscribed_watch_t<state::listening>;

    /// The read beside the subscription: a failure is left to the hub's reads, which retry
    /// until the deadline (and it must not cancel the subscription).
    static awaitable<std::optional<task_status>> first_read(std::shared_ptr<state> s, const std::string& id) {
        try {
            co_return co_await s->read(id);
        } catch (const std::exception&) {
            co_return std::nullopt;
        }
    }

    static detail::status_reader reader(const std::shared_ptr<state>& s) {
        return [w = std::weak_ptr<state>(s)](const std::string& id) -> awaitable<std::optional<task_status>> {
            auto self = w.lock();
            if (!self) throw error(errc::shutting_down, "redis_backend: gone");
            co_return co_await self->read(id);
        };
    }

    std::shared_ptr<state> s_;
};

static_assert(result_backend<redis_backend>);

}  // namespace stem
