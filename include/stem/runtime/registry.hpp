// stem/runtime: producer, worker, task context, retries, lifecycle.
// registry.hpp — the handlers a worker can run: typed ones fixed at compile time, and
// untyped JSON handlers added at run time (plugins).
#pragma once

#include <stem/core/codec.hpp>
#include <stem/core/task_definition.hpp>
#include <stem/runtime/task_context.hpp>

#include <algorithm>
#include <array>
#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace stem {

/// A typed handler: a task_type whose objects are called as
/// `co_await h(ctx, args)` returning `awaitable<result_type>`.
template <class H>
concept task_handler = task_type<H> && requires(H& h, task_context& ctx, typename H::args_type a) {
    { h(ctx, std::move(a)) } -> std::same_as<awaitable<typename H::result_type>>;
};

/// A registered handler as the worker runs it: JSON text in, JSON text out.
struct task_entry {
    std::string name;
    task_options options;
    std::function<awaitable<std::string>(task_context&, std::string_view)> invoke;
    std::string queue_storage, rate_storage;  // owned text behind options' string_views
};

/// Handlers by name. Names are unique: a second registration under a name is refused.
class task_registry {
public:
    task_registry() = default;
    task_registry(task_registry&&) = default;
    task_registry& operator=(task_registry&&) = default;

    /// Registers an untyped handler `fn(task_context&, boost::json::value args) -> awaitable<boost::json::value>`.
    template <class F>
        requires std::is_invocable_r_v<awaitable<boost::json::value>, F&, task_context&, boost::json::value>
    task_registry& add(std::string name, F fn, task_options options = {}) {
        auto shared = std::make_shared<F>(std::move(fn));
        add_entry(std::move(name), options, [shared](task_context& ctx, std::string_view args) -> awaitable<std::string> {
            return invoke_untyped(shared, ctx, args);
        });
        return *this;
    }

    /// The handler registered under `name`, or nullptr.
    const task_entry* find(std::string_view name) const noexcept {
        auto it = entries_.find(name);
        return it == entries_.end() ? nullptr : it->second.get();
    }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (auto& [n, e] : entries_) out.push_back(n);
        std::sort(out.begin(), out.end());
        return out;
    }
    bool uses_pool() const noexcept {
        for (auto& [n, e] : entries_)
            if (e->options.execution == execution_mode::pool) return true;
        return false;
    }

protected:
    void add_entry(std::string name, const task_options& options,
                   std::function<awaitable<std::string>(task_context&, std::string_view)> invoke) {
        if (name.empty()) throw error(errc::invalid_argument, "a task name must not be empty");
        if (entries_.contains(name))
            throw error(errc::duplicate_task, fmt::format("a handler is already registered under the name '{}'", name));
        if (!options.rate_limit.empty()) (void)parse_rate(options.rate_limit);  // reject bad text at start-up
        if (options.priority < 0 || options.priority > max_priority)
            throw error(errc::invalid_argument, fmt::format("task '{}': priority {} is outside 0..9", name, options.priority));
        auto e = std::make_unique<task_entry>();
        e->name = name;
        e->queue_storage = std::string(options.queue);
        e->rate_storage = std::string(options.rate_limit);
        e->options = options;
        e->options.queue = e->queue_storage;
        e->options.rate_limit = e->rate_storage;
        e->invoke = std::move(invoke);
        entries_.emplace(std::move(name), std::move(e));
    }

private:
    template <class F>
    static awaitable<std::string> invoke_untyped(std::shared_ptr<F> fn, task_context& ctx, std::string_view args) {
        auto v = decode_json<boost::json::value>(args, "args");
        auto r = co_await (*fn)(ctx, std::move(v));
        co_return boost::json::serialize(r);
    }
    struct hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, std::unique_ptr<task_entry>, hash, std::equal_to<>> entries_;
};

namespace detail {
template <class... Hs>
consteval bool distinct_names() {
    std::array<std::string_view, sizeof...(Hs)> names{std::string_view(Hs::name)...};
    for (std::size_t i = 0; i < names.size(); ++i)
        for (std::size_t j = i + 1; j < names.size(); ++j)
            if (names[i] == names[j]) return false;
    return true;
}
}  // namespace detail

/// The typed handlers of an app: `stem::tasks{send_email{smtp}, resize_image{}}`.
/// Names must differ (checked at compile time); untyped handlers may be added with add().
template <task_handler... Hs>
class tasks : public task_registry {
    static_assert(detail::distinct_names<Hs...>(), "stem::tasks: two handlers share a task name");

public:
    explicit tasks(Hs... hs) : handlers_(std::make_unique<std::tuple<Hs...>>(std::move(hs)...)) {
        std::apply([this](auto&... h) { (register_typed(h), ...); }, *handlers_);
    }

    /// The handler object of type H.
    template <class H>
    H& get() noexcept { return std::get<H>(*handlers_); }

private:
    template <class H>
    void register_typed(H& h) {
        add_entry(std::string(H::name), H::options,
                  [p = &h](task_context& ctx, std::string_view args) { return invoke_typed<H>(p, ctx, args); });
    }
    template <class H>
    static awaitable<std::string> invoke_typed(H* h, task_context& ctx, std::string_view args) {
        auto a = decode_json<typename H::args_type>(args, "args");
        if constexpr (std::is_void_v<typename H::result_type>) {
            co_await (*h)(ctx, std::move(a));
            co_return std::string("null");
        } else {
            auto r = co_await (*h)(ctx, std::move(a));
            co_return encode_json(r);
        }
    }
    std::unique_ptr<std::tuple<Hs...>> handlers_;
};

template <class... Hs>
tasks(Hs...) -> tasks<Hs...>;

}  // namespace stem
