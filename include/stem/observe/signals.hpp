// stem/observe: signals, metrics, traces and logs.
// signals.hpp — lifecycle signals for publish, task and worker events (Celery-style hooks).
#pragma once

#include <stem/core/envelope.hpp>
#include <stem/core/task_status.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace stem {

class task_context;

/// Who a worker is, as signals and heartbeats report it.
struct worker_info {
    std::string id;
    std::string host;
    long pid = 0;
    std::string namespace_ = "stem";
    std::vector<std::string> queues;
    std::vector<std::string> broadcasts;
    std::size_t concurrency = 0;
};

/// Payload of before_task_publish / after_task_publish.
struct publish_event {
    const envelope& env;
};

/// Payload of every task lifecycle signal. Pointers are null where they do not apply.
struct task_event {
    const envelope& env;
    const worker_info& worker;
    task_context* context = nullptr;          ///< from task_prerun to task_postrun
    const task_status* status = nullptr;      ///< the status just recorded
    const task_error* error = nullptr;        ///< task_retry, task_failed, task_revoked
    std::optional<time_point> next_attempt_at{};  ///< task_retry
    std::string_view reason{};                ///< task_revoked ("expired", "revoked"), task_failed (dead-letter reason)
};

/// Payload of worker lifecycle signals.
struct worker_event {
    const worker_info& worker;
    std::string_view reason{};                ///< worker_stopping: the shutdown mode
    std::size_t child = 0;                    ///< worker_child_*: pool thread index
    std::uint64_t inflight = 0;               ///< worker_heartbeat
    std::uint64_t processed = 0;              ///< worker_heartbeat
};

/// Payload of signal_dispatch_failed: a listener threw.
struct dispatch_failure {
    std::string_view signal;
    std::string message;
};

/// Lets a listener stop the listeners after it from running for this emission.
class signal_context {
public:
    void cancel() noexcept { cancelled_ = true; }
    bool cancelled() const noexcept { return cancelled_; }

private:
    bool cancelled_ = false;
};

/// Removes its listener when disconnect() is called (not on destruction).
class signal_connection {
public:
    signal_connection() = default;
    explicit signal_connection(std::function<void()> off) : off_(std::move(off)) {}
    void disconnect() {
        if (off_) std::exchange(off_, nullptr)();
    }

private:
    std::function<void()> off_;
};

/// One named signal. Listeners run synchronously, in descending priority (then
/// registration) order; one that throws is reported through the owner's
/// failure hook and the others still run. Emission costs one atomic load when
/// nobody listens or the signal is disabled.
template <class Payload>
class signal {
public:
    using listener = std::function<void(const Payload&, signal_context&)>;

    explicit signal(std::string_view name, std::function<void(std::string_view, std::exception_ptr)>* on_failure = nullptr)
        : name_(name), on_failure_(on_failure) {}

    std::string_view name() const noexcept { return name_; }

    /// Adds `f`, called as f(payload) or f(payload, signal_context&).
    template <class F>
    signal_connection connect(F f, int priority = 0) {
        listener l;
        if constexpr (std::is_invocable_v<F&, const Payload&, signal_context&>) l = std::move(f);
        else l = [g = std::move(f)](const Payload& p, signal_context&) mutable { g(p); };
        std::lock_guard lk(mu_);
        auto next = std::make_shared<std::vector<slot>>(list_ ? *list_ : std::vector<slot>{});
        auto id = ++ids_;
        next->push_back({priority, id, std::move(l)});
        std::stable_sort(next->begin(), next->end(), [](auto& a, auto& b) { return a.priority > b.priority; });
        list_ = std::move(next);
        active_.store(enabled_, std::memory_order_release);
        return signal_connection([this, id] {
            std::lock_guard lk(mu_);
            auto next = std::make_shared<std::vector<slot>>(*list_);
            std::erase_if(*next, [&](auto& s) { return s.id == id; });
            list_ = std::move(next);
            active_.store(enabled_ && !list_->empty(), std::memory_order_release);
        });
    }

    /// Runs every listener with `p`.
    void emit(const Payload& p) const {
        if (!active_.load(std::memory_order_acquire)) return;
        std::shared_ptr<const std::vector<slot>> snapshot;
        {
            std::lock_guard lk(mu_);
            snapshot = list_;
        }
        if (!snapshot) return;
        signal_context ctx;
        for (auto& s : *snapshot) {
            try {
                s.fn(p, ctx);
            } catch (...) {
                if (on_failure_ && *on_failure_) (*on_failure_)(name_, std::current_exception());
                else std::fputs(fmt::format("stem: a listener of signal '{}' threw\n", name_).c_str(), stderr);
            }
            if (ctx.cancelled()) break;
        }
    }

