// stem/detail: internals, never included by users directly.
// job_pool.hpp — blocking database work off the event loop: threads that each own one
// session (a connection), take every queued job at once and run them in one transaction.
#pragma once

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace stem::detail {

/// How a job's transaction must commit. `lazy`: the commit may be reported before it is on
/// disk, as losing it in a crash of the database server is harmless (the work is redone or
/// superseded: a claim, an ack, a `running` status). A session may then skip the flush.
enum class commit_mode { durable, lazy };

/// One unit of work for a session's connection `Conn`.
template <class Conn>
struct pool_job {
    virtual ~pool_job() = default;
    /// false: the job's statements need not be undone together (a session may then run a
    /// lone durable job without a transaction of its own)
    bool savepoint = true;
    commit_mode commit = commit_mode::durable;
    /// Runs the job; false when it threw (its failure is kept for the caller).
    virtual bool execute(Conn& c) noexcept = 0;
    /// Marks the job failed (e.g. its transaction did not commit).
    virtual void fail(std::exception_ptr e) noexcept = 0;
    /// Hands the outcome to the caller's executor; `self` is this job.
    virtual void finish(std::unique_ptr<pool_job> self) = 0;
    /// Jobs of one transaction with the same non-null key may run as one group.
    virtual const void* merge_key() const noexcept { return nullptr; }
    /// Runs `group` (this job first, all with this job's merge_key) together; false when it threw.
    virtual bool execute_group(Conn& c, const std::vector<pool_job*>& group) noexcept {
        (void)group;
        return execute(c);
    }
};

/// What a session provides:
///
///     using connection = ...;                      // what jobs see
///     void run_batch(std::vector<std::unique_ptr<pool_job<connection>>>& jobs);  // one transaction
///     template <class F> void run_now(F& f);       // f(connection&) in its own transaction
///
/// `run_batch` calls `execute` on each job and `fail` on every job whose changes did not
/// commit. A session may isolate a failing job with a savepoint (when `savepoint` is set)
/// or by rolling the batch back and running each job again alone: `execute` starts afresh.
template <class Session>
class job_pool {
public:
    using connection = typename Session::connection;
    using job = pool_job<connection>;

    /// One thread per session. `max_batch` bounds the jobs of one transaction.
    job_pool(std::vector<std::unique_ptr<Session>> sessions, std::size_t max_batch)
        : max_batch_(max_batch), sessions_(std::move(sessions)) {
        for (std::size_t i = 0; i < sessions_.size(); ++i) locks_.push_back(std::make_unique<std::mutex>());
        for (std::size_t i = 0; i < sessions_.size(); ++i) threads_.emplace_back([this, i] { loop(i); });
    }

    ~job_pool() {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& t : threads_) {
            if (t.get_id() == std::this_thread::get_id()) t.detach();
            else if (t.joinable()) t.join();
        }
    }

    job_pool(const job_pool&) = delete;
    job_pool& operator=(const job_pool&) = delete;

    /// Runs `f(connection&)` on a pool thread inside a transaction (in a savepoint of its
    /// own) and returns its result once the transaction has committed. An exception from
    /// `f`, or a failed commit, is rethrown to the caller.
    template <class F>
    auto run(F f, commit_mode m = commit_mode::durable) {
        return submit_job<true>(std::move(f), m);
    }

    /// As `run`, for a job whose statements need not be undone together (typically one
    /// statement, which the database undoes by itself when it fails): no savepoint.
    template <class F>
    auto run_single(F f) {
        return submit_job<false>(std::move(f), commit_mode::durable);
    }

    /// Runs `item` through `Merge(connection&, const std::vector<const Item*>&) -> std::vector<R>`,
    /// together with every other such item of the same transaction (a session that merges
    /// runs one statement for all of them; the others run each item alone). Returns this
    /// item's R. `savepoint`: false when one item needs none (see run_single); a session
    /// still isolates a group of several.
    template <auto Merge, class Item>
    auto run_merged(Item item, commit_mode m = commit_mode::durable, bool savepoint = true) {
        using R = typename std::invoke_result_t<decltype(Merge), connection&, const std::vector<const Item*>&>::value_type;
        return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
            [this, m, savepoint](auto handler, Item it) {
                auto j = std::make_unique<merged_job<Merge, Item, decltype(handler), R>>(std::move(it), std::move(handler));
                j->commit = m;
                j->savepoint = savepoint;
                enqueue(std::move(j));
            },
            boost::asio::use_awaitable, std::move(item));
    }

    /// Runs `f(connection&)` now on the calling thread with the first session, in its own
    /// transaction (set-up such as migrations).
    template <class F>
    void run_now(F f) {
        std::lock_guard lk(*locks_[0]);
        sessions_[0]->run_now(f);
    }

