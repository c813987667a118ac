// stem/adapters/sqlite: the SQLite adapters (embedded default; one host, no server).
// sqlite_backend.hpp — a durable result backend in one SQLite file: statuses with TTL,
// waiting and watching, groups and chords, heartbeats.
#pragma once

#include <stem/adapters/sqlite/detail/database.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/detail/status_hub.hpp>
#include <stem/detail/status_row.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace stem {

/// Settings of a sqlite_backend.
struct sqlite_backend_options {
    std::string path = ".stem/backend.db";               ///< database file (created if missing)
    std::string namespace_ = "stem";                     ///< table-name prefix
    std::chrono::milliseconds default_ttl{24 * 3'600'000};  ///< statuses and groups kept this long by default
    std::chrono::milliseconds poll_interval{50};         ///< how often a waiter looks for updates written by
                                                         ///< other processes
    std::chrono::milliseconds cleanup_interval{60'000};  ///< how often expired rows are deleted
};

/// A result backend in a SQLite file (WAL mode). Several processes on one host may
/// share it. Waiting and watching are woken at once by writes of this process and
/// see other processes' writes at the next poll (`poll_interval`); a watch across
/// processes reports the latest status at each poll, so it may skip an intermediate one.
class sqlite_backend {
public:
    explicit sqlite_backend(sqlite_backend_options o = {}) {
        auto ns = detail::sqlite::checked_namespace(o.namespace_);
        auto db = detail::sqlite::database::open(o.path);
        s_ = detail::sqlite::shared_state<state>(db->path() + "|backend|" + ns, [&] {
            auto s = std::make_shared<state>(o, db);
            detail::sqlite::migrate(*db, "backend:" + ns, migrations(ns));
            return s;
        });
    }

    awaitable<void> set(task_status st, std::optional<std::chrono::milliseconds> ttl) {
        auto s = s_;
        auto now = clock::now();
        if (st.updated_at == time_point{}) st.updated_at = now;
        if (st.created_at == time_point{}) st.created_at = now;
        status_row row{s.get(), st.id, std::string(to_string(st.state)), st.name, to_unix_micros(st.updated_at),
                       to_unix_micros(now + ttl.value_or(s->opts.default_ttl)), serialize(st),
                       to_unix_micros(now)};
        // Status writes of one transaction run together (see set_many).
        co_await s->db->run_merged<&sqlite_backend::set_many>(std::move(row));
        s->hub->published(st);
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
        auto texts = co_await s->db->run([s = s.get(), &f, now](detail::sqlite::connection& c) {
            std::vector<std::string> out;
            auto& q = c.query(s->sql.list);
            q.bind(1, now);
            if (f.state) q.bind(2, std::string(to_string(*f.state)));
            q.bind(3, f.name);
            q.bind(4, std::int64_t(f.limit));
            q.bind(5, std::int64_t(f.offset));
            while (q.executeStep()) out.push_back(q.getColumn(0).getString());
            return out;
        });
        std::vector<task_status> out;
        for (auto& t : texts) out.push_back(task_status_from_json(boost::json::parse(t)));
        co_return out;
    }

    awaitable<std::uint64_t> count(std::optional<task_state> state) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db->run([s = s.get(), state, now](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.count);
            q.bind(1, now);
            if (state) q.bind(2, std::string(to_string(*state)));
            return q.executeStep() ? std::uint64_t(q.getColumn(0).getInt64()) : 0;
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
        co_await s->db->run([s = s.get(), &g, &ids_text, &meta_text, now_us, expires](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.group_init);
            q.bind(1, g.id);
            q.bind(2, ids_text);
            q.bind(3, meta_text);
            q.bind(4, now_us);
            q.bind(5, expires);
            q.exec();
            auto& d = c.query(s->sql.group_clear);
            d.bind(1, g.id);
            d.exec();
        });
    }

