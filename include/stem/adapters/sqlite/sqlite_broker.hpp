// stem/adapters/sqlite: the SQLite adapters (embedded default; one host, no server).
// sqlite_broker.hpp — a durable broker in one SQLite file: priorities, delays, leases with
// tokens, dead letters with retention; broadcasts reach subscribers of this process only.
#pragma once

#include <stem/adapters/sqlite/detail/database.hpp>
#include <stem/contracts/broker.hpp>
#include <stem/detail/broadcast_log.hpp>
#include <stem/detail/waiter.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <boost/asio/this_coro.hpp>

namespace stem {

/// Settings of a sqlite_broker.
struct sqlite_broker_options {
    std::string path = ".stem/broker.db";                         ///< database file (created if missing)
    std::string namespace_ = "stem";                              ///< table-name prefix
    std::chrono::milliseconds default_visibility_timeout{30'000};  ///< lease when the envelope names none
    std::chrono::milliseconds poll_interval{50};                  ///< how often an idle consumer looks for work
                                                                  ///< published by other processes
    std::chrono::milliseconds dead_letter_retention{7 * 24 * 3'600'000};  ///< dead letters older than this are removed
    std::size_t max_broadcast_backlog = 10'000;                   ///< per channel (broadcasts stay in this process)
};

/// A broker in a SQLite file (WAL mode). Producers and workers of several processes on
/// one host may share the file; within a process, every sqlite_broker on the same file
/// and namespace shares one connection, whose thread runs the SQL (group commit).
///
/// A delivery's lease is a `token` on its row: claiming increments it, so an ack,
/// nack, extension, retry or dead-lettering with an older token changes nothing.
/// Broadcast fan-out covers subscribers of this process only.
class sqlite_broker {
public:
    explicit sqlite_broker(sqlite_broker_options o = {}) {
        auto ns = detail::sqlite::checked_namespace(o.namespace_);
        auto db = detail::sqlite::database::open(o.path);
        s_ = detail::sqlite::shared_state<state>(db->path() + "|broker|" + ns, [&] {
            auto s = std::make_shared<state>(o, db);
            detail::sqlite::migrate(*db, "broker:" + ns, migrations(ns));
            return s;
        });
    }

    awaitable<void> publish(envelope e) {
        validate(e);
        auto s = s_;
        std::string text = serialize(e);
        auto now = to_unix_micros(clock::now());
        co_await s->db->run_single([s = s.get(), &e, &text, now](detail::sqlite::connection& c) { s->insert(c, e, text, now); });
        s->wake();
    }

    awaitable<void> publish_batch(std::vector<envelope> batch) {
        for (auto& e : batch) validate(e);
        auto s = s_;
        std::vector<std::string> texts;
        texts.reserve(batch.size());
        for (auto& e : batch) texts.push_back(serialize(e));
        auto now = to_unix_micros(clock::now());
        co_await s->db->run([s = s.get(), &batch, &texts, now](detail::sqlite::connection& c) {
            for (std::size_t i = 0; i < batch.size(); ++i) s->insert(c, batch[i], texts[i], now);
        });
        s->wake();
    }

    /// Fans `e` out to the subscribers of `channel` in this process.
    awaitable<void> broadcast(std::string channel, envelope e) {
        validate(e);
        {
            std::lock_guard lk(s_->mu);
            s_->channels.append(channel, std::move(e));
        }
        s_->wake();
        co_return;
    }

    awaitable<std::vector<delivery>> consume(const subscription& sub, std::size_t max, std::chrono::milliseconds wait) {
        if (max == 0) co_return std::vector<delivery>{};
        auto s = s_;
        auto deadline = std::chrono::steady_clock::now() + wait;
        auto w = std::make_shared<detail::waiter>();
        struct unregister {
            state* s;
            std::shared_ptr<detail::waiter> w;
            ~unregister() { s->waiters.drop(w); }
        } guard{s.get(), w};
        for (;;) {
            s->waiters.add(w);  // before looking: a publish from now on wakes us
            std::vector<delivery> out;
            {
                std::lock_guard lk(s->mu);
                s->channels.read(sub, max, out);
            }
            // Nothing to claim: the soonest instant a row of these queues becomes visible (a
            // delay ending, a lease running out) ends the wait, as nothing else marks it.
            std::optional<std::int64_t> next_visible;
            if (out.size() < max && !sub.queues.empty()) {
                auto now = to_unix_micros(clock::now());
                std::size_t want = max - out.size();
                auto claimed = co_await s->db->run([s = s.get(), &sub, want, now, &next_visible](detail::sqlite::connection& c) {
                    auto got = s->claim(c, sub.queues, want, now);
                    if (got.empty()) next_visible = s->next_visible(c, sub.queues, now);
                    return got;
                });
                for (auto& d : claimed) out.push_back(std::move(d));
            }
            auto left = deadline - std::chrono::steady_clock::now();
            if (!out.empty() || left <= decltype(left)::zero()) co_return out;
            auto until = std::min(deadline, std::chrono::steady_clock::now() + s->opts.poll_interval);
            if (next_visible) until = std::min(until, detail::steady_deadline(from_unix_micros(*next_visible)));
            co_await w->wait_until(until);
        }
    }

