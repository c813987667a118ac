// stem/adapters/postgres: the PostgreSQL adapters (libpqxx).
// postgres_broker.hpp — a broker in PostgreSQL tables: batch claims with FOR UPDATE SKIP
// LOCKED and token leases, LISTEN/NOTIFY wake-ups, dead letters with retention, broadcasts
// across processes.
#pragma once

#include <stem/adapters/postgres/detail/database.hpp>
#include <stem/contracts/broker.hpp>
#include <stem/detail/redact.hpp>
#include <stem/detail/waiter.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include <boost/asio/this_coro.hpp>

namespace stem {

/// Settings of a postgres_broker.
struct postgres_broker_options {
    std::string conninfo;                                          ///< libpq URI or key=value string
    std::string namespace_ = "stem";                               ///< table-name prefix
    std::chrono::milliseconds default_visibility_timeout{30'000};  ///< lease when the envelope names none
    std::chrono::milliseconds poll_interval{1000};                 ///< idle consumers look anyway this often
                                                                   ///< (LISTEN/NOTIFY wakes them at once)
    std::chrono::milliseconds dead_letter_retention{7 * 24 * 3'600'000};  ///< older dead letters are removed
    std::chrono::milliseconds broadcast_retention{3'600'000};      ///< broadcasts are kept this long
    std::size_t pool_size = 4;                                     ///< connections running queries
    bool migrate = true;                                           ///< apply the schema on construction
};

/// A broker in PostgreSQL. Any number of producers and workers on any machines may
/// share it. Queries run on a pool of connections, each with its own thread, so event
/// loops never block and claims, acks and writes proceed in parallel; jobs waiting for
/// the same connection are committed together.
///
/// A delivery's lease is a `token` on its row: claiming increments it, so an ack,
/// nack, extension, retry or dead-lettering with an older token changes nothing.
class postgres_broker {
public:
    explicit postgres_broker(postgres_broker_options o) : s_(std::make_shared<state>(std::move(o))) {}

    /// Applies the schema for `o.namespace_` (what construction does unless `o.migrate` is false).
    static void migrate(const postgres_broker_options& o) {
        auto ns = detail::postgres::checked_namespace(o.namespace_);
        detail::postgres::database db(pool_options(o, 1));
        detail::postgres::migrate(db, "broker:" + ns, migrations(ns));
    }

    awaitable<void> publish(envelope e) {
        validate(e);
        auto s = s_;
        std::string text = serialize(e);
        auto now = to_unix_micros(clock::now());
        // One statement: alone in its batch, it runs without a transaction of its own.
        co_await s->db.run_single([s = s.get(), &e, &text, now](detail::postgres::connection& c) { s->insert(c, e, text, now); });
        s->wake();
    }

    awaitable<void> publish_batch(std::vector<envelope> batch) {
        for (auto& e : batch) validate(e);
        if (batch.empty()) co_return;
        auto s = s_;
        std::vector<std::string> texts;
        texts.reserve(batch.size());
        for (auto& e : batch) texts.push_back(serialize(e));
        auto now = to_unix_micros(clock::now());
        using row = std::tuple<const std::string&, const std::string&, int, std::int64_t, std::int64_t, const std::string&>;
        std::vector<row> rows;
        rows.reserve(batch.size());
        for (std::size_t i = 0; i < batch.size(); ++i) {
            auto& e = batch[i];
            rows.emplace_back(e.id, e.queue, e.priority, e.not_before ? std::max(now, to_unix_micros(*e.not_before)) : now,
                              visibility_ms(e), texts[i]);
        }
        co_await s->db.run([s = s.get(), &rows](detail::postgres::connection& c) {
            // COPY: the whole batch in one statement.
            c.copy(s->ns + "_jobs", s->sql.job_columns, rows);
            c.exec(s->sql.notify, s->channel);
        });
        s->wake();
    }

