// stem/canvas: chains, groups and chords of typed tasks.
// canvas.hpp — dispatches signatures, chains, groups and chords through a producer.
#pragma once

#include <stem/canvas/chain_handle.hpp>
#include <stem/canvas/chord_handle.hpp>
#include <stem/canvas/group_handle.hpp>
#include <stem/core/task_id.hpp>
#include <stem/detail/build_envelope.hpp>
#include <stem/runtime/producer.hpp>

#include <concepts>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/json/serialize.hpp>

namespace stem {

namespace detail {
/// What a signature type says at compile time.
template <class S>
struct signature_traits {
    using result = boost::json::value;
    static constexpr bool typed = false;
};
template <task_type T, bool Previous>
struct signature_traits<typed_signature<T, Previous>> {
    using result = stored_result_t<typename T::result_type>;
    using args = typename T::args_type;
    static constexpr bool typed = true;
    static constexpr bool previous = Previous;
};

/// A task whose arguments are `Args` can take a value of type `Prev` (it travels as JSON):
/// the same type, any JSON (`boost::json::value`), or numbers both.
template <class Args, class Prev>
concept takes_value = std::same_as<Args, Prev> || std::same_as<Args, boost::json::value> ||
                      (std::is_arithmetic_v<Args> && std::is_arithmetic_v<Prev> && !std::same_as<Args, bool> && !std::same_as<Prev, bool>);

/// Fails to compile, naming the step, when typed step `I` cannot take step `I-1`'s result.
template <std::size_t I, class Prev, class Next>
constexpr bool chain_step_fits() {
    using P = signature_traits<Prev>;
    using N = signature_traits<Next>;
    if constexpr (P::typed && N::typed) {
        if constexpr (N::previous)
            static_assert(takes_value<typename N::args, typename P::result>,
                          "stem::chain: this step's argument type (N::args) cannot take the previous step's result "
                          "(P::result); see chain_step_fits<I, ...> above for which step (I counts from 0)");
    }
    return true;
}

template <class S>
concept signature_like = std::derived_from<S, signature>;

template <class... S>
using last_t = std::tuple_element_t<sizeof...(S) - 1, std::tuple<S...>>;
}  // namespace detail

/// Composes tasks: chains, groups, chords and single signatures (with their links),
/// enqueued through a producer; their records live in the result backend. Get one from
/// `app.canvas()`. Cheap to copy; refers to the producer and backend it was made from.
template <broker Broker, result_backend Backend>
class canvas {
public:
    /// `group_ttl`: how long group and chord records are kept (nullopt: the backend's default).
    canvas(producer<Broker, Backend>& p, Backend& b, std::optional<std::chrono::milliseconds> group_ttl = {})
        : producer_(&p), backend_(&b), ttl_(group_ttl) {}
    /// The canvas of an app: its producer and backend; group records kept as long as results.
    template <class App>
        requires std::same_as<typename App::broker_type, Broker> && std::same_as<typename App::backend_type, Backend>
    explicit canvas(App& app) : canvas(app.client(), app.get_backend(), app.worker_settings().result_ttl) {}

    /// Enqueues one signature (with its `link` / `link_error` continuations).
    template <detail::signature_like S>
    awaitable<task_handle<typename detail::signature_traits<S>::result>> enqueue(S s) {
        if (s.takes_previous()) throw error(errc::invalid_argument, fmt::format("canvas: '{}' takes a previous result, and nothing runs before it", s.name()));
        auto e = make_envelope(s);
        auto id = e.id;
        co_await producer_->publish(std::move(e));
        co_return producer_->template handle<typename detail::signature_traits<S>::result>(std::move(id));
    }

    /// Runs `steps` one after the other, each taking the previous one's result (unless it
    /// has arguments of its own). Typed steps are checked at compile time. The first step
    /// needs arguments. A failing step stops the chain.
    template <detail::signature_like... S>
        requires(sizeof...(S) > 0)
    awaitable<chain_handle<typename detail::signature_traits<detail::last_t<S...>>::result>> chain(S... steps) {
        using first = detail::signature_traits<std::tuple_element_t<0, std::tuple<S...>>>;
        if constexpr (first::typed) static_assert(!first::previous, "stem::chain: the first step needs arguments of its own (sig<T>(args))");
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            using all = std::tuple<S...>;
            (detail::chain_step_fits<I + 1, std::tuple_element_t<I, all>, std::tuple_element_t<I + 1, all>>(), ...);
        }(std::make_index_sequence<sizeof...(S) - 1>{});
        std::vector<signature> v;
        v.reserve(sizeof...(S));
        (v.push_back(std::move(steps)), ...);
        return dispatch_chain<typename detail::signature_traits<detail::last_t<S...>>::result>(std::move(v));
    }
    /// A chain of untyped signatures.
    awaitable<chain_handle<boost::json::value>> chain(std::vector<signature> steps) {
        return dispatch_chain<boost::json::value>(std::move(steps));
    }

    /// Runs `branches` in parallel; the handle gives their results as a tuple, in order.
    template <detail::signature_like... S>
    awaitable<group_handle<std::tuple<typename detail::signature_traits<S>::result...>>> group(S... branches) {
        std::vector<signature> v;
        v.reserve(sizeof...(S));
        (v.push_back(std::move(branches)), ...);
        return dispatch_group<group_handle<std::tuple<typename detail::signature_traits<S>::result...>>>(std::move(v), std::nullopt);
    }
    /// Runs calls of one task in parallel; the handle gives a vector of results, in order.
    template <task_type T>
    awaitable<group_handle<std::vector<stored_result_t<typename T::result_type>>>> group(std::vector<typed_signature<T, false>> branches) {
        return dispatch_group<group_handle<std::vector<stored_result_t<typename T::result_type>>>>(as_untyped(std::move(branches)), std::nullopt);
    }
    awaitable<group_handle<std::vector<boost::json::value>>> group(std::vector<signature> branches) {
        return dispatch_group<group_handle<std::vector<boost::json::value>>>(std::move(branches), std::nullopt);
    }

