// stem/adapters/sqlite: the SQLite adapters (embedded default; one host, no server).
// detail/database.hpp — one connection per file per process, driven by its own thread,
// with group commit: every job queued while a transaction runs joins the next one.
#pragma once

#include <stem/core/error.hpp>

#include <cctype>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>
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

private:
    SQLite::Database& db_;
    std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>> cache_;
};

/// Settings of a database connection.
struct database_options {
    std::chrono::milliseconds busy_timeout{5000};  ///< wait for another process's write lock
    std::size_t max_batch = 512;                  ///< jobs per transaction
};

/// One SQLite file, opened once per process and shared by every adapter object on it.
/// Jobs run on the database's own thread, so the callers' event loops never block on
/// the disk or on another process's write lock. Jobs queued while a transaction runs
/// are committed together (each inside its own savepoint: one failing job rolls back
/// alone), which turns many small writes into one commit.
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
        auto db = std::shared_ptr<database>(new database(key, o));
        if (key != ":memory:") open_files[key] = db;
        return db;
    }

    ~database() {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
        else if (thread_.joinable()) thread_.join();
    }

    database(const database&) = delete;
    database& operator=(const database&) = delete;

    const std::string& path() const noexcept { return path_; }

    /// Runs `f(connection&)` on the database thread inside a write transaction and
    /// returns its result once the transaction has committed. An exception from `f`
    /// (or a failed commit) is rethrown to the caller.
    template <class F>
    auto run(F f) {
        return submit_job<true>(std::move(f));
    }

    /// As `run`, for a job whose statements need not be undone together (typically one
    /// statement: SQLite undoes a failed statement by itself), so it needs no savepoint.
    template <class F>
    auto run_single(F f) {
        return submit_job<false>(std::move(f));
    }

    /// Runs `f(connection&)` now on the calling thread, in its own transaction
    /// (for set-up such as migrations, before any job is queued).
    template <class F>
    void run_now(F f) {
        std::lock_guard lk(setup_mu_);
        SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
        f(*conn_);
        tx.commit();
    }

private:
    template <bool Savepoint, class F>
    auto submit_job(F f) {
        using R = std::invoke_result_t<F&, connection&>;
        if constexpr (std::is_void_v<R>) {
            return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr)>(
                [this](auto handler, F fn) {
                    submit(std::make_unique<job_impl<F, decltype(handler), void>>(std::move(fn), std::move(handler)), Savepoint);
                },
                boost::asio::use_awaitable, std::move(f));
        } else {
            return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
                [this](auto handler, F fn) {
                    submit(std::make_unique<job_impl<F, decltype(handler), R>>(std::move(fn), std::move(handler)), Savepoint);
                },
                boost::asio::use_awaitable, std::move(f));
        }
    }

    struct job {
        bool savepoint = true;
        virtual ~job() = default;
        /// Runs the job; false when it threw (its failure is kept for the caller).
        virtual bool execute(connection& c) noexcept = 0;
        virtual void fail(std::exception_ptr e) noexcept = 0;
        /// Hands the outcome to the caller's executor; `self` is this job.
        virtual void finish(std::unique_ptr<job> self) = 0;
    };

    template <class F, class Handler, class R>
    struct job_impl final : job {
        using value_type = std::conditional_t<std::is_void_v<R>, bool, R>;
        job_impl(F fn, Handler h)
            : f(std::move(fn)), handler(std::move(h)),
              work(boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                       boost::asio::execution::outstanding_work.tracked)) {}
        bool execute(connection& c) noexcept override {
            try {
                if constexpr (std::is_void_v<R>) f(c);
                else value.emplace(f(c));
                return true;
            } catch (...) {
                failure = std::current_exception();
                return false;
            }
        }
        void fail(std::exception_ptr e) noexcept override {
            if (!failure) failure = e;
        }
        void finish(std::unique_ptr<job> self) override {
            // An untracked copy: this thread must not hold the caller's io_context once the
            // handler may have run (the tracked `work` goes with the job, on the caller's side).
            auto ex = boost::asio::prefer(work, boost::asio::execution::outstanding_work.untracked);
            boost::asio::post(ex, [self = std::move(self)]() mutable {
                auto& j = static_cast<job_impl&>(*self);
                auto h = std::move(j.handler);
                auto ep = j.failure;
                if constexpr (std::is_void_v<R>) {
                    self.reset();
                    std::move(h)(ep);
                } else {
                    R v = ep || !j.value ? R{} : std::move(*j.value);
                    self.reset();
                    std::move(h)(ep, std::move(v));
                }
            });
        }
        F f;
        Handler handler;
        std::decay_t<decltype(boost::asio::prefer(std::declval<boost::asio::associated_executor_t<Handler>>(),
                                                  boost::asio::execution::outstanding_work.tracked))>
            work;
        std::optional<value_type> value;
        std::exception_ptr failure;
    };

    database(std::string path, options o) : path_(std::move(path)), opts_(o) {
        try {
            db_ = std::make_unique<SQLite::Database>(path_, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
            db_->setBusyTimeout(int(opts_.busy_timeout.count()));
            db_->exec("PRAGMA journal_mode=WAL");
            db_->exec("PRAGMA synchronous=NORMAL");
        } catch (const std::exception& e) {
            throw error(errc::backend_failure, fmt::format("sqlite: cannot open '{}': {}", path_, e.what()));
        }
        conn_ = std::make_unique<connection>(*db_);
        thread_ = std::thread([this] { loop(); });
    }

    void submit(std::unique_ptr<job> j, bool savepoint) {
        j->savepoint = savepoint;
        {
            std::lock_guard lk(mu_);
            queue_.push_back(std::move(j));
        }
        cv_.notify_one();
    }

    void loop() {
        std::vector<std::unique_ptr<job>> batch;
        for (;;) {
            {
                std::unique_lock lk(mu_);
                cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
                if (queue_.empty()) return;  // stopping, nothing left
                std::size_t n = std::min(queue_.size(), opts_.max_batch);
                for (std::size_t i = 0; i < n; ++i) batch.push_back(std::move(queue_[i]));
                queue_.erase(queue_.begin(), queue_.begin() + std::ptrdiff_t(n));
            }
            std::lock_guard setup(setup_mu_);
            run_batch(batch);
            for (auto& j : batch) {
                auto* raw = j.get();
                raw->finish(std::move(j));
            }
            batch.clear();
        }
    }

    void run_batch(std::vector<std::unique_ptr<job>>& batch) {
        try {
            conn_->exec("BEGIN IMMEDIATE");
        } catch (const std::exception& e) {
            auto ep = std::make_exception_ptr(
                error(errc::backend_failure, fmt::format("sqlite '{}': cannot start a write transaction: {}", path_, e.what())));
            for (auto& j : batch) j->fail(ep);
            return;
        }
        // Each job in its own savepoint: a job that throws rolls back its own changes only.
        for (auto& j : batch) {
            try {
                if (!j->savepoint) {
                    j->execute(*conn_);
                    continue;
                }
                conn_->exec("SAVEPOINT job");
                if (!j->execute(*conn_)) conn_->exec("ROLLBACK TO job");
                conn_->exec("RELEASE job");
            } catch (const std::exception& e) {
                j->fail(std::make_exception_ptr(error(errc::backend_failure, fmt::format("sqlite '{}': {}", path_, e.what()))));
            }
        }
        try {
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

    std::string path_;
    options opts_;
    std::unique_ptr<SQLite::Database> db_;
    std::unique_ptr<connection> conn_;
    std::mutex setup_mu_;  // run_now and the job loop never overlap
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<job>> queue_;
    bool stop_ = false;
    std::thread thread_;
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