    awaitable<std::size_t> add_group_result(std::string group_id, task_status st) {
        auto s = s_;
        std::string text = serialize(st);
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db->run([s = s.get(), &group_id, &st, &text, now](detail::sqlite::connection& c) -> std::size_t {
            if (!s->group_alive(c, group_id, now))
                throw error(errc::not_found, fmt::format("group '{}' does not exist or has expired", group_id));
            // A member not seen before counts one more; a member seen before (run again) has
            // its status replaced and counts nothing.
            auto& q = c.query(s->sql.group_add);
            q.bind(1, group_id);
            q.bind(2, st.id);
            q.bind(3, text);
            bool added = q.exec() == 1;
            if (!added) {
                auto& r = c.query(s->sql.group_replace);
                r.bind(1, group_id);
                r.bind(2, st.id);
                r.bind(3, text);
                r.exec();
            }
            auto& n = c.query(s->sql.group_count);
            n.bind(1, group_id);
            n.bind(2, added ? 1 : 0);
            auto finished = n.executeStep() ? std::size_t(n.getColumn(0).getInt64()) : 0;
            n.reset();  // (a RETURNING statement left on its row would keep the write open)
            return finished;
        });
    }

    awaitable<std::optional<group_record>> get_group(std::string group_id) {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        co_return co_await s->db->run([s = s.get(), &group_id, now](detail::sqlite::connection& c) {
            std::optional<group_record> out;
            auto& q = c.query(s->sql.group_get);
            q.bind(1, group_id);
            q.bind(2, now);
            if (!q.executeStep()) return out;
            group_record g;
            g.id = group_id;
            auto ids = boost::json::parse(q.getColumn(0).getString());
            for (auto& v : ids.as_array()) g.task_ids.emplace_back(v.as_string());
            g.meta = boost::json::parse(q.getColumn(1).getString()).as_object();
            g.chord_claimed = q.getColumn(2).getInt() != 0;
            g.created_at = from_unix_micros(q.getColumn(3).getInt64());
            auto& r = c.query(s->sql.group_results);
            r.bind(1, group_id);
            while (r.executeStep()) {
                auto st = task_status_from_json(boost::json::parse(r.getColumn(0).getString()));
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
        co_return co_await s->db->run_single([s = s.get(), &group_id, now](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.group_claim);
            q.bind(1, group_id);
            q.bind(2, now);
            return q.exec() == 1;
        });
    }

    awaitable<void> set_heartbeat(worker_heartbeat hb, std::chrono::milliseconds ttl) {
        auto s = s_;
        std::string text = boost::json::serialize(to_json(hb));
        auto expires = to_unix_micros(clock::now() + ttl);
        co_await s->db->run_single([s = s.get(), &hb, &text, expires](detail::sqlite::connection& c) {
            auto& q = c.query(s->sql.heartbeat_set);
            q.bind(1, hb.worker_id);
            q.bind(2, expires);
            q.bind(3, text);
            q.exec();
        });
    }

    /// One connection thread takes the jobs in the order they were queued.
    backend_capabilities capabilities() const noexcept { return {.ordered_writes = true}; }

    awaitable<std::vector<worker_heartbeat>> list_heartbeats() {
        auto s = s_;
        auto now = to_unix_micros(clock::now());
        auto texts = co_await s->db->run([s = s.get(), now](detail::sqlite::connection& c) {
            auto& d = c.query(s->sql.heartbeat_expire);
            d.bind(1, now);
            d.exec();
            std::vector<std::string> out;
            auto& q = c.query(s->sql.heartbeat_list);
            while (q.executeStep()) out.push_back(q.getColumn(0).getString());
            return out;
        });
        std::vector<worker_heartbeat> out;
        for (auto& t : texts) out.push_back(worker_heartbeat_from_json(boost::json::parse(t)));
        co_return out;
    }

    /// The database file in use (absolute).
    const std::string& path() const noexcept { return s_->db->path(); }

private:
    static std::vector<std::string> migrations(const std::string& ns) {
        return {fmt::format(
            "CREATE TABLE {0}_results ("
            "  id TEXT PRIMARY KEY,"
            "  state TEXT NOT NULL,"
            "  name TEXT NOT NULL,"
            "  updated_at INTEGER NOT NULL,"
            "  expires_at INTEGER NOT NULL,"
            "  status TEXT NOT NULL);"
            "CREATE INDEX {0}_results_state ON {0}_results(state, expires_at);"
            "CREATE INDEX {0}_results_expiry ON {0}_results(expires_at);"
            "CREATE TABLE {0}_groups ("
            "  id TEXT PRIMARY KEY,"
            "  task_ids TEXT NOT NULL,"
            "  meta TEXT NOT NULL,"
            "  chord_claimed INTEGER NOT NULL DEFAULT 0,"
            "  created_at INTEGER NOT NULL,"
            "  expires_at INTEGER NOT NULL);"
            "CREATE TABLE {0}_group_results ("
            "  group_id TEXT NOT NULL,"
            "  task_id TEXT NOT NULL,"
            "  status TEXT NOT NULL,"
            "  PRIMARY KEY (group_id, task_id)) WITHOUT ROWID;"
            "CREATE TABLE {0}_heartbeats ("
            "  worker_id TEXT PRIMARY KEY,"
            "  expires_at INTEGER NOT NULL,"
            "  heartbeat TEXT NOT NULL);",
            ns),
                // 2: a counter of finished members, so that adding one is not a count of all
                fmt::format("ALTER TABLE {0}_groups ADD COLUMN finished INTEGER NOT NULL DEFAULT 0;"
                            "UPDATE {0}_groups SET finished = (SELECT COUNT(*) FROM {0}_group_results r WHERE r.group_id = {0}_groups.id);",
                            ns)};
    }

    struct statements {
        explicit statements(const std::string& ns)
            : set(fmt::format("INSERT INTO {0}_results(id, state, name, updated_at, expires_at, status) VALUES(?, ?, ?, ?, ?, ?) "
                              "ON CONFLICT(id) DO UPDATE SET state = excluded.state, name = excluded.name, "
                              "updated_at = excluded.updated_at, expires_at = excluded.expires_at, status = excluded.status", ns)),
              get(fmt::format("SELECT status FROM {0}_results WHERE id = ? AND expires_at > ?", ns)),
              list(fmt::format("SELECT status FROM {0}_results WHERE expires_at > ?1 AND (?2 IS NULL OR state = ?2) "
                               "AND (?3 = '' OR name = ?3) ORDER BY updated_at, id LIMIT ?4 OFFSET ?5", ns)),
              count(fmt::format("SELECT COUNT(*) FROM {0}_results WHERE expires_at > ?1 AND (?2 IS NULL OR state = ?2)", ns)),
              expire(fmt::format("DELETE FROM {0}_results WHERE expires_at <= ?1", ns)),
              expire_groups(fmt::format("DELETE FROM {0}_groups WHERE expires_at <= ?1", ns)),
              expire_group_results(fmt::format("DELETE FROM {0}_group_results WHERE group_id NOT IN (SELECT id FROM {0}_groups)", ns)),
              group_init(fmt::format("INSERT INTO {0}_groups(id, task_ids, meta, chord_claimed, created_at, expires_at) "
                                     "VALUES(?, ?, ?, 0, ?, ?) ON CONFLICT(id) DO UPDATE SET task_ids = excluded.task_ids, "
                                     "meta = excluded.meta, chord_claimed = 0, finished = 0, created_at = excluded.created_at, "
                                     "expires_at = excluded.expires_at", ns)),
              group_clear(fmt::format("DELETE FROM {0}_group_results WHERE group_id = ?", ns)),
              group_alive(fmt::format("SELECT 1 FROM {0}_groups WHERE id = ? AND expires_at > ?", ns)),
              group_add(fmt::format("INSERT INTO {0}_group_results(group_id, task_id, status) VALUES(?, ?, ?) "
                                    "ON CONFLICT(group_id, task_id) DO NOTHING", ns)),
              group_replace(fmt::format("UPDATE {0}_group_results SET status = ?3 WHERE group_id = ?1 AND task_id = ?2", ns)),
              group_count(fmt::format("UPDATE {0}_groups SET finished = finished + ?2 WHERE id = ?1 RETURNING finished", ns)),
              group_get(fmt::format("SELECT task_ids, meta, chord_claimed, created_at FROM {0}_groups WHERE id = ? AND expires_at > ?", ns)),
              group_results(fmt::format("SELECT status FROM {0}_group_results WHERE group_id = ?", ns)),
              group_claim(fmt::format("UPDATE {0}_groups SET chord_claimed = 1 WHERE id = ? AND chord_claimed = 0 AND expires_at > ?", ns)),
              heartbeat_set(fmt::format("INSERT INTO {0}_heartbeats(worker_id, expires_at, heartbeat) VALUES(?, ?, ?) "
                                        "ON CONFLICT(worker_id) DO UPDATE SET expires_at = excluded.expires_at, "
                                        "heartbeat = excluded.heartbeat", ns)),
              heartbeat_expire(fmt::format("DELETE FROM {0}_heartbeats WHERE expires_at <= ?", ns)),
              heartbeat_list(fmt::format("SELECT heartbeat FROM {0}_heartbeats ORDER BY worker_id", ns)) {}
        std::string set, get, list, count, expire, expire_groups, expire_group_results, group_init, group_clear,
            group_alive, group_add, group_replace, group_count, group_get, group_results, group_claim, heartbeat_set,
            heartbeat_expire, heartbeat_list;
    };

    struct state {
        state(sqlite_backend_options o, std::shared_ptr<detail::sqlite::database> d)
            : opts(std::move(o)), db(std::move(d)), sql(opts.namespace_) {}
        sqlite_backend_options opts;
        std::shared_ptr<detail::sqlite::database> db;
        statements sql;                     // database thread only
        std::int64_t next_cleanup = 0;      // database thread only
        std::shared_ptr<detail::status_hub> hub = std::make_shared<detail::status_hub>(opts.poll_interval);

        awaitable<std::optional<task_status>> read(const std::string& id) {
            auto now = to_unix_micros(clock::now());
            auto text = co_await db->run([this, &id, now](detail::sqlite::connection& c) {
                std::optional<std::string> out;
                auto& q = c.query(sql.get);
                q.bind(1, id);
                q.bind(2, now);
                if (q.executeStep()) out = q.getColumn(0).getString();
                return out;
            });
            if (!text) co_return std::nullopt;
            co_return task_status_from_json(boost::json::parse(*text));
        }
        void cleanup(detail::sqlite::connection& c, std::int64_t now) {
            if (now < next_cleanup) return;
            next_cleanup = now + std::int64_t(opts.cleanup_interval.count()) * 1000;
            for (auto* sql_text : {&sql.expire, &sql.expire_groups}) {
                auto& q = c.query(*sql_text);
                q.bind(1, now);
                q.exec();
            }
            c.exec(sql.expire_group_results);
        }
        bool group_alive(detail::sqlite::connection& c, const std::string& id, std::int64_t now) {
            auto& q = c.query(sql.group_alive);
            q.bind(1, id);
            q.bind(2, now);
            return q.executeStep();
        }
    };

    using status_row = detail::status_row<state>;

    /// Writes the statuses of one transaction, in order; of several writes of one id only
    /// the last is run (typically a task's `running` status, started without waiting, and
    /// its result: one upsert fewer).
    static std::vector<bool> set_many(detail::sqlite::connection& c, const std::vector<const status_row*>& rows) {
        auto* s = rows.front()->s;
        s->cleanup(c, rows.front()->now);
        auto run = detail::last_of_each(rows.size(), [&](std::size_t i) -> std::string_view { return rows[i]->id; });
        for (std::size_t i = 0; i < rows.size(); ++i) {
            if (!run[i]) continue;
            auto& r = *rows[i];
            auto& q = c.query(s->sql.set);
            q.bind(1, r.id);
            q.bind(2, r.state_name);
            q.bind(3, r.name);
            q.bind(4, r.updated_at);
            q.bind(5, r.expires_at);
            q.bind(6, r.text);
            q.exec();
        }
        return std::vector<bool>(rows.size(), true);
    }

    static detail::status_reader reader(const std::shared_ptr<state>& s) {
        return [s](const std::string& id) { return s->read(id); };
    }

    std::shared_ptr<state> s_;
};

static_assert(result_backend<sqlite_backend>);

}  // namespace stem