    awaitable<bool> ack(const delivery& d) {
        if (d.broadcast) co_return true;
        auto s = s_;
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        co_return co_await s->db->run_single([s = s.get(), seq, token](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.ack);
            q.bind(1, seq);
            q.bind(2, token);
            return q.exec() == 1;
        });
    }

    awaitable<bool> nack(const delivery& d, bool requeue) {
        if (d.broadcast) co_return true;
        auto s = s_;
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        auto now = to_unix_micros(clock::now());
        bool ok = co_await s->db->run_single([s = s.get(), seq, token, requeue, now](detail::sqlite::connection& c) {
            auto& q = c.query(requeue ? s->sql.requeue : s->sql.ack);
            q.bind(1, seq);
            q.bind(2, token);
            if (requeue) q.bind(3, now);
            return q.exec() == 1;
        });
        if (ok && requeue) s->wake();
        co_return ok;
    }

    awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) {
        if (d.broadcast) co_return true;
        auto s = s_;
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        auto until = to_unix_micros(clock::now() + by);
        co_return co_await s->db->run_single([s = s.get(), seq, token, until](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.extend);
            q.bind(1, until);
            q.bind(2, seq);
            q.bind(3, token);
            return q.exec() == 1;
        });
    }

    /// Updates the row in place (new envelope, attempt and visibility); no dead letter.
    awaitable<bool> retry(const delivery& d, envelope next) {
        validate(next);
        auto s = s_;
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        std::string text = serialize(next);
        auto now = to_unix_micros(clock::now());
        bool ok = co_await s->db->run_single([s = s.get(), seq, token, &next, &text, now](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.retry);
            q.bind(1, next.id);
            q.bind(2, next.queue);
            q.bind(3, next.priority);
            q.bind(4, next.not_before ? std::max(now, to_unix_micros(*next.not_before)) : now);
            bind_visibility(q, 5, next);
            q.bind(6, text);
            q.bind(7, seq);
            q.bind(8, token);
            return q.exec() == 1;
        });
        if (ok) s->wake();
        co_return ok;
    }

    awaitable<bool> dead_letter(const delivery& d, std::string reason) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        if (d.broadcast) {
            std::string text = serialize(d.env);
            co_await s->db->run([s = s.get(), &d, &text, &reason, now](detail::sqlite::connection& c) {
                s->add_dead(c, d.env.id, d.queue, text, reason, now);
            });
            co_return true;
        }
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        co_return co_await s->db->run([s = s.get(), seq, token, &reason, now](detail::sqlite::connection& c) {
            return s->move_to_dead(c, seq, token, reason, now);
        });
    }

    /// Dead letters of `queue` (all queues when empty), oldest first.
    awaitable<dead_letter_page> list_dead_letters(std::string queue, std::size_t limit, std::size_t offset) {
        auto s = s_;
        co_return co_await s->db->run([s = s.get(), &queue, limit, offset](detail::sqlite::connection& c) {
            dead_letter_page page;
            auto& n = c.query(s->sql.dead_count);
            n.bind(1, queue);
            if (n.executeStep()) page.total = std::uint64_t(n.getColumn(0).getInt64());
            auto& q = c.query(s->sql.dead_page);
            q.bind(1, queue);
            q.bind(2, std::int64_t(limit));
            q.bind(3, std::int64_t(offset));
            while (q.executeStep()) page.items.push_back(read_dead(q));
            return page;
        });
    }

    awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string id) {
        auto s = s_;
        co_return co_await s->db->run([s = s.get(), &id](detail::sqlite::connection& c) {
            std::optional<dead_letter_entry> out;
            auto& q = c.query(s->sql.dead_by_id);
            q.bind(1, id);
            if (q.executeStep()) out = read_dead(q);
            return out;
        });
    }

    /// Moves up to `o.limit` of the oldest dead letters of `queue` back to their queue
    /// with attempt 0 (hidden until now + `o.delay` if given). Dry run: report only.
    awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string queue, replay_options o) {
        auto s = s_;
        auto now = clock::now();
        auto out = co_await s->db->run([s = s.get(), &queue, &o, now](detail::sqlite::connection& c) {
            std::vector<std::pair<std::int64_t, dead_letter_entry>> rows;
            {
                auto& q = c.query(s->sql.dead_oldest);
                q.bind(1, queue);
                q.bind(2, std::int64_t(o.limit));
                while (q.executeStep()) rows.emplace_back(q.getColumn(4).getInt64(), read_dead(q));
            }
            std::vector<dead_letter_entry> replayed;
            for (auto& [seq, dl] : rows) {
                if (!o.dry_run) {
                    envelope e = dl.env;
                    e.attempt = 0;
                    e.not_before.reset();
                    if (o.delay) e.not_before = now + *o.delay;
                    s->insert(c, e, serialize(e), to_unix_micros(now));
                    auto& del = c.query(s->sql.dead_delete_one);
                    del.bind(1, seq);
                    del.exec();
                }
                replayed.push_back(std::move(dl));
            }
            return replayed;
        });
        if (!o.dry_run && !out.empty()) s->wake();
        co_return out;
    }

    /// Removes the dead letters of `queue` (all when empty); returns how many (would have been) removed.
    awaitable<std::uint64_t> purge_dead_letters(std::string queue, bool dry_run) {
        auto s = s_;
        co_return co_await s->db->run([s = s.get(), &queue, dry_run](detail::sqlite::connection& c) -> std::uint64_t {
            auto& q = c.query(dry_run ? s->sql.dead_count : s->sql.dead_purge);
            q.bind(1, queue);
            if (!dry_run) return std::uint64_t(q.exec());
            return q.executeStep() ? std::uint64_t(q.getColumn(0).getInt64()) : 0;
        });
    }

    /// Removes every pending and delayed envelope of `queue` (leased ones stay); returns how many.
    awaitable<std::uint64_t> purge(std::string queue) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db->run_single([s = s.get(), &queue, now](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.purge);
            q.bind(1, queue);
            q.bind(2, now);
            return std::uint64_t(q.exec());
        });
    }

    awaitable<queue_stats> stats(std::string queue) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db->run([s = s.get(), &queue, now](detail::sqlite::connection& c) {
            queue_stats st{queue, 0, 0, 0, 0};
            auto& q = c.query(s->sql.stats);
            q.bind(1, now);
            q.bind(2, queue);
            if (q.executeStep()) {
                st.pending = std::uint64_t(q.getColumn(0).getInt64());
                st.delayed = std::uint64_t(q.getColumn(1).getInt64());
                st.inflight = std::uint64_t(q.getColumn(2).getInt64());
            }
            auto& n = c.query(s->sql.dead_count);
            n.bind(1, queue);
            if (n.executeStep()) st.dead = std::uint64_t(n.getColumn(0).getInt64());
            return st;
        });
    }

    awaitable<std::vector<std::string>> queues() {
        auto s = s_;
        co_return co_await s->db->run([s = s.get()](detail::sqlite::connection& c) {
            std::vector<std::string> out;
            auto& q = c.query(s->sql.queues);
            while (q.executeStep()) out.push_back(q.getColumn(0).getString());
            return out;
        });
    }

    broker_capabilities capabilities() const noexcept {
        return {.priority = true, .delay = true, .cross_process_broadcast = false, .durable = true};
    }

    /// The database file in use (absolute).
    const std::string& path() const noexcept { return s_->db->path(); }

