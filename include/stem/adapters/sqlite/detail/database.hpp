// stem/adapters/sqlite: the SQLite adapters (embedded default; one host, no server).
// detail/database.hpp — one connection per file per process, driven by its own thread
// (a detail::job_pool), with group commit: jobs queued while a transaction runs join the next.
#pragma once

#include <stem/core/error.hpp>
#include <stem/detail/job_pool.hpp>

#include <cctype>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <fmt/format.h>

namespace stem::detail::sqlite {

/// What a job sees: the connection and a cache of prepared statements.
class connection {
public:
    explicit connection(SQLite::Database& db) : db_(db) {}

    /// A prepared statement for `sql`, reset and with no bindings.
    SQLite::Statement& query(const std::string& sql) {
        auto it = cache_.find(sql);
        if (it == cache_.end()) it = cache_.emplace(sql, std::make_unique<SQLite::Statement>(db_, sql)).first;
        auto& st = *it->second;
        st.reset();
        st.clearBindings();
        return st;
    }
    /// Runs `sql` (no results) and returns the number of rows changed.
    int exec(const std::string& sql) {
        auto& st = query(sql);
        return st.exec();
    }
    SQLite::Database& db() noexcept { return db_; }

    /// Resets every statement, so that none keeps a read snapshot open once the
    /// transaction ends (a statement left on a row would pin an old snapshot, and WAL
    /// refuses to start a write transaction from it: "database is locked" without waiting).
    void reset_all() {
        for (auto& [sql, st] : cache_) st->reset();
    }

private:
    SQLite::Database& db_;
    std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>> cache_;
};

/// Settings of a database connection.
struct database_options {
    std::chrono::milliseconds busy_timeout{5000};  ///< wait for another process's write lock
    std::size_t max_batch = 512;                  ///< jobs per transaction
};

/// The connection of a database and how a batch of jobs runs on it: BEGIN IMMEDIATE,
/// each job (or group of merged jobs) in its own savepoint (so one failing job rolls back
/// alone), COMMIT.
class session {
public:
    using connection = sqlite::connection;

    session(const std::string& path, const database_options& o) : path_(path) {
        try {
            db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
            db_->setBusyTimeout(int(o.busy_timeout.count()));
            db_->exec("PRAGMA journal_mode=WAL");
            db_->exec("PRAGMA synchronous=NORMAL");
        } catch (const std::exception& e) {
            throw error(errc::backend_failure, fmt::format("sqlite: cannot open '{}': {}", path, e.what()));
        }
        conn_ = std::make_unique<connection>(*db_);
    }

    void run_batch(std::vector<std::unique_ptr<pool_job<connection>>>& batch) {
        try {
            conn_->exec("BEGIN IMMEDIATE");
        } catch (const std::exception& e) {
            auto ep = std::make_exception_ptr(
                error(errc::backend_failure, fmt::format("sqlite '{}': cannot start a write transaction: {}", path_, e.what())));
            for (auto& j : batch) j->fail(ep);
            return;
        }
        // Jobs that can merge (status writes) run as one group, at the place of the first.
        std::vector<bool> done(batch.size());
        std::vector<pool_job<connection>*> group;
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (done[i]) continue;
            auto& j = batch[i];
            group.assign(1, j.get());
            if (auto key = j->merge_key())
                for (std::size_t k = i + 1; k < batch.size(); ++k)
                    if (!done[k] && batch[k]->merge_key() == key) {
                        group.push_back(batch[k].get());
                        done[k] = true;
                    }
            try {
                if (!j->savepoint && group.size() == 1) {
                    j->execute_group(*conn_, group);
                    continue;
                }
                conn_->exec("SAVEPOINT job");
                if (!j->execute_group(*conn_, group)) conn_->exec("ROLLBACK TO job");
                conn_->exec("RELEASE job");
            } catch (const std::exception& e) {
                auto ep = std::make_exception_ptr(error(errc::backend_failure, fmt::format("sqlite '{}': {}", path_, e.what())));
                for (auto* g : group) g->fail(ep);
            }
        }
        try {
            conn_->reset_all();
            conn_->exec("COMMIT");
        } catch (const std::exception& e) {
            auto ep = std::make_exception_ptr(
                error(errc::backend_failure, fmt::format("sqlite '{}': commit failed: {}", path_, e.what())));
            for (auto& j : batch) j->fail(ep);
            try {
                conn_->exec("ROLLBACK");
            } catch (...) {
            }
        }
    }

    template <class F>
    void run_now(F& f) {
        SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
        f(*conn_);
        conn_->reset_all();
        tx.commit();
    }

private:
    std::string path_;
    std::unique_ptr<SQLite::Database> db_;
    std::unique_ptr<connection> conn_;
};

