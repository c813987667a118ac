// stem/adapters/postgres: the PostgreSQL adapters (libpqxx).
// postgres_backend.hpp — a result backend in PostgreSQL tables: statuses with TTL, waiting
// by LISTEN/NOTIFY across processes, groups and chords, heartbeats.
#pragma once

#include <stem/adapters/postgres/detail/database.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/detail/redact.hpp>
#include <stem/detail/status_hub.hpp>
#include <stem/detail/status_row.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace stem {

/// Settings of a postgres_backend.
struct postgres_backend_options {
    std::string conninfo;                                   ///< libpq URI or key=value string
    std::string namespace_ = "stem";                        ///< table-name prefix
    std::chrono::milliseconds default_ttl{24 * 3'600'000};  ///< statuses and groups kept this long by default
    std::chrono::milliseconds poll_interval{1000};          ///< waiters look anyway this often (NOTIFY wakes them)
    std::chrono::milliseconds cleanup_interval{60'000};     ///< how often expired rows are deleted
    std::size_t pool_size = 4;                              ///< connections running queries
    bool migrate = true;                                    ///< apply the schema on construction
};

/// A result backend in PostgreSQL. Every status write sends a NOTIFY with the task id,
/// so a producer on one machine that waits for a result written by a worker on another
/// is woken at once; polling at `poll_interval` covers a lost notification connection.
class postgres_backend {
public:
    explicit postgres_backend(postgres_backend_options o) : s_(std::make_shared<state>(std::move(o))) {}

    /// Applies the schema for `o.namespace_` (what construction does unless `o.migrate` is false).
    static void migrate(const postgres_backend_options& o) {
        auto ns = detail::postgres::checked_namespace(o.namespace_);
        detail::postgres::database db(pool_options(o, 1));
        detail::postgres::migrate(db, "backend:" + ns, migrations(ns));
    }

    awaitable<void> set(task_status st, std::optional<std::chrono::milliseconds> ttl) {
        auto s = s_;
        auto now = clock::now();
        if (st.updated_at == time_point{}) st.updated_at = now;
        if (st.created_at == time_point{}) st.created_at = now;
        std::string text = serialize(st);
        status_row row{s.get(), st.id, std::string(to_string(st.state)), st.name, to_unix_micros(st.updated_at),
                       to_unix_micros(now + ttl.value_or(s->opts.default_ttl)), std::move(text), to_unix_micros(now)};
        // Status writes waiting for the same connection become one upsert. A `running`
        // status lost in a server crash is harmless, so its commit need not wait for disk.
        auto mode = st.state == task_state::running ? detail::commit_mode::lazy : detail::commit_mode::durable;
        // One statement (the upsert; now and then the expiry sweep's deletes, which need not
        // be undone with it): a lone durable write runs in autocommit.
        if (co_await s->db.template run_merged<&postgres_backend::set_many>(std::move(row), mode, false)) s->hub->published(st);
    }

    awaitable<std::optional<task_status>> get(std::string id) {
        auto s = s_;
        co_return co_await s->read(id);
    }

    awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds timeout) {
        auto s = s_;
        co_return co_await s->hub->wait(reader(s), std::move(id), timeout);
    }

    awaitable<status_watch> watch(std::string id) {
        auto s = s_;
        co_return co_await s->hub->watch(reader(s), std::move(id));
    }