private:
    /// The schema, one step per version.
    static std::vector<std::string> migrations(const std::string& ns) {
        return {fmt::format(
            // seq orders deliveries and names them (delivery::tag). visible_at (unix µs) is
            // not_before while waiting and the lease's end while leased; token counts grants.
            "CREATE TABLE {0}_jobs ("
            "  seq INTEGER PRIMARY KEY,"
            "  id TEXT NOT NULL,"
            "  queue TEXT NOT NULL,"
            "  priority INTEGER NOT NULL,"
            "  visible_at INTEGER NOT NULL,"
            "  leased INTEGER NOT NULL DEFAULT 0,"
            "  token INTEGER NOT NULL DEFAULT 0,"
            "  visibility_ms INTEGER,"
            "  envelope TEXT NOT NULL);"
            "CREATE INDEX {0}_jobs_claim ON {0}_jobs(queue, priority DESC, visible_at);"
            "CREATE TABLE {0}_dead_letters ("
            "  seq INTEGER PRIMARY KEY,"
            "  id TEXT NOT NULL,"
            "  queue TEXT NOT NULL,"
            "  reason TEXT NOT NULL,"
            "  dead_at INTEGER NOT NULL,"
            "  envelope TEXT NOT NULL);"
            "CREATE INDEX {0}_dead_letters_queue ON {0}_dead_letters(queue, seq);"
            "CREATE INDEX {0}_dead_letters_id ON {0}_dead_letters(id);"
            "CREATE INDEX {0}_dead_letters_age ON {0}_dead_letters(dead_at);",
            ns)};
    }

    struct statements {
        explicit statements(const std::string& ns)
            : insert(fmt::format("INSERT INTO {0}_jobs(id, queue, priority, visible_at, visibility_ms, envelope) "
                                 "VALUES(?, ?, ?, ?, ?, ?)", ns)),
              ack(fmt::format("DELETE FROM {0}_jobs WHERE seq = ? AND token = ? AND leased = 1", ns)),
              requeue(fmt::format("UPDATE {0}_jobs SET leased = 0, visible_at = ?3 WHERE seq = ?1 AND token = ?2 AND leased = 1", ns)),
              extend(fmt::format("UPDATE {0}_jobs SET visible_at = ?1 WHERE seq = ?2 AND token = ?3 AND leased = 1", ns)),
              retry(fmt::format("UPDATE {0}_jobs SET id = ?1, queue = ?2, priority = ?3, visible_at = ?4, visibility_ms = ?5, "
                                "envelope = ?6, leased = 0 WHERE seq = ?7 AND token = ?8 AND leased = 1", ns)),
              take_row(fmt::format("DELETE FROM {0}_jobs WHERE seq = ? AND token = ? AND leased = 1 RETURNING id, queue, envelope", ns)),
              add_dead(fmt::format("INSERT INTO {0}_dead_letters(id, queue, reason, dead_at, envelope) VALUES(?, ?, ?, ?, ?)", ns)),
              dead_count(fmt::format("SELECT COUNT(*) FROM {0}_dead_letters WHERE ?1 = '' OR queue = ?1", ns)),
              dead_page(fmt::format("SELECT id, queue, reason, dead_at, seq, envelope FROM {0}_dead_letters "
                                    "WHERE ?1 = '' OR queue = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3", ns)),
              dead_oldest(fmt::format("SELECT id, queue, reason, dead_at, seq, envelope FROM {0}_dead_letters "
                                      "WHERE ?1 = '' OR queue = ?1 ORDER BY seq LIMIT ?2", ns)),
              dead_by_id(fmt::format("SELECT id, queue, reason, dead_at, seq, envelope FROM {0}_dead_letters "
                                     "WHERE id = ? ORDER BY seq DESC LIMIT 1", ns)),
              dead_delete_one(fmt::format("DELETE FROM {0}_dead_letters WHERE seq = ?", ns)),
              dead_purge(fmt::format("DELETE FROM {0}_dead_letters WHERE ?1 = '' OR queue = ?1", ns)),
              dead_expire(fmt::format("DELETE FROM {0}_dead_letters WHERE dead_at < ?", ns)),
              purge(fmt::format("DELETE FROM {0}_jobs WHERE queue = ?1 AND NOT (leased = 1 AND visible_at > ?2)", ns)),
              stats(fmt::format("SELECT COALESCE(SUM(visible_at <= ?1), 0),"
                                " COALESCE(SUM(leased = 0 AND visible_at > ?1), 0),"
                                " COALESCE(SUM(leased = 1 AND visible_at > ?1), 0) FROM {0}_jobs WHERE queue = ?2", ns)),
              queues(fmt::format("SELECT DISTINCT queue FROM {0}_jobs UNION SELECT DISTINCT queue FROM {0}_dead_letters "
                                 "ORDER BY 1", ns)),
              ns_(ns) {}
        std::string insert, ack, requeue, extend, retry, take_row, add_dead, dead_count, dead_page, dead_oldest,
            dead_by_id, dead_delete_one, dead_purge, dead_expire, purge, stats, queues;
        std::string ns_;

        /// The claim for `n` queues: highest priority first across them, then earliest
        /// visible, then publication order; one atomic UPDATE … RETURNING.
        /// ?1 now (µs), ?2 how many, ?3 default lease (ms), ?4… the queue names.
        const std::string& claim(std::size_t n) {
            return per_queue(claim_, n, 4,
                             "SELECT * FROM (SELECT seq, priority, visible_at FROM {0}_jobs WHERE queue = ?{1} "
                             "AND visible_at <= ?1 ORDER BY priority DESC, visible_at LIMIT ?2)",
                             "UPDATE {0}_jobs SET leased = 1, token = token + 1, "
                             "visible_at = ?1 + 1000 * COALESCE(visibility_ms, ?3) "
                             "WHERE seq IN (SELECT seq FROM ({1}) ORDER BY priority DESC, visible_at, seq LIMIT ?2) "
                             "RETURNING seq, token, visible_at, queue, priority, envelope, id");
        }

        /// The soonest `visible_at` after ?1 among `n` queues (?2…): one probe of the claim
        /// index per queue and priority, however many rows wait.
        const std::string& next_visible(std::size_t n) {
            return per_queue(next_, n, 2,
                             "SELECT (SELECT visible_at FROM {0}_jobs WHERE queue = ?{1} AND priority = p.column1 "
                             "AND visible_at > ?1 ORDER BY visible_at LIMIT 1) AS v "
                             "FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS p",
                             "SELECT MIN(v) FROM ({1})");
        }

    private:
        /// `outer` around the UNION ALL of `part` for each of `n` queues, built once per `n`
        /// (`{0}` is the namespace; in `part`, `{1}` is the queue's parameter, numbered from
        /// `first`; in `outer`, `{1}` is the union).
        const std::string& per_queue(std::vector<std::string>& cache, std::size_t n, std::size_t first,
                                     std::string_view part, std::string_view outer) {
            if (cache.size() < n) cache.resize(n);
            auto& sql = cache[n - 1];
            if (!sql.empty()) return sql;
            std::string parts;
            for (std::size_t i = 0; i < n; ++i) {
                if (i) parts += " UNION ALL ";
                parts += fmt::format(fmt::runtime(part), ns_, first + i);
            }
            sql = fmt::format(fmt::runtime(outer), ns_, parts);
            return sql;
        }
        std::vector<std::string> claim_, next_;
    };

    struct state {
        state(sqlite_broker_options o, std::shared_ptr<detail::sqlite::database> d)
            : opts(std::move(o)), db(std::move(d)), sql(opts.namespace_), channels(opts.max_broadcast_backlog) {}
        sqlite_broker_options opts;
        std::shared_ptr<detail::sqlite::database> db;
        statements sql;                  // used on the database thread only
        std::int64_t next_dead_sweep = 0;  // database thread only
        std::mutex mu;                   // guards channels
        detail::broadcast_log channels;
        detail::waiter_set waiters;      // this process's waiting consumers

        /// Wakes this process's waiting consumers (others find the change at their next poll).
        void wake() { waiters.wake_all(); }

        // ---- on the database thread
        void insert(detail::sqlite::connection& c, const envelope& e, const std::string& text, std::int64_t now) {
            auto& q = c.query(sql.insert);
            q.bind(1, e.id);
            q.bind(2, e.queue);
            q.bind(3, e.priority);
            q.bind(4, e.not_before ? std::max(now, to_unix_micros(*e.not_before)) : now);
            bind_visibility(q, 5, e);
            q.bind(6, text);
            q.exec();
        }
        void add_dead(detail::sqlite::connection& c, const std::string& id, const std::string& queue,
                      const std::string& text, const std::string& reason, std::int64_t now) {
            auto& q = c.query(sql.add_dead);
            q.bind(1, id);
            q.bind(2, queue);
            q.bind(3, reason);
            q.bind(4, now);
            q.bind(5, text);
            q.exec();
        }
        std::optional<std::int64_t> next_visible(detail::sqlite::connection& c, const std::vector<std::string>& queues,
                                                 std::int64_t now) {
            auto& q = c.query(sql.next_visible(queues.size()));
            q.bind(1, now);
            for (std::size_t i = 0; i < queues.size(); ++i) q.bind(int(i + 2), queues[i]);
            std::optional<std::int64_t> out;
            if (q.executeStep() && !q.getColumn(0).isNull()) out = q.getColumn(0).getInt64();
            q.reset();
            return out;
        }
        bool move_to_dead(detail::sqlite::connection& c, std::int64_t seq, std::int64_t token, const std::string& reason,
                          std::int64_t now) {
            std::string id, queue, text;
            {
                auto& q = c.query(sql.take_row);
                q.bind(1, seq);
                q.bind(2, token);
                if (!q.executeStep()) return false;
                id = q.getColumn(0).getString();
                queue = q.getColumn(1).getString();
                text = q.getColumn(2).getString();
                while (q.executeStep()) {}
            }
            add_dead(c, id, queue, text, reason, now);
            return true;
        }
        std::vector<delivery> claim(detail::sqlite::connection& c, const std::vector<std::string>& queues, std::size_t max,
                                    std::int64_t now) {
            if (now >= next_dead_sweep) {  // retention of dead letters, checked once a minute
                next_dead_sweep = now + 60'000'000;
                auto& q = c.query(sql.dead_expire);
                q.bind(1, now - std::int64_t(opts.dead_letter_retention.count()) * 1000);
                q.exec();
            }
            struct row {
                std::int64_t seq, token, visible_at;
                std::string queue;
                int priority;
                std::string text, id;
            };
            std::vector<row> rows;
            {
                auto& q = c.query(sql.claim(queues.size()));
                q.bind(1, now);
                q.bind(2, std::int64_t(max));
                q.bind(3, std::int64_t(opts.default_visibility_timeout.count()));
                for (std::size_t i = 0; i < queues.size(); ++i) q.bind(int(i + 4), queues[i]);
                while (q.executeStep())
                    rows.push_back({q.getColumn(0).getInt64(), q.getColumn(1).getInt64(), q.getColumn(2).getInt64(),
                                    q.getColumn(3).getString(), q.getColumn(4).getInt(), q.getColumn(5).getString(),
                                    q.getColumn(6).getString()});
            }
            // RETURNING gives no order: restore the claim's.
            std::sort(rows.begin(), rows.end(), [](const row& a, const row& b) {
                return std::tie(b.priority, a.visible_at, a.seq) < std::tie(a.priority, b.visible_at, b.seq);
            });
            std::vector<delivery> out;
            out.reserve(rows.size());
            for (auto& r : rows) {
                delivery d;
                try {
                    d.env = parse_envelope(r.text);
                } catch (const std::exception& e) {
                    // A row that no longer decodes can never run: dead-letter it with the reason.
                    move_to_dead(c, r.seq, r.token, fmt::format("decode-error: {}", e.what()), now);
                    continue;
                }
                d.queue = std::move(r.queue);
                d.tag = std::uint64_t(r.seq);
                d.token = std::uint64_t(r.token);
                d.lease_expires = from_unix_micros(r.visible_at);
                out.push_back(std::move(d));
            }
            return out;
        }
    };

    static void bind_visibility(SQLite::Statement& q, int index, const envelope& e) {
        if (e.visibility_timeout) q.bind(index, std::int64_t(e.visibility_timeout->count()));
        else q.bind(index);
    }

    /// A dead-letter row (id, queue, reason, dead_at, seq, envelope). A stored envelope that
    /// no longer decodes is shown with its id and queue, and its text as the arguments.
    static dead_letter_entry read_dead(SQLite::Statement& q) {
        dead_letter_entry dl;
        std::string text = q.getColumn(5).getString();
        try {
            dl.env = parse_envelope(text);
        } catch (const std::exception&) {
            dl.env.id = q.getColumn(0).getString();
            dl.env.queue = q.getColumn(1).getString();
            dl.env.name = "(undecodable)";
            dl.env.args = std::move(text);
        }
        dl.reason = q.getColumn(2).getString();
        dl.dead_at = from_unix_micros(q.getColumn(3).getInt64());
        return dl;
    }

    std::shared_ptr<state> s_;
};

static_assert(broker<sqlite_broker>);

}  // namespace stem
