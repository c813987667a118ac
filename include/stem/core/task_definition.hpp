// stem/core: vocabulary shared by every room, with no I/O.
// task_definition.hpp — a task as a compile-time type: name, argument and result types, defaults.
#pragma once

#include <stem/core/codec.hpp>
#include <stem/core/task_options.hpp>

#include <concepts>
#include <string_view>
#include <type_traits>

namespace stem {

/// Base of every typed task. Derive, and give the derived type
/// `static constexpr std::string_view name` and (optionally)
/// `static constexpr task_options options`. `Result` may be void.
template <class Args, class Result = void>
struct task_definition {
    using args_type = Args;
    using result_type = Result;
    static constexpr task_options options{};
};

/// The value a task's result is stored as: `Result`, or stem::unit for void.
template <class R>
using stored_result_t = std::conditional_t<std::is_void_v<R>, unit, R>;

/// A type that names a task: `T::name`, `T::options`, `T::args_type`, `T::result_type`.
template <class T>
concept task_type = requires {
    typename T::args_type;
    typename T::result_type;
    { T::name } -> std::convertible_to<std::string_view>;
    { T::options } -> std::convertible_to<task_options>;
};

/// `A` is exactly `T` (after removing cv-ref). Public awaitable-returning functions take
/// their non-trivial arguments through this constraint so that a braced list (`f({...})`)
/// is refused at compile time. GCC 12 destroys temporaries made by aggregate
/// initialisation twice when they sit in a co_await expression, braced lists and `T{...}`
/// alike; only the braced form can be refused here, so build arguments in a named variable:
/// `email_args args{...}; co_await app.enqueue<send_email>(args);`.
template <class A, class T>
concept exactly = std::same_as<std::remove_cvref_t<A>, T>;

}  // namespace stem
