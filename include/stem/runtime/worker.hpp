// stem/runtime: producer, worker, task context, retries, lifecycle.
// worker.hpp — consumes deliveries and runs handlers: concurrency, prefetch, retries,
// time limits, dead letters, heartbeats, warm/soft/hard shutdown.
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/contracts/retry_strategy.hpp>
#include <stem/detail/chunked_deque.hpp>
#include <stem/observe/signals.hpp>
#include <stem/runtime/continuations.hpp>
#include <stem/runtime/producer.hpp>
#include <stem/runtime/registry.hpp>
#include <stem/runtime/retry.hpp>
#include <stem/runtime/task_context.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include <unistd.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/core/demangle.hpp>
#include <fmt/format.h>

namespace stem {

/// How a worker stops. warm: take no new work, finish what runs. soft: ask running
/// tasks to stop at their next checkpoint (they are requeued), and go hard after
/// `soft_shutdown_timeout`. hard: requeue running deliveries now and cancel their handlers.
enum class shutdown_mode { warm, soft, hard };

constexpr std::string_view to_string(shutdown_mode m) noexcept {
    return m == shutdown_mode::warm ? "warm" : m == shutdown_mode::soft ? "soft" : "hard";
}

/// Worker settings (environment names in brackets are read by worker_options::from_env).
struct worker_options {
    std::string id{};                                   ///< empty: "<host>-<pid>-<random>"
    std::string namespace_ = "stem";                    ///< [STEM_WORKER_NAMESPACE]
    std::vector<std::string> queues{"default"};         ///< [STEM_WORKER_QUEUES]
    std::vector<std::string> broadcasts{};              ///< [STEM_WORKER_BROADCASTS]
    std::size_t concurrency = 0;                        ///< tasks at once; 0: max(4, cores)
    std::size_t prefetch_multiplier = 4;                ///< deliveries held = concurrency * this [STEM_PREFETCH_MULTIPLIER]
    std::size_t pool_threads = 0;                       ///< threads for pool tasks; 0: cores
    std::chrono::milliseconds poll_wait{1000};          ///< longest single wait on the broker
    std::chrono::milliseconds default_visibility_timeout{30'000};
    std::chrono::milliseconds heartbeat_interval{10'000};
    std::optional<std::chrono::milliseconds> result_ttl{};  ///< nullopt: the backend's default
    bool track_started = true;                          ///< record `running` for tasks that run (see below)
    /// With track_started: `running` is recorded for a task still running this long after
    /// its handler began (checked once per this period), so a short task costs one status
    /// write, not two. 0: recorded as the handler starts.
    std::chrono::milliseconds track_started_after{10};
    bool install_signal_handlers = true;                ///< SIGTERM→warm, SIGINT→soft, SIGQUIT→hard
    std::chrono::milliseconds soft_shutdown_timeout{30'000};
    any_retry_strategy retry_strategy = exponential_jitter_retry{};

    /// `base` with the environment applied: STEM_WORKER_QUEUES and STEM_WORKER_BROADCASTS
    /// (comma separated), STEM_DEFAULT_QUEUE (the queue when STEM_WORKER_QUEUES is unset),
    /// STEM_PREFETCH_MULTIPLIER, STEM_WORKER_CONCURRENCY, STEM_WORKER_NAMESPACE.
    /// A malformed value throws stem::error(invalid_argument) naming the variable.
    static worker_options from_env(worker_options base) {
        auto get = [](const char* name) -> std::optional<std::string> {
            const char* v = std::getenv(name);
            if (!v || !*v) return std::nullopt;
            return std::string(v);
        };
        auto list = [](const std::string& text) {
            std::vector<std::string> out;
            std::size_t pos = 0;
            while (pos <= text.size()) {
                auto comma = text.find(',', pos);
                auto item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
                item.erase(0, item.find_first_not_of(" \t"));
                item.erase(item.find_last_not_of(" \t") + 1);
                if (!item.empty()) out.push_back(item);
                if (comma == std::string::npos) break;
                pos = comma + 1;
            }
            return out;
        };
        auto count = [](const char* name, const std::string& text) -> std::size_t {
            std::size_t n = 0;
            for (char c : text) {
                if (c < '0' || c > '9' || n > 1'000'000)
                    throw error(errc::invalid_argument, fmt::format("{}: expected a positive whole number, got '{}'", name, text));
                n = n * 10 + std::size_t(c - '0');
            }
            if (n == 0) throw error(errc::invalid_argument, fmt::format("{}: expected a positive whole number, got '{}'", name, text));
            return n;
        };
        if (auto q = get("STEM_WORKER_QUEUES")) {
            base.queues = list(*q);
            if (base.queues.empty()) throw error(errc::invalid_argument, "STEM_WORKER_QUEUES: no queue names in the value");
        } else if (auto d = get("STEM_DEFAULT_QUEUE")) {
            base.queues = {*d};
        }
        if (auto b = get("STEM_WORKER_BROADCASTS")) base.broadcasts = list(*b);
        if (auto p = get("STEM_PREFETCH_MULTIPLIER")) base.prefetch_multiplier = count("STEM_PREFETCH_MULTIPLIER", *p);
        if (auto c = get("STEM_WORKER_CONCURRENCY")) base.concurrency = count("STEM_WORKER_CONCURRENCY", *c);
        if (auto n = get("STEM_WORKER_NAMESPACE")) base.namespace_ = *n;
        return base;
    }
};

/// Counters a worker keeps.
struct worker_stats {
    std::uint64_t processed = 0, succeeded = 0, failed = 0, retried = 0, expired = 0, requeued = 0;
    std::size_t active = 0, buffered = 0;
};

/// Runs the handlers of `Registry` on deliveries from `Broker`, recording outcomes in `Backend`.
/// Its coroutines must not run concurrently with each other: run it on an io_context run
/// by one thread, or on a strand (stem::app does the latter).
template <broker Broker, result_backend Backend>
class worker : private detail::task_services {
public:
    worker(Broker& b, Backend& r, const task_registry& reg, signals& sig, const payload_encoder_registry& enc,
           worker_options o = {})
        : broker_(b), backend_(r), registry_(reg), signals_(sig), encoders_(enc), opts_(std::move(o)),
          producer_(b, r, sig, enc) {
        if (opts_.concurrency == 0) opts_.concurrency = std::max<std::size_t>(4, std::thread::hardware_concurrency());
        if (opts_.prefetch_multiplier == 0) opts_.prefetch_multiplier = 1;
        if (opts_.queues.empty() && opts_.broadcasts.empty())
            throw error(errc::invalid_argument, "a worker needs at least one queue or broadcast channel");
        if (!opts_.retry_strategy) opts_.retry_strategy = exponential_jitter_retry{};
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        info_.host = host;
        info_.pid = static_cast<long>(::getpid());
        info_.id = opts_.id.empty() ? fmt::format("{}-{}-{}", info_.host, info_.pid, make_task_id().substr(24, 6)) : opts_.id;
        info_.namespace_ = opts_.namespace_;
        info_.queues = opts_.queues;
        info_.broadcasts = opts_.broadcasts;
        info_.concurrency = opts_.concurrency;
        for (auto& q : opts_.queues)  // each queue once: a repeated name would take a claim's places twice
            if (std::find(sub_.queues.begin(), sub_.queues.end(), q) == sub_.queues.end()) sub_.queues.push_back(q);
        sub_.broadcasts = opts_.broadcasts;
        sub_.consumer = info_.id;
    }
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;
    ~worker() override { if (pool_) pool_->join(); }

    const worker_info& info() const noexcept { return info_; }
    const worker_options& options() const noexcept { return opts_; }
    worker_stats stats() const noexcept {
        auto s = stats_;
        s.active = active_.size();
        s.buffered = buffer_.size();
        return s;
    }
    bool running() const noexcept { return running_; }

    /// Consumes and runs tasks until a shutdown completes. Call once, on the worker's executor.
    awaitable<void> run() {
        if (running_) throw error(errc::invalid_argument, "worker::run is already running");
        running_ = true;
        stopping_ = false;
        exec_ = co_await boost::asio::this_coro::executor;
        caps_ = backend_.capabilities();
        room_ = std::make_shared<detail::waiter>();
        idle_ = std::make_shared<detail::waiter>();
        running_tick_ = std::make_shared<detail::waiter>();
        running_due_ = 0;
        slots_ = std::vector<boost::asio::cancellation_signal>(opts_.concurrency);
        free_slots_.clear();
        for (std::size_t i = opts_.concurrency; i-- > 0;) free_slots_.push_back(i);
        started_at_ = clock::now();
        signals_.worker_init.emit({info_});
        if (registry_.uses_pool()) start_pool();
        if (opts_.install_signal_handlers) spawn_child(watch_os_signals());
        spawn_child(heartbeat_loop());
        if (opts_.track_started && opts_.track_started_after.count() > 0) spawn_child(record_running_loop());
        signals_.worker_ready.emit({info_});
        if (pending_shutdown_) begin_shutdown(*std::exchange(pending_shutdown_, std::nullopt));
        try {
            co_await fetch_loop();
        } catch (...) {
            finish_ = std::current_exception();
        }
        begin_shutdown(mode_);
        // Deliveries fetched but not started go back to the broker.
        while (!buffer_.empty()) {
            auto next = std::move(buffer_.front());
            buffer_.pop_front();
            co_await requeue(*next.d);
        }
        while (!active_.empty() || children_ > 0 || running_slots_ > 0)
            co_await idle_->wait_until(std::chrono::steady_clock::time_point::max());
        if (pool_) {
            for (std::size_t i = 0; i < pool_size_; ++i) signals_.worker_child_shutdown.emit({info_, {}, i});
            pool_->join();
            pool_.reset();
        }
        if (soft_timer_) soft_timer_->cancel();
        signals_.worker_shutdown.emit({info_, to_string(mode_)});
        running_ = false;
        if (auto f = std::exchange(finish_, nullptr)) std::rethrow_exception(f);
    }

    /// Requests a shutdown; safe from any thread. A stronger mode overrides a weaker one.
    /// Before run() starts, the request is kept and applied as soon as it does.
    void shutdown(shutdown_mode m) {
        if (!exec_) {
            pending_shutdown_ = m;
            return;
        }
        boost::asio::post(exec_, [this, m] { begin_shutdown(m); });
    }

private:
    struct active_task {
        delivery* d;
        detail::run_flags* flags;
        boost::asio::cancellation_signal* cancel;  // the slot's, for inline handlers
        bool abandoned = false;
        bool acked = false;  // acks_late=false: the broker no longer holds it
        std::size_t index = 0;  // its place in active_
        time_point started{};  // when its handler began
        std::chrono::steady_clock::time_point began{};  // the same, to measure how long it runs
    };

    // ------------------------------------------------------------ loops
    awaitable<void> fetch_loop() {
        const std::size_t limit = opts_.concurrency * opts_.prefetch_multiplier;
        auto backoff = std::chrono::milliseconds{100};
        while (!stopping_) {
            std::size_t held = buffer_.size() + active_.size();
            if (held >= limit || (buffer_.size() >= opts_.concurrency && active_.size() >= opts_.concurrency)) {
                fetch_waiting_ = true;
                co_await room_->wait_until(std::chrono::steady_clock::time_point::max());
                fetch_waiting_ = false;
                continue;
            }
            std::vector<delivery> batch;
            std::string consume_error;
            try {
                fetch_cancel_ = std::make_unique<boost::asio::cancellation_signal>();
                batch = co_await boost::asio::co_spawn(
                    exec_, broker_.consume(sub_, limit - held, opts_.poll_wait),
                    boost::asio::bind_cancellation_slot(fetch_cancel_->slot(), boost::asio::use_awaitable));
                backoff = std::chrono::milliseconds{100};
            } catch (const std::exception& e) {
                consume_error = e.what();
            }
            // Whatever arrived goes to the buffer first: on shutdown, run() gives it back.
            if (!batch.empty()) {
                auto kept = std::make_shared<std::vector<delivery>>(std::move(batch));
                for (auto& d : *kept) buffer_.push_back({kept, &d});
            }
            if (stopping_) break;
            if (!consume_error.empty()) {
                // The broker is unreachable or failed: keep the loop alive with a capped backoff.
                log_error(fmt::format("consume failed: {}; retrying in {}ms", consume_error, backoff.count()));
                co_await pause(backoff);
                backoff = std::min(backoff * 2, std::chrono::milliseconds{5000});
                continue;
            }
            start_slots();
        }
    }

    void start_slots() {
        while (!buffer_.empty() && !free_slots_.empty() && !stopping_) {
            auto i = free_slots_.back();
            free_slots_.pop_back();
            ++running_slots_;
            boost::asio::co_spawn(exec_, slot_runner(&slots_[i]),
                                  boost::asio::bind_cancellation_slot(slots_[i].slot(), [this, i](std::exception_ptr) {
                                      free_slots_.push_back(i);
                                      --running_slots_;
                                      if (fetch_waiting_) room_->notify();
                                      if (stopping_) idle_->notify();
                                  }));
        }
    }

    awaitable<void> slot_runner(boost::asio::cancellation_signal* cancel) {
        try {
            while (!buffer_.empty() && !stopping_) {
                auto next = std::move(buffer_.front());
                buffer_.pop_front();
                co_await process(*next.d, cancel);
                // Its batch may outlive it (other deliveries still run): free its payload now.
                next.d->env.args = std::string{};
                if (next.d->env.meta.capacity() != 0) next.d->env.meta = boost::json::object{};
                if (fetch_waiting_ && buffer_.size() <= opts_.concurrency) room_->notify();
            }
        } catch (const std::exception& e) {
            if (!stopping_) log_error(fmt::format("slot stopped: {}", e.what()));
        }
    }

    awaitable<void> heartbeat_loop() {
        boost::asio::steady_timer t(exec_);
        while (!stopping_) {
            try {
                worker_heartbeat hb;
                hb.worker_id = info_.id;
                hb.namespace_ = info_.namespace_;
                hb.host = info_.host;
                hb.pid = info_.pid;
                hb.queues = info_.queues;
                hb.inflight = active_.size();
                hb.processed = stats_.processed;
                hb.concurrency = opts_.concurrency;
                hb.started_at = started_at_;
                hb.sent_at = clock::now();
                co_await backend_.set_heartbeat(std::move(hb), opts_.heartbeat_interval * 3);
                signals_.worker_heartbeat.emit({info_, {}, 0, active_.size(), stats_.processed});
            } catch (const std::exception& e) {
                if (stopping_) break;
                log_error(fmt::format("heartbeat failed: {}", e.what()));
            }
            if (stopping_) break;  // a shutdown that came during the write
            heartbeat_timer_ = &t;
            t.expires_after(opts_.heartbeat_interval);
            boost::system::error_code ec;
            co_await t.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
            heartbeat_timer_ = nullptr;
        }
    }

    awaitable<void> watch_os_signals() {
        boost::asio::signal_set set(exec_, SIGTERM, SIGINT);
#ifdef SIGQUIT
        set.add(SIGQUIT);
#endif
        os_signals_ = &set;
        while (!stopping_) {
            boost::system::error_code ec;
            int sig = co_await set.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
            if (ec) break;
            if (sig == SIGTERM) begin_shutdown(shutdown_mode::warm);
            else if (sig == SIGINT) begin_shutdown(shutdown_mode::soft);
            else begin_shutdown(shutdown_mode::hard);
        }
        os_signals_ = nullptr;
    }

    // ------------------------------------------------------------ one task
    awaitable<void> process(delivery& d, boost::asio::cancellation_signal* slot_cancel) {
        auto& env = d.env;
        ++stats_.processed;
        signals_.task_received.emit({env, info_});
        auto now = clock::now();

        // Statuses and errors are built outside this frame (in functions, or in coroutines of
        // their own for rare outcomes): held here, they would enlarge it, and it is
        // allocated per task.
        if (env.expires && *env.expires < now) {
            co_await skip_expired(d, now);
            co_return;
        }
        const task_entry* entry = registry_.find(env.name);
        if (!entry) {
            co_await reject_unknown(d);
            co_return;
        }
        // A delivery that waited in the prefetch buffer may be near the end of its lease:
        // renew it before starting, or leave it if another consumer already holds it.
        auto lease = lease_length(env);
        if (!d.broadcast && d.lease_expires - now < lease / 2 && !co_await broker_.extend_lease(d, lease)) {
            log_error(fmt::format("task {}: lease ran out while prefetched; left to the broker", env.id));
            co_return;
        }
        bool early_ack = !entry->options.acks_late;
        if (early_ack) co_await broker_.ack(d);

        detail::run_flags flags;
        active_task me{&d, &flags, slot_cancel};
        me.acked = early_ack;
        me.index = active_.size();
        active_.push_back(&me);
        struct unregister {  // the last task takes its place: no search, no shift
            worker* w;
            active_task* t;
            ~unregister() {
                w->running_recorded(*t->flags);
                auto* last = w->active_.back();
                last->index = t->index;
                w->active_[t->index] = last;
                w->active_.pop_back();
            }
        } guard{this, &me};

        auto started = now;
        me.started = started;
        // (Once stopping, record_running_loop may have ended: the record is written now.)
        if (opts_.track_started && opts_.track_started_after.count() > 0 && !stopping_) {
            me.began = std::chrono::steady_clock::now();
            flags.running_due = true;  // record_running_loop writes it if the task lasts
            if (running_due_++ == 0 && running_tick_idle_) running_tick_->notify();
        } else if (opts_.track_started) {
            if (caps_.in_process) co_await store_running(me);
            else start_running_write(running_status(me), flags);
        }
        bool on_pool = entry->options.execution == execution_mode::pool && pool_;
        task_context ctx(d, *this, flags, on_pool);
        signals_.task_prerun.emit({env, info_, &ctx});

        std::optional<std::string> result;
        std::exception_ptr failure;
        // Without a pool or time limits the handler is awaited directly (one frame fewer).
        bool plain = !on_pool && entry->options.soft_time_limit.count() == 0 && entry->options.hard_time_limit.count() == 0;
        try {
            bool json = env.args_encoder == "json";
            std::string decoded;  // arguments in another encoding, as JSON
            if (!json) decoded = encoders_.decode(env.args_encoder, env.args);
            const std::string& args = json ? env.args : decoded;
            if (plain) result = co_await entry->invoke(ctx, args);
            else result = co_await run_handler(*entry, ctx, args, flags, me, on_pool);
        } catch (...) {
            failure = std::current_exception();
        }
        running_recorded(flags);  // the handler is done: a late `running` would follow its outcome
        co_await boost::asio::this_coro::reset_cancellation_state();
        if (me.abandoned) co_return;  // hard shutdown requeued it already
        if (!result) {
            co_await handle_failure(d, ctx, failure, flags, started, early_ack);
            co_return;
        }
        auto finished = clock::now();
        bool encoded = true;
        try {
            *result = encoders_.encode(env.result_encoder, std::move(*result));
        } catch (const std::exception& e) {
            *result = e.what();
            encoded = false;
        }
        if (flags.started_write) co_await settle(flags);
        if (!encoded) {
            co_await fail_encoding(d, ctx, std::move(*result), started, early_ack);
            co_return;
        }
        // The status is read again only by continuations and listeners; without them it
        // is built outside this frame and moved into the backend.
        if (!env.meta.empty() || signals_.task_succeeded.has_listeners() || signals_.task_postrun.has_listeners()) {
            co_await succeed_observed(d, ctx, std::move(*result), started, finished, early_ack);
            co_return;
        }
        co_await store_succeeded(env, ctx, std::move(*result), started, finished);
        ++stats_.succeeded;
        if (!early_ack && !co_await broker_.ack(d)) log_error(lease_lost_before_ack(env));
    }

    awaitable<void> skip_expired(delivery& d, time_point now) {
        auto& env = d.env;
        ++stats_.expired;
        task_error err{"expired", fmt::format("task expired at {} before it started", format_time(*env.expires)), {}, false};
        auto st = make_status(env, task_state::cancelled, now);
        st.error = err;
        st.finished_at = now;
        co_await store(st);
        signals_.task_revoked.emit({env, info_, nullptr, &st, &err, {}, "expired"});
        if (!co_await continue_after(env, st, false)) co_return;
        co_await broker_.ack(d);
    }

    awaitable<void> reject_unknown(delivery& d) {
        // (Arguments that are braced temporaries are named first: GCC 12 may destroy
        // such temporaries twice when they sit in a co_await expression.)
        task_error err{"unknown_task", fmt::format("no handler is registered for task '{}' on worker {}", d.env.name, info_.id), {}, false};
        co_await fail(d, nullptr, std::move(err), "unknown-task", nullptr);
    }

    awaitable<void> fail_encoding(delivery& d, task_context& ctx, std::string message, time_point started, bool early_ack) {
        task_error err{"encode_failed", std::move(message), {}, false};
        co_await fail(d, &ctx, std::move(err), "encode-error", &started, early_ack);
    }

    /// Success when continuations or listeners read the status after it is stored.
    awaitable<void> succeed_observed(delivery& d, task_context& ctx, std::string result, time_point started,
                                     time_point finished, bool early_ack) {
        auto& env = d.env;
        auto st = succeeded_status(env, ctx, std::move(result), started, finished);
        co_await store(st);
        if (!co_await continue_after(env, st, true)) co_return;
        ++stats_.succeeded;
        signals_.task_succeeded.emit({env, info_, &ctx, &st});
        if (!early_ack && !co_await broker_.ack(d)) log_error(lease_lost_before_ack(env));
        signals_.task_postrun.emit({env, info_, &ctx, &st});
    }

    task_status succeeded_status(const envelope& env, task_context& ctx, std::string&& result, time_point started,
                                 time_point finished) const {
        auto st = make_status(env, task_state::succeeded, finished, ctx.meta());
        st.result = std::move(result);
        st.started_at = started;
        st.finished_at = finished;
        st.progress = 100;
        return st;
    }

    static std::string lease_lost_before_ack(const envelope& env) {
        return fmt::format("task {}: lease lost before ack; another worker may run it again", env.id);
    }

    // Not coroutines: the status handed to the backend is a temporary of these functions,
    // not of the caller's frame (the backend's call keeps its own copy).
    awaitable<void> store(const task_status& st) { return backend_.set(st, opts_.result_ttl); }
    awaitable<void> store(task_status&& st) { return backend_.set(std::move(st), opts_.result_ttl); }
    awaitable<void> store_running(const active_task& t) { return backend_.set(running_status(t), opts_.result_ttl); }
    awaitable<void> store_succeeded(const envelope& env, task_context& ctx, std::string&& result, time_point started,
                                    time_point finished) {
        return backend_.set(succeeded_status(env, ctx, std::move(result), started, finished), opts_.result_ttl);
    }

    /// Runs a handler on the pool or under time limits.
    awaitable<std::string> run_handler(const task_entry& entry, task_context& ctx, const std::string& args,
                                       detail::run_flags& flags, active_task& me, bool on_pool) {
        const auto& o = entry.options;
        // Limit timers run beside the handler; `done` keeps a late expiry from acting.
        struct limits {
            explicit limits(boost::asio::any_io_executor ex) : soft(ex), hard(ex) {}
            boost::asio::steady_timer soft, hard;
            bool done = false;
        };
        auto lim = std::make_shared<limits>(exec_);
        auto* flags_ptr = me.flags;  // valid while !lim->done: the timers stop before process() returns
        if (o.soft_time_limit.count() > 0) {
            lim->soft.expires_after(o.soft_time_limit);
            lim->soft.async_wait([this, lim, flags_ptr, &ctx](boost::system::error_code ec) {
                if (ec || lim->done) return;
                flags_ptr->soft_limit = true;
                signals_.task_soft_time_limit.emit({ctx.request(), info_, &ctx});
            });
        }
        boost::asio::cancellation_signal* cancel = on_pool ? nullptr : me.cancel;
        if (o.hard_time_limit.count() > 0) {
            lim->hard.expires_after(o.hard_time_limit);
            lim->hard.async_wait([lim, flags_ptr, cancel](boost::system::error_code ec) {
                if (ec || lim->done) return;
                flags_ptr->hard_limit = true;
                if (cancel) cancel->emit(boost::asio::cancellation_type::terminal);
            });
        }
        struct stop_timers {
            std::shared_ptr<limits> l;
            ~stop_timers() {
                l->done = true;
                l->soft.cancel();
                l->hard.cancel();
            }
        } stopper{lim};
        try {
            if (on_pool)
                co_return co_await boost::asio::co_spawn(pool_->get_executor(), entry.invoke(ctx, args), boost::asio::use_awaitable);
            co_return co_await entry.invoke(ctx, args);
        } catch (...) {
            if (flags.hard_limit) throw time_limit_exceeded(fmt::format("task {} passed its hard time limit of {}ms", ctx.id(), o.hard_time_limit.count()));
            throw;
        }
    }

    awaitable<void> handle_failure(delivery& d, task_context& ctx, std::exception_ptr failure, detail::run_flags& flags,
                                   time_point started, bool early_ack) {
        co_await settle(flags);
        auto& env = d.env;
        task_error err;
        bool retryable = true;
        bool requested = false;
        std::optional<std::chrono::milliseconds> countdown;
        std::optional<retry_policy> policy = env.retry;
        try {
            std::rethrow_exception(failure);
        } catch (const retry_request& r) {
            err = {"retry_requested", r.reason, {}, true};
            requested = true;
            countdown = r.countdown;
            if (r.policy) policy = r.policy;
        } catch (const task_cancelled& e) {
            err = {"cancelled", e.what(), {}, true};
        } catch (const time_limit_exceeded& e) {
            err = {"time_limit_exceeded", e.what(), {}, true};
        } catch (const task_failure& e) {
            err = {e.type(), e.what(), {}, false};
            retryable = false;
        } catch (const error& e) {
            err = {e.condition() == errc::decode_failed ? "decode_failed" : "stem::error", e.what(), {}, e.condition() != errc::decode_failed && e.condition() != errc::unknown_encoder};
            retryable = err.retryable;
        } catch (const std::exception& e) {
            err = {boost::core::demangle(typeid(e).name()), e.what(), {}, true};
        } catch (...) {
            err = {"unknown", "a non-standard exception was thrown", {}, true};
        }
        if (flags.cancel && !requested && err.type != "time_limit_exceeded") {
            // Asked to stop by a shutdown (task_cancelled, or an aborted wait): the task goes
            // back to the broker for another worker, and its status says so.
            co_await requeue(d, early_ack);
            auto st = make_status(env, task_state::queued, {}, ctx.meta());
            st.error = task_error{"cancelled", err.message, {}, true};
            co_await store(std::move(st));
            co_return;
        }
        // A broadcast reached every subscriber once; a retry would reach them all again.
        if (d.broadcast) retryable = false;
        err.retryable = retryable;
        if (retryable && env.attempt < env.max_retries) {
            retry_info info{env, err};
            auto delay = countdown ? *countdown : policy ? policy_delay(*policy, env.attempt) : opts_.retry_strategy(info);
            envelope next = env;
            next.attempt = env.attempt + 1;
            next.not_before = clock::now() + delay;
            next.meta = ctx.meta();
            bool ok = true;
            if (early_ack) co_await broker_.publish(next);
            else ok = co_await broker_.retry(d, next);
            if (!ok) {
                log_error(fmt::format("task {}: lease lost before retry; the broker will deliver it again", env.id));
                co_return;
            }
            auto st = make_status(env, task_state::retried, {}, ctx.meta());
            st.error = err;
            st.started_at = started;
            co_await store(st);
            ++stats_.retried;
            signals_.task_retry.emit({env, info_, &ctx, &st, &err, next.not_before});
            signals_.task_postrun.emit({env, info_, &ctx, &st, &err});
            co_return;
        }
        std::string_view kind = !retryable ? (err.type == "decode_failed" ? "decode-error" : "non-retryable")
                                           : "max-retries-exceeded";
        co_await fail(d, &ctx, std::move(err), kind, &started, early_ack);
    }

    /// Final failure: dead-letter with the reason, record `failed`, signal.
    awaitable<void> fail(delivery& d, task_context* ctx, task_error err, std::string_view kind, const time_point* started,
                         bool early_ack = false) {
        auto& env = d.env;
        auto reason = fmt::format("{}: {}: {}", kind, err.type, err.message);
        err.context["dead_letter_reason"] = reason;
        err.context["attempts"] = env.attempt + 1;
        auto st = make_status(env, task_state::failed, {}, ctx ? ctx->meta() : env.meta);
        st.error = err;
        if (started) st.started_at = *started;
        st.finished_at = clock::now();
        co_await store(st);
        if (!co_await continue_after(env, st, false)) co_return;
        if (!early_ack && !co_await broker_.dead_letter(d, reason))
            log_error(fmt::format("task {}: lease lost before dead-lettering; the broker will deliver it again", env.id));
        ++stats_.failed;
        signals_.task_failed.emit({env, info_, ctx, &st, &err, {}, reason});
        if (ctx) signals_.task_postrun.emit({env, info_, ctx, &st, &err});
    }

    /// Runs what `env`'s canvas metadata asks for after its final status `st` (next chain
    /// step, links, chord callback). False when that failed: the delivery is then left
    /// unacknowledged, so the broker delivers it again after its lease.
    awaitable<bool> continue_after(const envelope& env, const task_status& st, bool succeeded) {
        if (env.meta.empty()) co_return true;
        std::string failure;
        try {
            if (succeeded) co_await continuations_.succeeded(env, st);
            else co_await continuations_.failed(env, st);
        } catch (const std::exception& e) {
            failure = e.what();
        }
        if (failure.empty()) co_return true;
        log_error(fmt::format("task {}: its continuations failed ({}); the delivery is left to the broker", env.id, failure));
        co_return false;
    }

    /// Gives a delivery back: nack with requeue, or (already acked) publish it again.
    awaitable<void> requeue(const delivery& d, bool acked = false) {
        std::string failure;
        try {
            if (acked) {
                co_await broker_.publish(d.env);
                ++stats_.requeued;
            } else if (co_await broker_.nack(d, true)) {
                ++stats_.requeued;
            }
        } catch (const std::exception& e) {
            failure = e.what();
        }
        if (!failure.empty())
            log_error(fmt::format("task {}: requeue failed ({}){}", d.env.id, failure,
                                  acked ? "; it is lost unless the producer retries" : "; it returns after its lease"));
    }

    /// Records `running` without waiting for it, so that the write overlaps the handler
    /// (backends whose store is out of process; an in-process write is simply awaited).
    /// Where the backend applies one task's writes in order, the task's later writes simply
    /// follow it; elsewhere each later write first waits for it (settle), so that a late
    /// `running` never replaces a final status. A failed `running` write is logged; the task goes on.
    void start_running_write(task_status st, detail::run_flags& flags) {
        std::shared_ptr<detail::waiter> done;
        if (!caps_.ordered_writes) flags.started_write = done = std::make_shared<detail::waiter>();
        spawn_child(record_running(std::move(st), std::move(done)));
    }

    /// Writes `running` for each task whose handler began at least `track_started_after`
    /// ago, once per that period while any task waits for it; at shutdown, for every task
    /// still running.
    awaitable<void> record_running_loop() {
        using steady = std::chrono::steady_clock;
        const auto period = std::min(opts_.track_started_after, std::chrono::milliseconds(std::chrono::hours(24)));
        while (!stopping_) {
            if (running_due_ == 0) {  // until a deferred record (or the shutdown) wakes it
                running_tick_idle_ = true;
                co_await running_tick_->wait_until(steady::time_point::max());
                running_tick_idle_ = false;
                if (stopping_) break;
            }
            // One period at least, even if the tasks that woke it are done by then: a loop
            // that went idle at once would be woken again by the next task, task after task.
            co_await running_tick_->wait_until(steady::now() + period);
            if (!stopping_) record_running_since(steady::now() - period);
        }
        record_running_since(steady::time_point::max());
    }

    void record_running_since(std::chrono::steady_clock::time_point began_before) {
        for (auto* a : active_) {
            if (!a->flags->running_due || a->abandoned || a->began > began_before) continue;
            running_recorded(*a->flags);
            start_running_write(running_status(*a), *a->flags);
        }
    }

    /// The task's `running` record is written, or no longer wanted.
    void running_recorded(detail::run_flags& flags) {
        if (std::exchange(flags.running_due, false)) --running_due_;
    }

    task_status running_status(const active_task& t) const {
        auto st = make_status(t.d->env, task_state::running, t.started);
        st.started_at = t.started;
        return st;
    }

    awaitable<void> record_running(task_status st, std::shared_ptr<detail::waiter> done) {
        std::string id = st.id, failure;
        try {
            co_await store(std::move(st));
        } catch (const std::exception& e) {
            failure = e.what();
        }
        if (done) done->notify();
        if (!failure.empty()) log_error(fmt::format("task {}: recording `running` failed: {}", id, failure));
    }

    /// Waits until the task's `running` record, if still in flight, has been applied.
    static awaitable<void> settle(detail::run_flags& flags) {
        if (auto w = std::move(flags.started_write)) co_await w->wait_until(std::chrono::steady_clock::time_point::max());
    }

    /// A status of `env` in state `s` at `at` (now if unset), carrying `meta` (the envelope's
    /// unless the task's context changed it).
    task_status make_status(const envelope& env, task_state s, time_point at = {}) const {
        return make_status(env, s, at, env.meta);
    }
    task_status make_status(const envelope& env, task_state s, time_point at, const boost::json::object& meta) const {
        return task_status{.id = env.id,
                           .name = env.name,
                           .state = s,
                           .result_encoder = env.result_encoder,
                           .attempt = env.attempt,
                           .meta = meta.empty() ? boost::json::object() : boost::json::object(meta),  // (copying an empty one is not free)
                           .queue = env.queue,
                           .worker_id = info_.id,
                           .group_id = env.group_id,
                           .created_at = env.enqueued_at,
                           .updated_at = at == time_point{} ? clock::now() : at};
    }

    // ------------------------------------------------------------ shutdown
    void begin_shutdown(shutdown_mode m) {
        if (!running_) return;
        if (stopping_ && m <= mode_) return;
        bool first = !stopping_;
        stopping_ = true;
        mode_ = std::max(mode_, m);
        if (first) signals_.worker_stopping.emit({info_, to_string(m)});
        if (fetch_cancel_) fetch_cancel_->emit(boost::asio::cancellation_type::terminal);
        room_->notify();
        if (heartbeat_timer_) heartbeat_timer_->cancel();
        running_tick_->notify();
        if (os_signals_) os_signals_->cancel();
        if (m == shutdown_mode::soft) {
            for (auto* a : active_) a->flags->cancel = true;
            soft_timer_ = std::make_unique<boost::asio::steady_timer>(exec_, opts_.soft_shutdown_timeout);
            soft_timer_->async_wait([this](boost::system::error_code ec) {
                if (!ec && running_ && !active_.empty()) begin_shutdown(shutdown_mode::hard);
            });
        } else if (m == shutdown_mode::hard) {
            for (auto* a : active_) {
                if (a->abandoned) continue;
                a->abandoned = true;
                a->flags->cancel = true;
                spawn_child(requeue_copy(*a->d, a->acked));
                if (a->cancel) a->cancel->emit(boost::asio::cancellation_type::terminal);
            }
        }
        idle_->notify();
    }

    awaitable<void> requeue_copy(delivery d, bool acked) { co_await requeue(d, acked); }

    // ------------------------------------------------------------ helpers
    void spawn_child(awaitable<void> a) {
        ++children_;
        boost::asio::co_spawn(exec_, std::move(a), [this](std::exception_ptr ep) {
            if (ep) {
                try { std::rethrow_exception(ep); } catch (const std::exception& e) { log_error(e.what()); } catch (...) {}
            }
            --children_;
            idle_->notify();
        });
    }
    awaitable<void> pause(std::chrono::milliseconds d) {
        boost::asio::steady_timer t(exec_, d);
        boost::system::error_code ec;
        co_await t.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    }
    void start_pool() {
        pool_size_ = opts_.pool_threads ? opts_.pool_threads : std::max(1u, std::thread::hardware_concurrency());
        pool_ = std::make_unique<boost::asio::thread_pool>(pool_size_);
        for (std::size_t i = 0; i < pool_size_; ++i) signals_.worker_child_init.emit({info_, {}, i});
    }
    void log_error(std::string_view msg) const {
        std::fputs(fmt::format("stem worker {}: {}\n", info_.id, msg).c_str(), stderr);
    }

    // task_services
    awaitable<void> publish(envelope e) override { return producer_.publish(std::move(e)); }
    awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) override {
        return broker_.extend_lease(d, by);
    }
    awaitable<void> record(task_status st, detail::run_flags& flags) override {
        running_recorded(flags);  // this write says `running` already
        co_await settle(flags);
        co_await store(std::move(st));
    }
    std::chrono::milliseconds lease_length(const envelope& e) const override {
        return e.visibility_timeout.value_or(opts_.default_visibility_timeout);
    }
    const std::shared_ptr<detail::result_source>& results() const override { return producer_.results(); }
    const payload_encoder_registry& encoders() const override { return encoders_; }
    boost::asio::any_io_executor executor() const override { return exec_; }
    const std::string& worker_id() const override { return info_.id; }

    Broker& broker_;
    Backend& backend_;
    const task_registry& registry_;
    signals& signals_;
    const payload_encoder_registry& encoders_;
    worker_options opts_;
    producer<Broker, Backend> producer_;  // follow-up enqueues from tasks, and their handles
    detail::continuations<Broker, Backend> continuations_{producer_, backend_, encoders_, opts_.result_ttl,
                                                          [this](const std::string& m) { log_error(m); }};
    worker_info info_;
    subscription sub_;
    boost::asio::any_io_executor exec_;
    backend_capabilities caps_;
    time_point started_at_{};

    /// A fetched delivery waiting for a slot. It stays in the batch consume returned (a
    /// delivery is not cheap to move); the batch lives until its last delivery is done.
    struct buffered {
        std::shared_ptr<std::vector<delivery>> batch;
        delivery* d;
    };
    detail::chunked_deque<buffered> buffer_;
    std::vector<active_task*> active_;  // tasks running now; each lives in its process() frame
    std::vector<boost::asio::cancellation_signal> slots_;  // one per concurrent task, reused
    std::vector<std::size_t> free_slots_;
    std::size_t running_slots_ = 0;
    std::size_t children_ = 0;
    bool running_ = false;
    bool stopping_ = false;
    bool fetch_waiting_ = false;
    shutdown_mode mode_ = shutdown_mode::warm;
    std::exception_ptr finish_;
    std::optional<shutdown_mode> pending_shutdown_;
    std::unique_ptr<boost::asio::cancellation_signal> fetch_cancel_;
    boost::asio::steady_timer* heartbeat_timer_ = nullptr;
    boost::asio::signal_set* os_signals_ = nullptr;
    std::unique_ptr<boost::asio::steady_timer> soft_timer_;  // soft → hard escalation
    std::unique_ptr<boost::asio::thread_pool> pool_;
    std::size_t pool_size_ = 0;
    worker_stats stats_;
    std::shared_ptr<detail::waiter> room_;  // the fetcher waits here for room in the buffer
    std::shared_ptr<detail::waiter> idle_;  // run() waits here for tasks and children to end
    std::shared_ptr<detail::waiter> running_tick_;  // wakes record_running_loop
    std::size_t running_due_ = 0;  // tasks whose `running` record is deferred and not yet written
    bool running_tick_idle_ = false;  // record_running_loop waits for running_tick_ alone
};

}  // namespace stem