    /// Stores `e` for every subscriber of `channel`, in any process, that is reading it.
    awaitable<void> broadcast(std::string channel, envelope e) {
        validate(e);
        auto s = s_;
        std::string text = serialize(e);
        auto now = to_unix_micros(clock::now());
        co_await s->db.run([s = s.get(), &channel, &text, now](detail::postgres::connection& c) {
            c.exec(s->sql.broadcast_add, channel, now, text);
            c.exec(s->sql.notify, s->channel);
        });
        s->wake();
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
        std::string queues = detail::postgres::text_array(sub.queues);
        for (;;) {
            s->waiters.add(w);  // before looking: a publish or NOTIFY from now on wakes us
            auto now = to_unix_micros(clock::now());
            // Nothing to claim: the soonest instant a row of these queues becomes visible (a
            // delay ending, a lease running out) ends the wait, as no NOTIFY marks it. A row
            // visible already is locked by another consumer's claim, which may leave it (a
            // claim over several queues locks up to `max` rows in each): look again shortly.
            std::optional<std::int64_t> next_visible;
            auto out = co_await s->db.run([s = s.get(), &sub, &queues, &next_visible, max, now](detail::postgres::connection& c) {
                std::vector<delivery> got;
                s->read_broadcasts(c, sub, max, got);
                if (got.size() < max && !sub.queues.empty()) {
                    s->claim(c, queues, max - got.size(), now, got);
                    if (got.empty()) {
                        auto r = c.exec(s->sql.next_visible, queues);
                        next_visible.reset();
                        if (!r[0][0].is_null()) next_visible = r[0][0].as<std::int64_t>();
                    }
                }
                return got;
            }, detail::commit_mode::lazy);  // a claim lost in a server crash: the task is claimed again
            auto left = deadline - std::chrono::steady_clock::now();
            if (!out.empty() || left <= decltype(left)::zero()) co_return out;
            auto until = std::min(deadline, std::chrono::steady_clock::now() + s->opts.poll_interval);
            if (next_visible)
                until = std::min(until, *next_visible <= now ? std::chrono::steady_clock::now() + locked_retry
                                                             : detail::steady_deadline(from_unix_micros(*next_visible)));
            co_await w->wait_until(until);
        }
    }

    awaitable<bool> ack(const delivery& d) {
        if (d.broadcast) co_return true;
        auto s = s_;
        lease_ref ref{s.get(), std::int64_t(d.tag), std::int64_t(d.token)};
        // Acks waiting for the same connection become one DELETE. An ack lost in a server
        // crash delivers the task again (at least once), so its commit need not wait for disk.
        co_return co_await s->db.template run_merged<&postgres_broker::ack_many>(ref, detail::commit_mode::lazy);
    }

    awaitable<bool> nack(const delivery& d, bool requeue) {
        if (d.broadcast) co_return true;
        auto s = s_;
        if (!requeue) {
            lease_ref ref{s.get(), std::int64_t(d.tag), std::int64_t(d.token)};
            co_return co_await s->db.template run_merged<&postgres_broker::ack_many>(ref, detail::commit_mode::lazy);
        }
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        auto now = to_unix_micros(clock::now());
        bool ok = co_await s->db.run([s = s.get(), seq, token, now](detail::postgres::connection& c) {
            bool done = c.exec(s->sql.requeue, seq, token, now).affected_rows() == 1;
            if (done) c.exec(s->sql.notify, s->channel);
            return done;
        });
        if (ok) s->wake();
        co_return ok;
    }

    awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) {
        if (d.broadcast) co_return true;
        auto s = s_;
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        auto until = to_unix_micros(clock::now() + by);
        co_return co_await s->db.run([s = s.get(), seq, token, until](detail::postgres::connection& c) {
            return c.exec(s->sql.extend, until, seq, token).affected_rows() == 1;
        }, detail::commit_mode::lazy);
    }

    /// Updates the row in place (new envelope, attempt and visibility); no dead letter.
    awaitable<bool> retry(const delivery& d, envelope next) {
        validate(next);
        auto s = s_;
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        std::string text = serialize(next);
        auto now = to_unix_micros(clock::now());
        bool ok = co_await s->db.run([s = s.get(), seq, token, &next, &text, now](detail::postgres::connection& c) {
            auto visible = next.not_before ? std::max(now, to_unix_micros(*next.not_before)) : now;
            bool done = c.exec(s->sql.retry, next.id, next.queue, next.priority, visible, visibility_ms(next), text, seq, token)
                            .affected_rows() == 1;
            if (done) c.exec(s->sql.notify, s->channel);
            return done;
        });
        if (ok) s->wake();
        co_return ok;
    }