/// One SQLite file, opened once per process and shared by every adapter object on it.
/// Its single connection is driven by a thread of its own (a job_pool of one session),
/// so the callers' event loops never block on the disk or on another process's write
/// lock, and jobs queued while a transaction runs are committed together.
class database {
public:
    using options = database_options;

    /// The database at `path` (created with its directory if missing), shared with
    /// every other user of the same file in this process.
    static std::shared_ptr<database> open(const std::string& path, options o = {}) {
        static std::mutex mu;
        static std::map<std::string, std::weak_ptr<database>> open_files;
        std::string key = path;
        if (path != ":memory:") {
            std::filesystem::path p(path);
            std::error_code ec;
            if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
            if (ec)
                throw error(errc::backend_failure,
                            fmt::format("sqlite: cannot create the directory of '{}': {}", path, ec.message()));
            key = std::filesystem::weakly_canonical(std::filesystem::absolute(p)).string();
        }
        std::lock_guard lk(mu);
        if (key != ":memory:")
            if (auto it = open_files.find(key); it != open_files.end())
                if (auto db = it->second.lock()) return db;
        auto db = std::make_shared<database>(key, o);
        if (key != ":memory:") open_files[key] = db;
        return db;
    }

    database(const std::string& key, const options& o) : path_(key), pool_(sessions(key, o), o.max_batch) {}

    const std::string& path() const noexcept { return path_; }

    /// See job_pool::run: `f(connection&)` in a savepoint of the next transaction.
    template <class F>
    auto run(F f) {
        return pool_.run(std::move(f));
    }
    /// See job_pool::run_single: no savepoint.
    template <class F>
    auto run_single(F f) {
        return pool_.run_single(std::move(f));
    }
    /// See job_pool::run_merged: items of one transaction run through one `Merge` call. A
    /// group of one item runs without a savepoint: its write is one statement (SQLite undoes
    /// a failed one by itself), and the expiry cleanup that may precede it stands on its own.
    template <auto Merge, class Item>
    auto run_merged(Item item) {
        return pool_.template run_merged<Merge>(std::move(item), commit_mode::durable, false);
    }
    /// `f(connection&)` now, on the calling thread, in its own transaction.
    template <class F>
    void run_now(F f) {
        pool_.run_now(std::move(f));
    }

private:
    static std::vector<std::unique_ptr<session>> sessions(const std::string& key, const options& o) {
        std::vector<std::unique_ptr<session>> v;
        v.push_back(std::make_unique<session>(key, o));
        return v;
    }
    std::string path_;
    job_pool<session> pool_;
};

}  // namespace stem::detail::sqlite

namespace stem::detail::sqlite {

/// Brings `component`'s tables up to date: applies the steps after the recorded
/// version, each once, recording the new version (table `stem_migrations`).
inline void migrate(database& db, const std::string& component, const std::vector<std::string>& steps) {
    db.run_now([&](connection& c) {
        c.db().exec("CREATE TABLE IF NOT EXISTS stem_migrations ("
                    "component TEXT PRIMARY KEY, version INTEGER NOT NULL, applied_at INTEGER NOT NULL)");
        int version = 0;
        {
            SQLite::Statement q(c.db(), "SELECT version FROM stem_migrations WHERE component = ?");
            q.bind(1, component);
            if (q.executeStep()) version = q.getColumn(0).getInt();
        }
        if (version > int(steps.size()))
            throw error(errc::backend_failure,
                        fmt::format("sqlite '{}': schema of '{}' is at version {}, newer than this build knows ({})",
                                    db.path(), component, version, steps.size()));
        for (std::size_t i = std::size_t(version); i < steps.size(); ++i) c.db().exec(steps[i]);
        SQLite::Statement up(c.db(), "INSERT INTO stem_migrations(component, version, applied_at) VALUES(?, ?, strftime('%s','now')) "
                                     "ON CONFLICT(component) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at");
        up.bind(1, component);
        up.bind(2, int(steps.size()));
        up.exec();
    });
}

/// Checks a namespace for use in table names.
inline std::string checked_namespace(const std::string& ns) {
    bool ok = !ns.empty() && ns.size() <= 48 && !std::isdigit(static_cast<unsigned char>(ns[0]));
    for (char ch : ns) ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
    if (!ok)
        throw error(errc::invalid_argument,
                    fmt::format("sqlite: namespace '{}' must be 1-48 letters, digits or '_', not starting with a digit", ns));
    return ns;
}

/// A per-process object shared by every adapter instance opened on the same file and namespace.
template <class T, class Make>
std::shared_ptr<T> shared_state(const std::string& key, Make make) {
    static std::mutex mu;
    static std::map<std::string, std::weak_ptr<T>> live;
    std::lock_guard lk(mu);
    if (auto it = live.find(key); it != live.end())
        if (auto s = it->second.lock()) return s;
    std::shared_ptr<T> s = make();
    live[key] = s;
    return s;
}

}  // namespace stem::detail::sqlite