private:
    /// Completion of a job: the caller's handler, run on its executor with the job's outcome.
    template <class Handler, class R>
    struct completion_state {
        using value_type = std::conditional_t<std::is_void_v<R>, bool, R>;
        explicit completion_state(Handler h)
            : handler(std::move(h)),
              work(boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                       boost::asio::execution::outstanding_work.tracked)) {}
        Handler handler;
        std::decay_t<decltype(boost::asio::prefer(std::declval<boost::asio::associated_executor_t<Handler>>(),
                                                  boost::asio::execution::outstanding_work.tracked))>
            work;
        std::optional<value_type> value;
        std::exception_ptr failure;

        template <class Job>
        static void post(std::unique_ptr<job> self, Job* j) {
            // An untracked copy: this thread must not hold the caller's io_context once the
            // handler may have run (the tracked `work` goes with the job, on the caller's side).
            auto ex = boost::asio::prefer(j->work, boost::asio::execution::outstanding_work.untracked);
            boost::asio::post(ex, [self = std::move(self), j]() mutable {
                auto h = std::move(j->handler);
                auto ep = j->failure;
                if constexpr (std::is_void_v<R>) {
                    self.reset();
                    std::move(h)(ep);
                } else {
                    R v = ep || !j->value ? R{} : std::move(*j->value);
                    self.reset();
                    std::move(h)(ep, std::move(v));
                }
            });
        }
    };

    template <auto Merge, class Item, class Handler, class R>
    struct merged_job final : job, completion_state<Handler, R> {
        merged_job(Item it, Handler h) : completion_state<Handler, R>(std::move(h)), item(std::move(it)) {}
        static constexpr char tag = 0;  // one address per kind of merged job
        const void* merge_key() const noexcept override { return &tag; }
        bool execute(connection& c) noexcept override {
            std::vector<job*> alone{this};
            return execute_group(c, alone);
        }
        bool execute_group(connection& c, const std::vector<job*>& group) noexcept override {
            std::vector<const Item*> items;
            for (auto* g : group) {
                auto* m = static_cast<merged_job*>(g);
                m->failure = nullptr;
                m->value.reset();
                items.push_back(&m->item);
            }
            try {
                auto results = Merge(c, items);
                for (std::size_t i = 0; i < group.size(); ++i) static_cast<merged_job*>(group[i])->value.emplace(results.at(i));
                return true;
            } catch (...) {
                for (auto* g : group) static_cast<merged_job*>(g)->failure = std::current_exception();
                return false;
            }
        }
        void fail(std::exception_ptr e) noexcept override {
            if (!this->failure) this->failure = e;
        }
        void finish(std::unique_ptr<job> self) override { this->post(std::move(self), this); }
        Item item;
    };

    template <class F, class Handler, class R>
    struct job_impl final : job, completion_state<Handler, R> {
        job_impl(F fn, Handler h) : completion_state<Handler, R>(std::move(h)), f(std::move(fn)) {}
        bool execute(connection& c) noexcept override {
            this->failure = nullptr;  // a session may run a job again after rolling its batch back
            this->value.reset();
            try {
                if constexpr (std::is_void_v<R>) f(c);
                else this->value.emplace(f(c));
                return true;
            } catch (...) {
                this->failure = std::current_exception();
                return false;
            }
        }
        void fail(std::exception_ptr e) noexcept override {
            if (!this->failure) this->failure = e;
        }
        void finish(std::unique_ptr<job> self) override { this->post(std::move(self), this); }
        F f;
    };

    template <class R>
    struct completion {
        using type = void(std::exception_ptr, R);
    };
    template <class R>
        requires std::is_void_v<R>
    struct completion<R> {
        using type = void(std::exception_ptr);
    };

    template <bool Savepoint, class F>
    auto submit_job(F f, commit_mode m) {
        using R = std::invoke_result_t<F&, connection&>;
        using signature = typename completion<R>::type;
        return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, signature>(
            [this, m](auto handler, F fn) {
                auto j = std::make_unique<job_impl<F, decltype(handler), R>>(std::move(fn), std::move(handler));
                j->savepoint = Savepoint;
                j->commit = m;
                enqueue(std::move(j));
            },
            boost::asio::use_awaitable, std::move(f));
    }

    void enqueue(std::unique_ptr<job> j) {
        {
            std::lock_guard lk(mu_);
            queue_.push_back(std::move(j));
        }
        cv_.notify_one();
    }

    void loop(std::size_t index) {
        std::vector<std::unique_ptr<job>> batch;
        for (;;) {
            {
                std::unique_lock lk(mu_);
                cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
                if (queue_.empty()) return;  // stopping, nothing left
                std::size_t n = std::min(queue_.size(), max_batch_);
                for (std::size_t i = 0; i < n; ++i) batch.push_back(std::move(queue_[i]));
                queue_.erase(queue_.begin(), queue_.begin() + std::ptrdiff_t(n));
                if (!queue_.empty()) cv_.notify_one();  // another session may take the rest
            }
            {
                std::lock_guard lk(*locks_[index]);
                sessions_[index]->run_batch(batch);
            }
            for (auto& j : batch) {
                auto* raw = j.get();
                raw->finish(std::move(j));
            }
            batch.clear();
        }
    }

    std::size_t max_batch_;
    std::vector<std::unique_ptr<Session>> sessions_;
    std::vector<std::unique_ptr<std::mutex>> locks_;  // a session is used by its thread or run_now
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<job>> queue_;
    bool stop_ = false;
    std::vector<std::thread> threads_;  // last: started once everything else exists
};

}  // namespace stem::detail