    awaitable<std::vector<task_status>> list(status_filter f) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        std::string state_name = f.state ? std::string(to_string(*f.state)) : std::string();
        auto texts = co_await s->db.run([s = s.get(), &f, &state_name, now](detail::postgres::connection& c) {
            std::vector<std::string> out;
            for (auto row : c.exec(s->sql.list, now, state_name, f.name, std::int64_t(f.limit), std::int64_t(f.offset)))
                out.push_back(row[0].as<std::string>());
            return out;
        });
        std::vector<task_status> out;
        for (auto& t : texts) out.push_back(task_status_from_json(boost::json::parse(t)));
        co_return out;
    }

    awaitable<std::uint64_t> count(std::optional<task_state> state) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        std::string state_name = state ? std::string(to_string(*state)) : std::string();
        co_return co_await s->db.run([s = s.get(), &state_name, now](detail::postgres::connection& c) {
            return c.exec(s->sql.count, now, state_name)[0][0].as<std::uint64_t>();
        });
    }

    awaitable<void> init_group(group_descriptor g, std::optional<std::chrono::milliseconds> ttl) {
        auto s = s_;
        auto now = clock::now();
        boost::json::array ids;
        for (auto& t : g.task_ids) ids.emplace_back(t);
        std::string ids_text = boost::json::serialize(ids), meta_text = boost::json::serialize(g.meta);
        auto expires = to_unix_micros(now + ttl.value_or(s->opts.default_ttl));
        auto now_us = to_unix_micros(now);
        co_await s->db.run([s = s.get(), &g, &ids_text, &meta_text, now_us, expires](detail::postgres::connection& c) {
            c.exec(s->sql.group_init, g.id, ids_text, meta_text, now_us, expires);
            c.exec(s->sql.group_clear, g.id);
        });
    }

    awaitable<std::size_t> add_group_result(std::string group_id, task_status st) {
        auto s = s_;
        std::string text = serialize(st);
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db.run([s = s.get(), &group_id, &st, &text, now](detail::postgres::connection& c) {
            // Locking the group row serialises concurrent completions: the count is exact.
            if (c.exec(s->sql.group_lock, group_id, now).empty())
                throw error(errc::not_found, fmt::format("group '{}' does not exist or has expired", group_id));
            return c.exec(s->sql.group_add, group_id, st.id, text)[0][0].as<std::size_t>();
        });
    }

    awaitable<std::optional<group_record>> get_group(std::string group_id) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db.run([s = s.get(), &group_id, now](detail::postgres::connection& c) {
            std::optional<group_record> out;
            auto r = c.exec(s->sql.group_get, group_id, now);
            if (r.empty()) return out;
            group_record g;
            g.id = group_id;
            auto ids = boost::json::parse(r[0][0].as<std::string>());
            for (auto& v : ids.as_array()) g.task_ids.emplace_back(v.as_string());
            g.meta = boost::json::parse(r[0][1].as<std::string>()).as_object();
            g.chord_claimed = r[0][2].as<bool>();
            g.created_at = from_unix_micros(r[0][3].as<std::int64_t>());
            for (auto row : c.exec(s->sql.group_results, group_id)) {
                auto st = task_status_from_json(boost::json::parse(row[0].as<std::string>()));
                auto id = st.id;
                g.results.insert_or_assign(std::move(id), std::move(st));
            }
            out = std::move(g);
            return out;
        });
    }

    awaitable<bool> claim_chord(std::string group_id) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db.run([s = s.get(), &group_id, now](detail::postgres::connection& c) {
            return c.exec(s->sql.group_claim, group_id, now).affected_rows() == 1;
        });
    }

    awaitable<void> set_heartbeat(worker_heartbeat hb, std::chrono::milliseconds ttl) {
        auto s = s_;
        std::string text = boost::json::serialize(to_json(hb));
        auto expires = to_unix_micros(clock::now() + ttl);
        co_await s->db.run([s = s.get(), &hb, &text, expires](detail::postgres::connection& c) {
            c.exec(s->sql.heartbeat_set, hb.worker_id, expires, text);
        }, detail::commit_mode::lazy);  // the next heartbeat replaces a lost one
    }

    /// Writes run on several connections, so two writes of one task may commit out of order;
    /// but the upsert drops a `running` status that is not newer than the stored one (set_many).
    backend_capabilities capabilities() const noexcept { return {.ordered_writes = true}; }

    awaitable<std::vector<worker_heartbeat>> list_heartbeats() {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        auto texts = co_await s->db.run([s = s.get(), now](detail::postgres::connection& c) {
            c.exec(s->sql.heartbeat_expire, now);
            std::vector<std::string> out;
            for (auto row : c.exec(s->sql.heartbeat_list)) out.push_back(row[0].as<std::string>());
            return out;
        });
        std::vector<worker_heartbeat> out;
        for (auto& t : texts) out.push_back(worker_heartbeat_from_json(boost::json::parse(t)));
        co_return out;
    }

    /// The server, without the password (for messages and logs).
    const std::string& display() const noexcept { return s_->db.display(); }