    awaitable<bool> dead_letter(const delivery& d, std::string reason) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        if (d.broadcast) {
            std::string text = serialize(d.env);
            co_await s->db.run([s = s.get(), &d, &text, &reason, now](detail::postgres::connection& c) {
                c.exec(s->sql.add_dead, d.env.id, d.queue, reason, now, text);
            });
            co_return true;
        }
        std::int64_t seq = std::int64_t(d.tag), token = std::int64_t(d.token);
        co_return co_await s->db.run([s = s.get(), seq, token, &reason, now](detail::postgres::connection& c) {
            return c.exec(s->sql.move_to_dead, seq, token, reason, now).affected_rows() == 1;
        });
    }

    /// Dead letters of `queue` (all queues when empty), oldest first.
    awaitable<dead_letter_page> list_dead_letters(std::string queue, std::size_t limit, std::size_t offset) {
        auto s = s_;
        co_return co_await s->db.run([s = s.get(), &queue, limit, offset](detail::postgres::connection& c) {
            dead_letter_page page;
            page.total = c.exec(s->sql.dead_count, queue)[0][0].as<std::uint64_t>();
            for (auto row : c.exec(s->sql.dead_page, queue, std::int64_t(limit), std::int64_t(offset)))
                page.items.push_back(read_dead(row));
            return page;
        });
    }

    awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string id) {
        auto s = s_;
        co_return co_await s->db.run([s = s.get(), &id](detail::postgres::connection& c) {
            std::optional<dead_letter_entry> out;
            auto r = c.exec(s->sql.dead_by_id, id);
            if (!r.empty()) out = read_dead(r[0]);
            return out;
        });
    }

    /// Moves up to `o.limit` of the oldest dead letters of `queue` back to their queue
    /// with attempt 0 (hidden until now + `o.delay` if given). Dry run: report only.
    awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string queue, replay_options o) {
        auto s = s_;
        auto now = clock::now();
        auto out = co_await s->db.run([s = s.get(), &queue, &o, now](detail::postgres::connection& c) {
            std::vector<dead_letter_entry> replayed;
            auto r = c.exec(o.dry_run ? s->sql.dead_oldest : s->sql.dead_take_oldest, queue, std::int64_t(o.limit));
            for (auto row : r) {
                auto dl = read_dead(row);
                if (!o.dry_run) {
                    envelope e = dl.env;
                    e.attempt = 0;
                    e.not_before.reset();
                    if (o.delay) e.not_before = now + *o.delay;
                    s->insert(c, e, serialize(e), to_unix_micros(now));
                }
                replayed.push_back(std::move(dl));
            }
            std::sort(replayed.begin(), replayed.end(), [](auto& a, auto& b) { return a.dead_at < b.dead_at; });
            return replayed;  // each insert sent its NOTIFY (one is delivered per transaction)
        });
        if (!o.dry_run && !out.empty()) s->wake();
        co_return out;
    }

    /// Removes the dead letters of `queue` (all when empty); returns how many (would have been) removed.
    awaitable<std::uint64_t> purge_dead_letters(std::string queue, bool dry_run) {
        auto s = s_;
        co_return co_await s->db.run([s = s.get(), &queue, dry_run](detail::postgres::connection& c) -> std::uint64_t {
            if (dry_run) return c.exec(s->sql.dead_count, queue)[0][0].as<std::uint64_t>();
            return c.exec(s->sql.dead_purge, queue).affected_rows();
        });
    }

    /// Removes every pending and delayed envelope of `queue` (leased ones stay); returns how many.
    awaitable<std::uint64_t> purge(std::string queue) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db.run([s = s.get(), &queue, now](detail::postgres::connection& c) -> std::uint64_t {
            return c.exec(s->sql.purge, queue, now).affected_rows();
        });
    }

    awaitable<queue_stats> stats(std::string queue) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db.run([s = s.get(), &queue, now](detail::postgres::connection& c) {
            auto r = c.exec(s->sql.stats, now, queue);
            auto dead = c.exec(s->sql.dead_count, queue)[0][0].as<std::uint64_t>();
            return queue_stats{queue, r[0][0].as<std::uint64_t>(), r[0][1].as<std::uint64_t>(), r[0][2].as<std::uint64_t>(), dead};
        });
    }

    awaitable<std::vector<std::string>> queues() {
        auto s = s_;
        co_return co_await s->db.run([s = s.get()](detail::postgres::connection& c) {
            std::vector<std::string> out;
            for (auto row : c.exec(s->sql.queues)) out.push_back(row[0].as<std::string>());
            return out;
        });
    }

    broker_capabilities capabilities() const noexcept {
        return {.priority = true, .delay = true, .cross_process_broadcast = true, .durable = true};
    }

    /// The server, without the password (for messages and logs).
    const std::string& display() const noexcept { return s_->db.display(); }
    /// The namespace (table-name prefix) in use.
    const std::string& namespace_name() const noexcept { return s_->ns; }