    void set_enabled(bool on) {
        std::lock_guard lk(mu_);
        enabled_ = on;
        active_.store(on && list_ && !list_->empty(), std::memory_order_release);
    }
    bool has_listeners() const noexcept { return active_.load(std::memory_order_acquire); }

private:
    struct slot {
        int priority;
        std::uint64_t id;
        listener fn;
    };
    std::string_view name_;
    std::function<void(std::string_view, std::exception_ptr)>* on_failure_;
    mutable std::mutex mu_;
    std::shared_ptr<const std::vector<slot>> list_;
    std::atomic<bool> active_{false};
    bool enabled_ = true;
    std::uint64_t ids_ = 0;
};

/// The signal catalogue of one app. Names in comments are those used by
/// STEM_SIGNALS_DISABLED.
class signals {
public:
    signals() {
        on_failure_ = [this](std::string_view name, std::exception_ptr ep) { report_failure(name, ep); };
    }
    signals(const signals&) = delete;
    signals& operator=(const signals&) = delete;

    // Publish
    signal<publish_event> before_task_publish{"before-task-publish", &on_failure_};
    signal<publish_event> after_task_publish{"after-task-publish", &on_failure_};
    // Task lifecycle
    signal<task_event> task_received{"task-received", &on_failure_};
    signal<task_event> task_prerun{"task-prerun", &on_failure_};
    signal<task_event> task_postrun{"task-postrun", &on_failure_};
    signal<task_event> task_retry{"task-retry", &on_failure_};
    signal<task_event> task_succeeded{"task-succeeded", &on_failure_};
    signal<task_event> task_failed{"task-failed", &on_failure_};
    signal<task_event> task_revoked{"task-revoked", &on_failure_};
    signal<task_event> task_soft_time_limit{"task-soft-time-limit", &on_failure_};
    // Worker lifecycle
    signal<worker_event> worker_init{"worker-init", &on_failure_};
    signal<worker_event> worker_ready{"worker-ready", &on_failure_};
    signal<worker_event> worker_stopping{"worker-stopping", &on_failure_};
    signal<worker_event> worker_shutdown{"worker-shutdown", &on_failure_};
    signal<worker_event> worker_heartbeat{"worker-heartbeat", &on_failure_};
    signal<worker_event> worker_child_init{"worker-child-init", &on_failure_};
    signal<worker_event> worker_child_shutdown{"worker-child-shutdown", &on_failure_};
    /// A listener threw. Its own listeners' failures are printed to stderr.
    signal<dispatch_failure> signal_dispatch_failed{"signal-dispatch-failed", nullptr};

    /// Applies STEM_SIGNALS_ENABLED=false and STEM_SIGNALS_DISABLED=name,name.
    void configure_from_env() {
        const char* enabled = std::getenv("STEM_SIGNALS_ENABLED");
        bool all = !(enabled && (std::string_view(enabled) == "false" || std::string_view(enabled) == "0"));
        std::string disabled = std::getenv("STEM_SIGNALS_DISABLED") ? std::getenv("STEM_SIGNALS_DISABLED") : "";
        for_each([&](auto& s) {
            bool off = false;
            std::string_view rest = disabled;
            while (!rest.empty()) {
                auto comma = rest.find(',');
                auto item = rest.substr(0, comma);
                while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
                while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
                if (item == s.name()) off = true;
                rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
            }
            s.set_enabled(all && !off);
        });
    }

    /// Calls f(signal&) for every signal but signal_dispatch_failed.
    template <class F>
    void for_each(F&& f) {
        f(before_task_publish); f(after_task_publish);
        f(task_received); f(task_prerun); f(task_postrun); f(task_retry); f(task_succeeded); f(task_failed);
        f(task_revoked); f(task_soft_time_limit);
        f(worker_init); f(worker_ready); f(worker_stopping); f(worker_shutdown); f(worker_heartbeat);
        f(worker_child_init); f(worker_child_shutdown);
    }

private:
    void report_failure(std::string_view name, std::exception_ptr ep) {
        std::string msg;
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            msg = e.what();
        } catch (...) {
            msg = "non-standard exception";
        }
        if (signal_dispatch_failed.has_listeners()) {
            signal_dispatch_failed.emit({name, msg});
        } else {
            std::fputs(fmt::format("stem: a listener of signal '{}' threw: {}\n", name, msg).c_str(), stderr);
        }
    }
    std::function<void(std::string_view, std::exception_ptr)> on_failure_;
};

}  // namespace stem