    /// Runs `header` in parallel, then `callback` once, with the header's results in
    /// signature order (a JSON array; a typed callback taking them must take
    /// `std::vector<R>`). A failed branch fails the chord instead, naming the branch.
    template <task_type T, detail::signature_like C>
    awaitable<chord_handle<typename detail::signature_traits<C>::result>> chord(std::vector<typed_signature<T, false>> header, C callback) {
        using cb = detail::signature_traits<C>;
        if constexpr (cb::typed && cb::previous)
            static_assert(detail::takes_value<typename cb::args, std::vector<stored_result_t<typename T::result_type>>>,
                          "stem::chord: the callback's argument type must take std::vector<R> (the header's results in order)");
        return dispatch_chord<typename cb::result>(as_untyped(std::move(header)), std::move(callback));
    }
    template <detail::signature_like C>
    awaitable<chord_handle<typename detail::signature_traits<C>::result>> chord(std::vector<signature> header, C callback) {
        return dispatch_chord<typename detail::signature_traits<C>::result>(std::move(header), std::move(callback));
    }

private:
    template <class T>
    static std::vector<signature> as_untyped(std::vector<typed_signature<T, false>> v) {
        return std::vector<signature>(std::make_move_iterator(v.begin()), std::make_move_iterator(v.end()));
    }

    envelope make_envelope(const signature& s) const {
        return detail::build_envelope(s.name(), s.args() ? boost::json::serialize(*s.args()) : std::string("null"), s.defaults(), s.options(),
                                      producer_->encoders());
    }

    static boost::json::object& canvas_meta(envelope& e) {
        auto& slot = e.meta["canvas"];
        if (!slot.is_object()) slot.emplace_object();
        return slot.get_object();
    }

    static std::string fix_id(signature& s) {
        auto& id = s.options().task_id;
        if (!id) id = make_task_id();
        return *id;
    }

    template <class R>
    awaitable<chain_handle<R>> dispatch_chain(std::vector<signature> steps) {
        if (steps.empty()) throw error(errc::invalid_argument, "canvas: a chain needs at least one step");
        if (steps[0].takes_previous())
            throw error(errc::invalid_argument, fmt::format("canvas: the chain's first step '{}' needs arguments of its own", steps[0].name()));
        std::vector<std::string> ids;
        ids.reserve(steps.size());
        for (auto& s : steps) ids.push_back(fix_id(s));
        boost::json::array rest;
        rest.reserve(steps.size() - 1);
        for (std::size_t i = 1; i < steps.size(); ++i) rest.push_back(detail::step_to_json(steps[i], producer_->encoders()));
        auto first = make_envelope(steps[0]);
        if (!rest.empty()) canvas_meta(first)["chain"] = std::move(rest);
        co_await producer_->publish(std::move(first));
        co_return chain_handle<R>(std::move(ids), producer_->results());
    }

    /// Records the group, then publishes its members in one broker call. A chord's members
    /// carry the callback (its id fixed now).
    template <class Handle>
    awaitable<Handle> dispatch_group(std::vector<signature> branches, std::optional<signature> callback) {
        auto gid = make_task_id();
        std::vector<std::string> ids;
        ids.reserve(branches.size());
        for (auto& b : branches) {
            if (b.takes_previous())
                throw error(errc::invalid_argument, fmt::format("canvas: group member '{}' needs arguments of its own", b.name()));
            ids.push_back(fix_id(b));
        }
        group_descriptor d{gid, ids, {{"kind", callback ? "chord" : "group"}}};
        std::optional<boost::json::object> cb_step;
        if (callback) {
            d.meta["callback"] = fix_id(*callback);
            cb_step = detail::step_to_json(*callback, producer_->encoders());
        }
        co_await backend_->init_group(std::move(d), ttl_);
        std::vector<envelope> batch;
        batch.reserve(branches.size());
        for (std::size_t i = 0; i < branches.size(); ++i) {
            auto e = make_envelope(branches[i]);
            e.group_id = gid;
            auto& c = canvas_meta(e);
            c["index"] = std::int64_t(i);
            c["size"] = std::int64_t(branches.size());
            if (cb_step) c["chord"] = *cb_step;
            batch.push_back(std::move(e));
        }
        if (!batch.empty()) co_await producer_->publish_batch(std::move(batch));
        else if (cb_step) {  // nothing to wait for: the callback runs at once, with no results
            auto e = detail::step_envelope(*cb_step, "[]", producer_->encoders());
            co_await producer_->publish(std::move(e));
        }
        if constexpr (std::is_constructible_v<Handle, std::string, std::vector<std::string>, std::shared_ptr<detail::result_source>>) co_return Handle(std::move(gid), std::move(ids), producer_->results());
        else co_return Handle(std::move(gid), std::move(ids), *callback->options().task_id, producer_->results());
    }

    template <class R>
    awaitable<chord_handle<R>> dispatch_chord(std::vector<signature> header, signature callback) {
        return dispatch_group<chord_handle<R>>(std::move(header), std::move(callback));
    }

    producer<Broker, Backend>* producer_;
    Backend* backend_;
    std::optional<std::chrono::milliseconds> ttl_;
};

template <class App>
canvas(App&) -> canvas<typename App::broker_type, typename App::backend_type>;

}  // namespace stem