private:
    static detail::postgres::database_options pool_options(const postgres_broker_options& o, std::size_t size) {
        detail::postgres::database_options d;
        d.conninfo = o.conninfo;
        d.display = detail::redact_password(o.conninfo);
        d.pool_size = size;
        return d;
    }

    static std::vector<std::string> migrations(const std::string& ns) {
        return {fmt::format(
            // seq orders deliveries and names them (delivery::tag). visible_at (unix µs) is
            // not_before while waiting and the lease's end while leased; token counts grants.
            "CREATE TABLE {0}_jobs ("
            "  seq BIGSERIAL PRIMARY KEY,"
            "  id TEXT NOT NULL,"
            "  queue TEXT NOT NULL,"
            "  priority SMALLINT NOT NULL,"
            "  visible_at BIGINT NOT NULL,"
            "  leased BOOLEAN NOT NULL DEFAULT false,"
            "  token BIGINT NOT NULL DEFAULT 0,"
            "  visibility_ms BIGINT NOT NULL DEFAULT 0,"
            "  envelope TEXT NOT NULL);"
            "CREATE INDEX {0}_jobs_claim ON {0}_jobs(queue, priority DESC, visible_at, seq);"
            "CREATE TABLE {0}_dead_letters ("
            "  seq BIGSERIAL PRIMARY KEY,"
            "  id TEXT NOT NULL,"
            "  queue TEXT NOT NULL,"
            "  reason TEXT NOT NULL,"
            "  dead_at BIGINT NOT NULL,"
            "  envelope TEXT NOT NULL);"
            "CREATE INDEX {0}_dead_letters_queue ON {0}_dead_letters(queue, seq);"
            "CREATE INDEX {0}_dead_letters_id ON {0}_dead_letters(id);"
            "CREATE INDEX {0}_dead_letters_age ON {0}_dead_letters(dead_at);"
            "CREATE TABLE {0}_broadcasts ("
            "  seq BIGSERIAL PRIMARY KEY,"
            "  channel TEXT NOT NULL,"
            "  created_at BIGINT NOT NULL,"
            "  envelope TEXT NOT NULL);"
            "CREATE INDEX {0}_broadcasts_channel ON {0}_broadcasts(channel, seq);"
            "CREATE TABLE {0}_broadcast_cursors ("
            "  channel TEXT NOT NULL,"
            "  consumer TEXT NOT NULL,"
            "  last_seq BIGINT NOT NULL,"
            "  PRIMARY KEY (channel, consumer));",
            ns)};
    }

    struct statements {
        explicit statements(const std::string& ns)
            : job_columns{"id", "queue", "priority", "visible_at", "visibility_ms", "envelope"},
              // The row and the NOTIFY that wakes consumers, as one statement.
              insert(fmt::format("WITH j AS (INSERT INTO {0}_jobs(id, queue, priority, visible_at, visibility_ms, envelope) "
                                 "VALUES($1, $2, $3, $4, $5, $6) RETURNING seq) SELECT pg_notify($7, '') FROM j", ns)),
              notify("SELECT pg_notify($1, '')"),
              // The claim index is read in its order, one queue at a time, so a claim reads
              // about as many rows as it takes whatever the backlog (`queue = ANY(...)` over
              // the whole index would sort every visible row first).
              claim(fmt::format(
                  "UPDATE {0}_jobs AS j SET leased = true, token = j.token + 1, "
                  "visible_at = $1 + 1000 * (CASE WHEN j.visibility_ms > 0 THEN j.visibility_ms ELSE $3 END) "
                  "WHERE j.seq = ANY(ARRAY("
                  "  SELECT c.seq FROM unnest($4::text[]) AS q(name) CROSS JOIN LATERAL ("
                  "    SELECT seq, priority, visible_at FROM {0}_jobs WHERE queue = q.name AND visible_at <= $1 "
                  "    ORDER BY priority DESC, visible_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED) AS c "
                  "  ORDER BY c.priority DESC, c.visible_at, c.seq LIMIT $2)) "
                  "RETURNING j.seq, j.token, j.visible_at, j.queue, j.priority, j.envelope", ns)),
              // One index probe per queue and priority (the claim index orders visible_at
              // within them), however many rows wait.
              next_visible(fmt::format(
                  "SELECT min(n.visible_at) FROM unnest($1::text[]) AS q(name) CROSS JOIN generate_series(0, 9) AS p(priority) "
                  "CROSS JOIN LATERAL (SELECT visible_at FROM {0}_jobs WHERE queue = q.name AND priority = p.priority "
                  "ORDER BY visible_at LIMIT 1) AS n", ns)),
              ack_many(fmt::format("DELETE FROM {0}_jobs AS j USING unnest($1::bigint[], $2::bigint[]) AS x(seq, token) "
                                   "WHERE j.seq = x.seq AND j.token = x.token AND j.leased RETURNING j.seq", ns)),
              requeue(fmt::format("UPDATE {0}_jobs SET leased = false, visible_at = $3 WHERE seq = $1 AND token = $2 AND leased", ns)),
              extend(fmt::format("UPDATE {0}_jobs SET visible_at = $1 WHERE seq = $2 AND token = $3 AND leased", ns)),
              retry(fmt::format("UPDATE {0}_jobs SET id = $1, queue = $2, priority = $3, visible_at = $4, visibility_ms = $5, "
                                "envelope = $6, leased = false WHERE seq = $7 AND token = $8 AND leased", ns)),
              move_to_dead(fmt::format("WITH gone AS (DELETE FROM {0}_jobs WHERE seq = $1 AND token = $2 AND leased "
                                       "RETURNING id, queue, envelope) "
                                       "INSERT INTO {0}_dead_letters(id, queue, reason, dead_at, envelope) "
                                       "SELECT id, queue, $3, $4, envelope FROM gone", ns)),
              add_dead(fmt::format("INSERT INTO {0}_dead_letters(id, queue, reason, dead_at, envelope) VALUES($1, $2, $3, $4, $5)", ns)),
              dead_count(fmt::format("SELECT count(*) FROM {0}_dead_letters WHERE $1 = '' OR queue = $1", ns)),
              dead_page(fmt::format("SELECT id, queue, reason, dead_at, envelope FROM {0}_dead_letters "
                                    "WHERE $1 = '' OR queue = $1 ORDER BY seq LIMIT $2 OFFSET $3", ns)),
              dead_oldest(fmt::format("SELECT id, queue, reason, dead_at, envelope FROM {0}_dead_letters "
                                      "WHERE $1 = '' OR queue = $1 ORDER BY seq LIMIT $2", ns)),
              dead_take_oldest(fmt::format("DELETE FROM {0}_dead_letters WHERE seq IN (SELECT seq FROM {0}_dead_letters "
                                           "WHERE $1 = '' OR queue = $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED) "
                                           "RETURNING id, queue, reason, dead_at, envelope", ns)),
              dead_by_id(fmt::format("SELECT id, queue, reason, dead_at, envelope FROM {0}_dead_letters "
                                     "WHERE id = $1 ORDER BY seq DESC LIMIT 1", ns)),
              dead_purge(fmt::format("DELETE FROM {0}_dead_letters WHERE $1 = '' OR queue = $1", ns)),
              dead_expire(fmt::format("DELETE FROM {0}_dead_letters WHERE dead_at < $1", ns)),
              purge(fmt::format("DELETE FROM {0}_jobs WHERE queue = $1 AND NOT (leased AND visible_at > $2)", ns)),
              stats(fmt::format("SELECT count(*) FILTER (WHERE visible_at <= $1),"
                                " count(*) FILTER (WHERE NOT leased AND visible_at > $1),"
                                " count(*) FILTER (WHERE leased AND visible_at > $1) FROM {0}_jobs WHERE queue = $2", ns)),
              queues(fmt::format("SELECT DISTINCT queue FROM {0}_jobs UNION SELECT DISTINCT queue FROM {0}_dead_letters "
                                 "ORDER BY 1", ns)),
              broadcast_add(fmt::format("INSERT INTO {0}_broadcasts(channel, created_at, envelope) VALUES($1, $2, $3)", ns)),
              broadcast_cursor(fmt::format(
                  "INSERT INTO {0}_broadcast_cursors(channel, consumer, last_seq) "
                  "VALUES($1, $2, (SELECT COALESCE(max(seq), 0) FROM {0}_broadcasts WHERE channel = $1)) "
                  "ON CONFLICT (channel, consumer) DO UPDATE SET last_seq = {0}_broadcast_cursors.last_seq "
                  "RETURNING last_seq", ns)),
              broadcast_read(fmt::format("SELECT seq, envelope FROM {0}_broadcasts WHERE channel = $1 AND seq > $2 "
                                         "ORDER BY seq LIMIT $3", ns)),
              broadcast_move(fmt::format("UPDATE {0}_broadcast_cursors SET last_seq = $3 WHERE channel = $1 AND consumer = $2", ns)),
              broadcast_expire(fmt::format("DELETE FROM {0}_broadcasts WHERE created_at < $1", ns)) {}
        std::vector<std::string> job_columns;
        std::string insert, notify, claim, next_visible, ack_many, requeue, extend, retry, move_to_dead, add_dead, dead_count,
            dead_page, dead_oldest, dead_take_oldest, dead_by_id, dead_purge, dead_expire, purge, stats, queues,
            broadcast_add, broadcast_cursor, broadcast_read, broadcast_move, broadcast_expire;
    };

    struct state {
        explicit state(postgres_broker_options o)
            : opts(std::move(o)), ns(detail::postgres::checked_namespace(opts.namespace_)), channel(ns + "_jobs"),
              db(pool_options(opts, opts.pool_size)), sql(ns) {
            if (opts.migrate) detail::postgres::migrate(db, "broker:" + ns, migrations(ns));
            listen = std::make_unique<detail::postgres::listener>(
                db.options(), std::vector<std::string>{channel}, [this](const std::string&, const std::string&) { wake(); });
        }
        postgres_broker_options opts;
        std::string ns, channel;
        detail::postgres::database db;
        statements sql;
        std::atomic<std::int64_t> next_sweep{0};
        detail::waiter_set waiters;  // this process's waiting consumers
        std::unique_ptr<detail::postgres::listener> listen;  // last: destroyed first (it calls wake())

        void wake() { waiters.wake_all(); }

        // ---- on a pool thread
        void insert(detail::postgres::connection& c, const envelope& e, const std::string& text, std::int64_t now) {
            auto visible = e.not_before ? std::max(now, to_unix_micros(*e.not_before)) : now;
            c.exec(sql.insert, e.id, e.queue, e.priority, visible, visibility_ms(e), text, channel);
        }
        void read_broadcasts(detail::postgres::connection& c, const subscription& sub, std::size_t max,
                             std::vector<delivery>& out) {
            for (auto& ch : sub.broadcasts) {
                if (out.size() >= max) break;
                auto from = c.exec(sql.broadcast_cursor, ch, sub.consumer)[0][0].as<std::int64_t>();
                auto last = from;
                for (auto row : c.exec(sql.broadcast_read, ch, from, std::int64_t(max - out.size()))) {
                    last = row[0].as<std::int64_t>();
                    delivery d;
                    try {
                        d.env = parse_envelope(row[1].as<std::string>());
                    } catch (const std::exception&) {
                        continue;  // an undecodable broadcast is skipped: nobody holds a lease on it
                    }
                    d.queue = ch;
                    d.broadcast = true;
                    out.push_back(std::move(d));
                }
                if (last != from) c.exec(sql.broadcast_move, ch, sub.consumer, last);
            }
        }
        void claim(detail::postgres::connection& c, const std::string& queues, std::size_t max, std::int64_t now,
                   std::vector<delivery>& out) {
            if (now >= next_sweep.load()) {  // retention of dead letters and broadcasts, once a minute
                next_sweep = now + 60'000'000;
                c.exec_inline(sql.dead_expire, now - std::int64_t(opts.dead_letter_retention.count()) * 1000);
                c.exec_inline(sql.broadcast_expire, now - std::int64_t(opts.broadcast_retention.count()) * 1000);
            }
            auto r = c.exec(sql.claim, now, std::int64_t(max), std::int64_t(opts.default_visibility_timeout.count()), queues);
            struct row {
                std::int64_t seq, token, visible_at;
                int priority;
                std::string queue, text;
            };
            std::vector<row> rows;
            for (auto x : r)
                rows.push_back({x[0].as<std::int64_t>(), x[1].as<std::int64_t>(), x[2].as<std::int64_t>(), x[4].as<int>(),
                                x[3].as<std::string>(), x[5].as<std::string>()});
            // RETURNING gives no order: restore the claim's.
            std::sort(rows.begin(), rows.end(), [](const row& a, const row& b) {
                return std::tie(b.priority, a.visible_at, a.seq) < std::tie(a.priority, b.visible_at, b.seq);
            });
            for (auto& x : rows) {
                delivery d;
                try {
                    d.env = parse_envelope(x.text);
                } catch (const std::exception& e) {
                    // A row that no longer decodes can never run: dead-letter it with the reason.
                    c.exec(sql.move_to_dead, x.seq, x.token, fmt::format("decode-error: {}", e.what()), now);
                    continue;
                }
                d.queue = std::move(x.queue);
                d.tag = std::uint64_t(x.seq);
                d.token = std::uint64_t(x.token);
                d.lease_expires = from_unix_micros(x.visible_at);
                out.push_back(std::move(d));
            }
        }
    };

    struct lease_ref {
        state* s;
        std::int64_t seq, token;
    };

    /// ack and nack(drop) of many deliveries in one statement: each row is deleted if its
    /// lease is still the one given.
    static std::vector<bool> ack_many(detail::postgres::connection& c, const std::vector<const lease_ref*>& refs) {
        std::vector<std::int64_t> seqs, tokens;
        for (auto* r : refs) {
            seqs.push_back(r->seq);
            tokens.push_back(r->token);
        }
        std::unordered_set<std::int64_t> gone;
        for (auto row : c.exec(refs.front()->s->sql.ack_many, detail::postgres::int_array(seqs), detail::postgres::int_array(tokens)))
            gone.insert(row[0].as<std::int64_t>());
        std::vector<bool> out;
        for (auto* r : refs) out.push_back(gone.contains(r->seq));
        return out;
    }

    /// How soon a consumer looks again when the only visible rows were locked by another claim.
    static constexpr std::chrono::milliseconds locked_retry{5};

    static std::int64_t visibility_ms(const envelope& e) {
        return e.visibility_timeout ? std::int64_t(e.visibility_timeout->count()) : 0;
    }

    /// A dead-letter row (id, queue, reason, dead_at, envelope). A stored envelope that no
    /// longer decodes is shown with its id and queue, and its text as the arguments.
    static dead_letter_entry read_dead(const pqxx::row& r) {
        dead_letter_entry dl;
        auto text = r[4].as<std::string>();
        try {
            dl.env = parse_envelope(text);
        } catch (const std::exception&) {
            dl.env.id = r[0].as<std::string>();
            dl.env.queue = r[1].as<std::string>();
            dl.env.name = "(undecodable)";
            dl.env.args = std::move(text);
        }
        dl.reason = r[2].as<std::string>();
        dl.dead_at = from_unix_micros(r[3].as<std::int64_t>());
        return dl;
    }

    std::shared_ptr<state> s_;
};

static_assert(broker<postgres_broker>);

}  // namespace stem
