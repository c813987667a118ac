// stem/core: vocabulary shared by every room, with no I/O.
// signature.hpp — a task call to be made later (by a chain, group, chord or link).
#pragma once

#include <stem/core/task_options.hpp>

#include <optional>
#include <string>
#include <utility>

#include <boost/describe/class.hpp>
#include <boost/json/value.hpp>

namespace stem {

/// A task call described now and enqueued later: a step of a chain, a branch of a group,
/// a chord's callback, or a `link` / `link_error` continuation.
///
/// `signature(name, args)` carries its own arguments. `signature(name)` takes the result of
/// what runs before it instead: the previous step of a chain, the list of a chord's results
/// (in signature order), the linked task's result, or for `link_error` a `failed_task`.
/// Typed signatures come from `T::sig(...)` / `stem::sig<T>(...)` (task_definition.hpp).
class signature {
public:
    /// A call of `name` with `args`; `o` overrides `defaults` (the task's options).
    signature(std::string name, boost::json::value args, enqueue_options o = {}, task_options defaults = {})
        : name_(std::move(name)), args_(std::move(args)), opts_(std::move(o)), defaults_(defaults) {}
    /// A call of `name` whose arguments are the result of what runs before it.
    explicit signature(std::string name, enqueue_options o = {}, task_options defaults = {})
        : name_(std::move(name)), opts_(std::move(o)), defaults_(defaults) {}

    const std::string& name() const noexcept { return name_; }
    /// The bound arguments; nullopt when the call takes the previous result.
    const std::optional<boost::json::value>& args() const noexcept { return args_; }
    bool takes_previous() const noexcept { return !args_; }
    const enqueue_options& options() const noexcept { return opts_; }
    enqueue_options& options() noexcept { return opts_; }
    const task_options& defaults() const noexcept { return defaults_; }

    /// Adds a continuation enqueued when this call succeeds.
    signature& link(signature s) {
        opts_.link.push_back(std::move(s));
        return *this;
    }
    /// Adds a continuation enqueued when this call finally fails (no retry left).
    signature& link_error(signature s) {
        opts_.link_error.push_back(std::move(s));
        return *this;
    }

private:
    std::string name_;
    std::optional<boost::json::value> args_;
    enqueue_options opts_;
    task_options defaults_;
};

/// What a `link_error` continuation that takes the previous result receives.
struct failed_task {
    std::string task_id;
    std::string task_name;
    std::string error_type;
    std::string message;
    std::string reason;  ///< the dead-letter reason (`max-retries-exceeded: ...`)
    int attempts = 0;
};
BOOST_DESCRIBE_STRUCT(failed_task, (), (task_id, task_name, error_type, message, reason, attempts))

}  // namespace stem
