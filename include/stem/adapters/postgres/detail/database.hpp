// stem/adapters/postgres: the PostgreSQL adapters (libpqxx).
// detail/database.hpp — a pool of connections, each driven by its own thread with group
// commit; a listener connection for LISTEN/NOTIFY; schema migrations.
#pragma once

#include <stem/core/error.hpp>
#include <stem/detail/job_pool.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <pqxx/pqxx>

namespace stem::detail::postgres {

/// Settings of a connection pool.
struct database_options {
    std::string conninfo;              ///< libpq connection string or URI (may hold a password)
    std::string display;               ///< the same without the password, for messages
    std::size_t pool_size = 4;         ///< connections (and threads) running jobs
    std::size_t max_batch = 256;       ///< jobs per transaction
};

/// What a job sees: the open transaction (or autocommit), with statements prepared once
/// per connection.
///
/// Transactions are begun and ended by hand on a `pqxx::nontransaction`, so that `BEGIN`
/// travels with the transaction's settings in one round trip, and a job that needs no
/// transaction of its own sends only its statement.
class connection {
public:
    explicit connection(pqxx::connection& c) : c_(c) {}

    /// Runs `sql` (prepared on first use) with `args`; `nullptr` is NULL.
    template <class... Args>
    pqxx::result exec(const std::string& sql, Args&&... args) {
        return tx_->exec_prepared(prepared(sql), std::forward<Args>(args)...);
    }
    /// Runs `sql` as is (no parameters).
    pqxx::result exec_raw(const std::string& sql) { return tx_->exec(sql); }
    /// Runs `sql` with `$1` written out as `value`, unprepared, so that it is planned for
    /// that value: for the rare sweeps of expired rows, where the one generic plan of a
    /// prepared statement would read the whole table instead of the index.
    pqxx::result exec_inline(std::string sql, std::int64_t value) {
        for (auto at = sql.find("$1"); at != std::string::npos; at = sql.find("$1", at))
            sql.replace(at, 2, std::to_string(value));
        return tx_->exec(sql);
    }
    /// Loads `rows` (tuples in the order of `columns`) into `table` with COPY.
    template <class Rows>
    void copy(const std::string& table, const std::vector<std::string>& columns, const Rows& rows) {
        pqxx::stream_to out(*tx_, table, columns);
        for (auto& r : rows) out << r;
        out.complete();
    }
    /// Quotes a string literal for this connection.
    std::string quote(const std::string& s) { return tx_->quote(s); }

    /// Opens a transaction. A `lazy` one does not wait for the WAL flush at commit, and
    /// plans each prepared statement once (`plan_cache_mode`): its statements (claims, acks,
    /// lease extensions, `running` statuses) are simple and frequent, and PostgreSQL would
    /// otherwise plan them again at each call. With `autocommit`, no transaction is opened:
    /// each statement commits by itself, with the server's settings.
    void begin(commit_mode m, bool autocommit = false) {
        tx_ = std::make_unique<pqxx::nontransaction>(c_);
        open_ = !autocommit;
        if (!open_) return;
        if (m == commit_mode::durable) tx_->exec("BEGIN");
        else if (c_.server_version() < 120000) tx_->exec("BEGIN; SET LOCAL synchronous_commit TO off");
        else tx_->exec("BEGIN; SET LOCAL synchronous_commit TO off; SET LOCAL plan_cache_mode TO force_generic_plan");
    }
    void commit() {
        // A statement that fails throws out of its job, and the session then aborts instead:
        // a COMMIT here never ends a failed transaction (which the server would roll back
        // without an error).
        if (open_) {
            tx_->exec("COMMIT");
            open_ = false;
        }
        tx_->commit();
        tx_.reset();
    }
    void abort() noexcept {
        try {
            if (open_ && tx_) tx_->exec("ROLLBACK");
        } catch (...) {
            broken_ = true;  // the server may still hold the transaction: reconnect
        }
        open_ = false;
        tx_.reset();
    }
    /// True when a transaction could not be ended: the connection must be reopened.
    bool broken() const noexcept { return broken_; }
    void forget_prepared() { names_.clear(); }

private:
    const std::string& prepared(const std::string& sql) {
        auto it = names_.find(sql);
        if (it == names_.end()) {
            auto name = fmt::format("stem_{}", names_.size());
            c_.prepare(name, sql);
            it = names_.emplace(sql, std::move(name)).first;
        }
        return it->second;
    }
    pqxx::connection& c_;
    std::unique_ptr<pqxx::nontransaction> tx_;
    bool open_ = false;    // a BEGIN was sent and not yet ended
    bool broken_ = false;  // a ROLLBACK failed
    std::unordered_map<std::string, std::string> names_;
};

/// One pooled connection. A batch runs in one transaction; if a job fails, the batch is
/// rolled back and every job runs again in a transaction of its own, so the failure
/// stays with its job. A lost connection fails the batch and is reopened for the next.
class session {
public:
    using connection = postgres::connection;

