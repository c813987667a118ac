// stem/core: vocabulary shared by every room, with no I/O.
// task_definition.hpp — a task as a compile-time type: name, argument and result types, defaults.
#pragma once

#include <stem/core/codec.hpp>
#include <stem/core/task_options.hpp>

#include <concepts>
#include <string_view>
#include <type_traits>

namespace stem {

template <class T>
concept task_type = requires {
    typename T::args_type;
    typename T::result_type;
    { T::name } -> std::convertible_to<std::string_view>;
    { T::options } -> std::convertible_to<task_options>;
};

/// The value a task's result is stored as: `Result`, or stem::unit for void.
template <class R>
using stored_result_t = std::conditional_t<std::is_void_v<R>, unit, R>;

template <task_type T, bool Previous>
class typed_signature;
template <task_type T, class A>
typed_signature<T, false> sig(A&& args, enqueue_options o = {});
template <task_type T>
typed_signature<T, true> sig(enqueue_options o = {});

/// Base of every typed task. Derive, and give the derived type
/// `static constexpr std::string_view name` and (optionally)
/// `static constexpr task_options options`. `Result` may be void. Naming the derived type
/// as `Self` (`struct send_email : task_definition<email_args, bool, send_email>`) gives it
/// `send_email::sig(...)`; `stem::sig<send_email>(...)` works either way.
template <class Args, class Result = void, class Self = void>
struct task_definition {
    using args_type = Args;
    using result_type = Result;
    static constexpr task_options options{};

    /// A call of this task with `args` (see stem::sig).
    template <class S = Self, class A>
        requires std::same_as<std::remove_cvref_t<A>, Args>
    static auto sig(A&& args, enqueue_options o = {}) {
        static_assert(!std::is_void_v<S>, "T::sig needs the task type as task_definition's third argument "
                                          "(struct T : stem::task_definition<Args, Result, T>); or call stem::sig<T>(...)");
        return stem::sig<S>(std::forward<A>(args), std::move(o));
    }
    /// A call of this task that takes the previous result as its arguments (see stem::sig).
    template <class S = Self>
    static auto sig(enqueue_options o = {}) {
        static_assert(!std::is_void_v<S>, "T::sig needs the task type as task_definition's third argument "
                                          "(struct T : stem::task_definition<Args, Result, T>); or call stem::sig<T>(...)");
        return stem::sig<S>(std::move(o));
    }
};

/// A signature of task T: bound to its arguments, or (`Previous`) taking the previous
/// result, whose type chain/chord check at compile time.
template <task_type T, bool Previous = false>
class typed_signature : public signature {
public:
    using task = T;
    using result_type = stored_result_t<typename T::result_type>;
    static constexpr bool takes_previous_result = Previous;
    using signature::signature;
    explicit typed_signature(signature s) : signature(std::move(s)) {}
};

/// A call of T with `args` (exactly T::args_type), enqueued later by a canvas or a link.
template <task_type T, class A>
typed_signature<T, false> sig(A&& args, enqueue_options o) {
    static_assert(std::same_as<std::remove_cvref_t<A>, typename T::args_type>, "stem::sig<T>(args): args must be T::args_type");
    return typed_signature<T, false>(signature(std::string(T::name), to_json_value(args), std::move(o), T::options));
}
/// A call of T whose arguments are the previous result (a chain's previous step, a
/// chord's results, a linked task's result).
template <task_type T>
typed_signature<T, true> sig(enqueue_options o) {
    return typed_signature<T, true>(signature(std::string(T::name), std::move(o), T::options));
}

/// `A` is exactly `T` (after removing cv-ref). Public awaitable-returning functions take
/// their non-trivial arguments through this constraint so that a braced list (`f({...})`)
/// is refused at compile time. GCC 12 destroys temporaries made by aggregate
/// initialisation twice when they sit in a co_await expression, braced lists and `T{...}`
/// alike; only the braced form can be refused here, so build arguments in a named variable:
/// `email_args args{...}; co_await app.enqueue<send_email>(args);`.
template <class A, class T>
concept exactly = std::same_as<std::remove_cvref_t<A>, T>;

}  // namespace stem