private:
    static detail::postgres::database_options pool_options(const postgres_backend_options& o, std::size_t size) {
        detail::postgres::database_options d;
        d.conninfo = o.conninfo;
        d.display = detail::redact_password(o.conninfo);
        d.pool_size = size;
        return d;
    }

    static std::vector<std::string> migrations(const std::string& ns) {
        return {fmt::format(
            "CREATE TABLE {0}_results ("
            "  id TEXT PRIMARY KEY,"
            "  state TEXT NOT NULL,"
            "  name TEXT NOT NULL,"
            "  updated_at BIGINT NOT NULL,"
            "  expires_at BIGINT NOT NULL,"
            "  status TEXT NOT NULL);"
            "CREATE INDEX {0}_results_state ON {0}_results(state, expires_at);"
            "CREATE INDEX {0}_results_expiry ON {0}_results(expires_at);"
            "CREATE TABLE {0}_groups ("
            "  id TEXT PRIMARY KEY,"
            "  task_ids TEXT NOT NULL,"
            "  meta TEXT NOT NULL,"
            "  chord_claimed BOOLEAN NOT NULL DEFAULT false,"
            "  created_at BIGINT NOT NULL,"
            "  expires_at BIGINT NOT NULL);"
            "CREATE TABLE {0}_group_results ("
            "  group_id TEXT NOT NULL,"
            "  task_id TEXT NOT NULL,"
            "  status TEXT NOT NULL,"
            "  PRIMARY KEY (group_id, task_id));"
            "CREATE TABLE {0}_heartbeats ("
            "  worker_id TEXT PRIMARY KEY,"
            "  expires_at BIGINT NOT NULL,"
            "  heartbeat TEXT NOT NULL);",
            ns),
                // 2: a counter of finished members, so that adding one is not a count of all
                fmt::format("ALTER TABLE {0}_groups ADD COLUMN finished BIGINT NOT NULL DEFAULT 0;"
                            "UPDATE {0}_groups g SET finished = (SELECT count(*) FROM {0}_group_results r WHERE r.group_id = g.id);",
                            ns)};
    }

    struct statements {
        explicit statements(const std::string& ns)
            : set_many(fmt::format("WITH up AS (INSERT INTO {0}_results(id, state, name, updated_at, expires_at, status) "
                                   "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) "
                                   "ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
                                   "name = excluded.name, updated_at = excluded.updated_at, expires_at = excluded.expires_at, "
                                   "status = excluded.status WHERE excluded.state <> 'running' OR {0}_results.updated_at < excluded.updated_at "
                                   "RETURNING id) SELECT id, pg_notify($7, id) FROM up", ns)),
              get(fmt::format("SELECT status FROM {0}_results WHERE id = $1 AND expires_at > $2", ns)),
              list(fmt::format("SELECT status FROM {0}_results WHERE expires_at > $1 AND ($2 = '' OR state = $2) "
                               "AND ($3 = '' OR name = $3) ORDER BY updated_at, id LIMIT $4 OFFSET $5", ns)),
              count(fmt::format("SELECT count(*) FROM {0}_results WHERE expires_at > $1 AND ($2 = '' OR state = $2)", ns)),
              expire(fmt::format("DELETE FROM {0}_results WHERE expires_at <= $1", ns)),
              expire_groups(fmt::format("WITH gone AS (DELETE FROM {0}_groups WHERE expires_at <= $1 RETURNING id) "
                                        "DELETE FROM {0}_group_results WHERE group_id IN (SELECT id FROM gone)", ns)),
              group_init(fmt::format("INSERT INTO {0}_groups(id, task_ids, meta, chord_claimed, created_at, expires_at) "
                                     "VALUES($1, $2, $3, false, $4, $5) ON CONFLICT(id) DO UPDATE SET task_ids = excluded.task_ids, "
                                     "meta = excluded.meta, chord_claimed = false, finished = 0, created_at = excluded.created_at, "
                                     "expires_at = excluded.expires_at", ns)),
              group_clear(fmt::format("DELETE FROM {0}_group_results WHERE group_id = $1", ns)),
              group_lock(fmt::format("SELECT 1 FROM {0}_groups WHERE id = $1 AND expires_at > $2 FOR UPDATE", ns)),
              // (xmax = 0: the row was inserted, not updated: a member not counted before)
              group_add(fmt::format("WITH r AS (INSERT INTO {0}_group_results(group_id, task_id, status) VALUES($1, $2, $3) "
                                    "ON CONFLICT(group_id, task_id) DO UPDATE SET status = excluded.status RETURNING (xmax = 0) AS new) "
                                    "UPDATE {0}_groups SET finished = finished + (SELECT count(*) FROM r WHERE new) WHERE id = $1 "
                                    "RETURNING finished", ns)),
              group_get(fmt::format("SELECT task_ids, meta, chord_claimed, created_at FROM {0}_groups WHERE id = $1 AND expires_at > $2", ns)),
              group_results(fmt::format("SELECT status FROM {0}_group_results WHERE group_id = $1", ns)),
              group_claim(fmt::format("UPDATE {0}_groups SET chord_claimed = true WHERE id = $1 AND NOT chord_claimed AND expires_at > $2", ns)),
              heartbeat_set(fmt::format("INSERT INTO {0}_heartbeats(worker_id, expires_at, heartbeat) VALUES($1, $2, $3) "
                                        "ON CONFLICT(worker_id) DO UPDATE SET expires_at = excluded.expires_at, "
                                        "heartbeat = excluded.heartbeat", ns)),
              heartbeat_expire(fmt::format("DELETE FROM {0}_heartbeats WHERE expires_at <= $1", ns)),
              heartbeat_list(fmt::format("SELECT heartbeat FROM {0}_heartbeats ORDER BY worker_id", ns)) {}
        std::string set_many, get, list, count, expire, expire_groups, group_init, group_clear, group_lock, group_add,
            group_get, group_results, group_claim, heartbeat_set, heartbeat_expire, heartbeat_list;
    };

    struct state {
        explicit state(postgres_backend_options o)
            : opts(std::move(o)), ns(detail::postgres::checked_namespace(opts.namespace_)), channel(ns + "_results"),
              db(pool_options(opts, opts.pool_size)), sql(ns), hub(std::make_shared<detail::status_hub>(opts.poll_interval)) {
            if (opts.migrate) detail::postgres::migrate(db, "backend:" + ns, migrations(ns));
            // A NOTIFY carries the task id ("" after a reconnect: everyone looks again).
            listen = std::make_unique<detail::postgres::listener>(
                db.options(), std::vector<std::string>{channel}, [h = hub](const std::string&, const std::string& id) {
                    if (id.empty()) h->poke_all();
                    else h->poke(id);
                });
        }
        postgres_backend_options opts;
        std::string ns, channel;
        detail::postgres::database db;
        statements sql;
        std::shared_ptr<detail::status_hub> hub;
        std::atomic<std::int64_t> next_cleanup{0};
        std::unique_ptr<detail::postgres::listener> listen;  // last: destroyed first

        awaitable<std::optional<task_status>> read(const std::string& id) {
            auto now = to_unix_micros(clock::now());
            auto text = co_await db.run_single([this, &id, now](detail::postgres::connection& c) {
                std::optional<std::string> out;
                auto r = c.exec(sql.get, id, now);
                if (!r.empty()) out = r[0][0].as<std::string>();
                return out;
            });
            if (!text) co_return std::nullopt;
            co_return task_status_from_json(boost::json::parse(*text));
        }
        void cleanup(detail::postgres::connection& c, std::int64_t now) {
            auto due = next_cleanup.load();
            if (now < due || !next_cleanup.compare_exchange_strong(due, now + std::int64_t(opts.cleanup_interval.count()) * 1000))
                return;
            c.exec_inline(sql.expire, now);
            c.exec_inline(sql.expire_groups, now);
        }
    };

    using status_row = detail::status_row<state>;

    /// Writes many statuses with one upsert (the last write of an id wins) and one NOTIFY per
    /// id written. A `running` status is written only over an older status: it is the record a
    /// worker starts without waiting, and may reach the server after the task's later writes
    /// (on another connection). True for each row that was written, or superseded in the batch.
    static std::vector<bool> set_many(detail::postgres::connection& c, const std::vector<const status_row*>& rows) {
        auto* s = rows.front()->s;
        s->cleanup(c, rows.front()->now);
        auto last = detail::last_of_each(rows.size(), [&](std::size_t i) -> std::string_view { return rows[i]->id; });
        std::vector<std::string> ids, states, names, texts;
        std::vector<std::int64_t> updated, expires;
        for (std::size_t i = 0; i < rows.size(); ++i) {
            if (!last[i]) continue;
            auto& r = *rows[i];
            ids.push_back(r.id);
            states.push_back(r.state_name);
            names.push_back(r.name);
            texts.push_back(r.text);
            updated.push_back(r.updated_at);
            expires.push_back(r.expires_at);
        }
        auto written = c.exec(s->sql.set_many, detail::postgres::text_array(ids), detail::postgres::text_array(states),
                              detail::postgres::text_array(names), detail::postgres::int_array(updated),
                              detail::postgres::int_array(expires), detail::postgres::text_array(texts), s->channel);
        std::unordered_set<std::string> kept;
        for (auto row : written) kept.insert(row[0].as<std::string>());
        std::vector<bool> out(rows.size(), true);
        for (std::size_t i = 0; i < rows.size(); ++i)
            if (last[i]) out[i] = kept.contains(rows[i]->id);
        return out;
    }

    static detail::status_reader reader(const std::shared_ptr<state>& s) {
        return [s](const std::string& id) { return s->read(id); };
    }

    std::shared_ptr<state> s_;
};

static_assert(result_backend<postgres_backend>);

}  // namespace stem