    explicit session(const database_options& o) : opts_(o) { open(); }

    void run_batch(std::vector<std::unique_ptr<pool_job<connection>>>& batch) {
        if (batch.size() > 1 && attempt(batch)) return;
        std::vector<std::unique_ptr<pool_job<connection>>> one(1);
        for (auto& j : batch) {
            one[0] = std::move(j);
            attempt(one);
            j = std::move(one[0]);
        }
    }

    template <class F>
    void run_now(F& f) {
        if (!usable()) open();
        try {
            conn_->begin(commit_mode::durable);
            f(*conn_);
            conn_->commit();
        } catch (...) {
            conn_->abort();
            throw;
        }
    }

private:
    /// Runs the jobs in one transaction. True when it committed, or failed for a reason
    /// that is not any one job's (then every job has been failed).
    /// The connection is (re)opened first when it is missing or was lost.
    bool attempt(std::vector<std::unique_ptr<pool_job<connection>>>& jobs) {
        try {
            if (!usable()) open();
            // Nothing here needs its commit on disk before it is reported: skip the WAL
            // flush (the server's own setting applies to every other transaction). A lone
            // durable job whose statements need not be undone together runs in autocommit.
            bool lazy = std::all_of(jobs.begin(), jobs.end(), [](auto& j) { return j->commit == commit_mode::lazy; });
            conn_->begin(lazy ? commit_mode::lazy : commit_mode::durable, jobs.size() == 1 && !lazy && !jobs[0]->savepoint);
            // Jobs that can merge (acks, status writes) run as one statement per kind.
            std::vector<bool> done(jobs.size());
            std::vector<pool_job<connection>*> group;
            for (std::size_t i = 0; i < jobs.size(); ++i) {
                if (done[i]) continue;
                group.assign(1, jobs[i].get());
                if (auto key = jobs[i]->merge_key())
                    for (std::size_t k = i + 1; k < jobs.size(); ++k)
                        if (!done[k] && jobs[k]->merge_key() == key) {
                            group.push_back(jobs[k].get());
                            done[k] = true;
                        }
                if (!jobs[i]->execute_group(*conn_, group)) {
                    conn_->abort();
                    return jobs.size() == 1;  // a batch: run each job alone
                }
            }
            conn_->commit();
            return true;
        } catch (const std::exception& e) {
            if (conn_) conn_->abort();
            auto ep = dynamic_cast<const error*>(&e)  // open() says what failed already
                          ? std::current_exception()
                          : std::make_exception_ptr(
                                error(errc::backend_failure, fmt::format("postgres {}: {}", opts_.display, e.what())));
            for (auto& j : jobs) j->fail(ep);
            if (c_ && (dynamic_cast<const pqxx::broken_connection*>(&e) || !c_->is_open())) {
                conn_.reset();  // reopened by the next attempt
                c_.reset();
            }
            return true;
        }
    }

    bool usable() const noexcept { return c_ && conn_ && c_->is_open() && !conn_->broken(); }

    void open() {
        conn_.reset();
        c_.reset();
        try {
            c_ = std::make_unique<pqxx::connection>(opts_.conninfo);
        } catch (const std::exception& e) {
            throw error(errc::backend_failure, fmt::format("postgres {}: cannot connect: {}", opts_.display, e.what()));
        }
        // A lost connection is reopened here, never by libpqxx in the middle of a
        // transaction that it cannot see (they are begun by hand, see `connection`).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        c_->inhibit_reactivation(true);
#pragma GCC diagnostic pop
        conn_ = std::make_unique<connection>(*c_);
    }

    database_options opts_;
    std::unique_ptr<pqxx::connection> c_;
    std::unique_ptr<connection> conn_;
};

/// A connection that LISTENs on channels and calls `on_notify(channel, payload)` from its
/// own thread; it reconnects (and re-LISTENs) after the server goes away.
class listener {
public:
    using callback = std::function<void(const std::string& channel, const std::string& payload)>;

    listener(database_options o, std::vector<std::string> channels, callback cb)
        : opts_(std::move(o)), channels_(std::move(channels)), cb_(std::move(cb)), thread_([this] { loop(); }) {}
    ~listener() {
        stop_ = true;
        thread_.join();
    }

private:
    struct receiver final : pqxx::notification_receiver {
        receiver(pqxx::connection& c, const std::string& ch, listener& l) : pqxx::notification_receiver(c, ch), owner(l) {}
        void operator()(const std::string& payload, int) override { owner.cb_(channel(), payload); }
        listener& owner;
    };

    void loop() {
        auto backoff = std::chrono::milliseconds(100);
        while (!stop_) {
            try {
                pqxx::connection c(opts_.conninfo);
                std::vector<std::unique_ptr<receiver>> rs;
                for (auto& ch : channels_) rs.push_back(std::make_unique<receiver>(c, ch, *this));
                backoff = std::chrono::milliseconds(100);
                // Whatever happened while we were away: let every waiter look again.
                for (auto& ch : channels_) cb_(ch, "");
                while (!stop_) c.await_notification(0, 200'000);
            } catch (const std::exception&) {
                for (int waited = 0; waited < backoff.count() && !stop_; waited += 20)
                    std::this_thread::sleep_for(std::chrono::milliseconds(20));
                backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
            }
        }
    }

    database_options opts_;
    std::vector<std::string> channels_;
    callback cb_;
    std::atomic<bool> stop_{false};
    std::thread thread_;  // last: started once everything else exists
};

/// A pool of `pool_size` connections, each on its own thread.
class database {
public:
    explicit database(const database_options& o) : opts_(o), pool_(sessions(o), o.max_batch) {}

    const std::string& display() const noexcept { return opts_.display; }
    const database_options& options() const noexcept { return opts_; }

    template <class F>
    auto run(F f, commit_mode m = commit_mode::durable) {
        return pool_.run(std::move(f), m);
    }
    /// As `run`, for a durable job whose statements need not be undone together (one
    /// statement): alone in its batch, it runs in autocommit, one round trip per statement.
    template <class F>
    auto run_single(F f) {
        return pool_.run_single(std::move(f));
    }
    template <auto Merge, class Item>
    auto run_merged(Item item, commit_mode m = commit_mode::durable, bool savepoint = true) {
        return pool_.template run_merged<Merge>(std::move(item), m, savepoint);
    }
    template <class F>
    void run_now(F f) {
        pool_.run_now(std::move(f));
    }

private:
    static std::vector<std::unique_ptr<session>> sessions(const database_options& o) {
        std::vector<std::unique_ptr<session>> v;
        for (std::size_t i = 0; i < std::max<std::size_t>(1, o.pool_size); ++i) v.push_back(std::make_unique<session>(o));
        return v;
    }
    database_options opts_;
    job_pool<session> pool_;
};

/// Checks a namespace for use in table and channel names; PostgreSQL folds unquoted
/// names to lower case, so the namespace is lower-cased here once.
inline std::string checked_namespace(const std::string& ns) {
    bool ok = !ns.empty() && ns.size() <= 40 && !std::isdigit(static_cast<unsigned char>(ns[0]));
    std::string out;
    for (char ch : ns) {
        ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
        out += char(std::tolower(static_cast<unsigned char>(ch)));
    }
    if (!ok)
        throw error(errc::invalid_argument,
                    fmt::format("postgres: namespace '{}' must be 1-40 letters, digits or '_', not starting with a digit", ns));
    return out;
}

/// A PostgreSQL array literal of `items` (for a `$n::text[]` parameter).
inline std::string text_array(const std::vector<std::string>& items) {
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        out += '"';
        for (char ch : items[i]) {
            if (ch == '"' || ch == '\\') out += '\\';
            out += ch;
        }
        out += '"';
    }
    out += '}';
    return out;
}

/// A PostgreSQL array literal of `items` (for a `$n::bigint[]` parameter).
inline std::string int_array(const std::vector<std::int64_t>& items) {
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        out += std::to_string(items[i]);
    }
    out += '}';
    return out;
}

/// Brings `component`'s tables up to date (one transaction, serialised across processes
/// by an advisory lock; versions recorded in `stem_migrations`).
inline void migrate(database& db, const std::string& component, const std::vector<std::string>& steps) {
    db.run_now([&](connection& c) {
        c.exec_raw("SELECT pg_advisory_xact_lock(7366291)");  // one migrator at a time
        c.exec_raw("CREATE TABLE IF NOT EXISTS stem_migrations ("
                   "component TEXT PRIMARY KEY, version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())");
        auto r = c.exec_raw("SELECT version FROM stem_migrations WHERE component = " + c.quote(component));
        int version = r.empty() ? 0 : r[0][0].as<int>();
        if (version > int(steps.size()))
            throw error(errc::backend_failure,
                        fmt::format("postgres {}: schema of '{}' is at version {}, newer than this build knows ({})",
                                    db.display(), component, version, steps.size()));
        for (std::size_t i = std::size_t(version); i < steps.size(); ++i) c.exec_raw(steps[i]);
        c.exec_raw(fmt::format("INSERT INTO stem_migrations(component, version) VALUES({}, {}) "
                               "ON CONFLICT(component) DO UPDATE SET version = excluded.version, applied_at = now()",
                               c.quote(component), steps.size()));
    });
}

}  // namespace stem::detail::postgres
