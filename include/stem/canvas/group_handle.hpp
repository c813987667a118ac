// stem/canvas: chains, groups and chords of typed tasks.
// group_handle.hpp — what dispatching a group returns: results in order, or as they finish.
#pragma once

#include <stem/canvas/chain_handle.hpp>
#include <stem/detail/waiter.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>

namespace stem {

namespace detail {
/// The value of a member that succeeded.
template <class X>
X group_value(const std::optional<task_status>& st, const payload_encoder_registry& enc) {
    auto v = to_result<X>(st->id, st, enc).value;
    if (!v) throw error(errc::decode_failed, fmt::format("group: task {} succeeded without a result", st->id));
    return std::move(*v);
}

template <class R>
struct group_values;
/// Heterogeneous groups: one typed value per signature.
template <class... Rs>
struct group_values<std::tuple<Rs...>> {
    using item = boost::json::value;
    static std::tuple<Rs...> make(const std::vector<std::optional<task_status>>& s, const payload_encoder_registry& enc) {
        return [&]<std::size_t... I>(std::index_sequence<I...>) {
            return std::tuple<Rs...>{group_value<Rs>(s[I], enc)...};
        }(std::index_sequence_for<Rs...>{});
    }
};
/// Homogeneous groups: a vector, in signature order.
template <class X>
struct group_values<std::vector<X>> {
    using item = X;
    static std::vector<X> make(const std::vector<std::optional<task_status>>& s, const payload_encoder_registry& enc) {
        std::vector<X> out;
        out.reserve(s.size());
        for (auto& st : s) out.push_back(group_value<X>(st, enc));
        return out;
    }
};
}  // namespace detail

/// One finished member of a group, as `group_stream::next` gives it.
template <class X>
struct group_item {
    std::size_t index = 0;  ///< its position in the group's signatures
    task_result<X> result;
};

/// The members of a group in the order they finish. Up to `window` members are waited
/// for at once (in signature order; a member further on that has already finished is given
/// as soon as it enters the window). Destroying the stream cancels its waits.
template <class X>
class group_stream {
public:
    static constexpr std::size_t window = 256;

    group_stream(std::string group_id, std::vector<std::string> ids, std::shared_ptr<detail::result_source> src)
        : s_(std::make_shared<state>()) {
        s_->group_id = std::move(group_id);
        s_->ids = std::move(ids);
        s_->src = std::move(src);
    }
    group_stream(group_stream&&) noexcept = default;
    group_stream& operator=(group_stream&&) noexcept = default;
    ~group_stream() {
        if (!s_ || !s_->strand) return;
        boost::asio::post(*s_->strand, [s = s_] {
            s->stopped = true;
            for (auto& sig : s->signals) sig.emit(boost::asio::cancellation_type::terminal);
        });
    }

    /// The next member to finish (its index and result), or nullopt once every member has
    /// been given, or when `timeout` passes first (then `timed_out()` is true).
    awaitable<std::optional<group_item<X>>> next(std::chrono::milliseconds timeout) {
        auto s = s_;
        auto deadline = std::chrono::steady_clock::now() + timeout;
        if (!s->strand) co_await start(s, co_await boost::asio::this_coro::executor);
        co_await boost::asio::dispatch(*s->strand, boost::asio::use_awaitable);
        s->timed_out = false;
        for (;;) {
            if (s->failure) std::rethrow_exception(s->failure);
            if (!s->ready.empty()) {
                auto [i, st] = std::move(s->ready.front());
                s->ready.pop_front();
                ++s->given;
                std::optional<task_status> found(std::move(st));
                group_item<X> item{i, detail::to_result<X>(s->ids[i], found, s->src->encoders())};
                co_return item;
            }
            if (s->given == s->ids.size()) co_return std::nullopt;
            if (!co_await s->wake->wait_until(deadline)) {
                co_await boost::asio::dispatch(*s->strand, boost::asio::use_awaitable);
                s->timed_out = true;
                co_return std::nullopt;
            }
            co_await boost::asio::dispatch(*s->strand, boost::asio::use_awaitable);
        }
    }
    /// The last `next` ended because its timeout passed.
    bool timed_out() const noexcept { return s_->timed_out; }

private:
    struct state {
        std::string group_id;
        std::vector<std::string> ids;
        std::shared_ptr<detail::result_source> src;
        std::optional<boost::asio::strand<boost::asio::any_io_executor>> strand;
        std::shared_ptr<detail::waiter> wake;
        std::deque<std::pair<std::size_t, task_status>> ready;
        std::deque<std::size_t> pending;        // not yet waited for, in order
        std::vector<boost::asio::cancellation_signal> signals = std::vector<boost::asio::cancellation_signal>(window);
        std::vector<std::size_t> free_slots;
        std::size_t given = 0;
        bool stopped = false;
        bool timed_out = false;
        std::exception_ptr failure;
    };

    /// Reads the members already finished from the group record, then waits for the rest.
    static awaitable<void> start(std::shared_ptr<state> s, boost::asio::any_io_executor ex) {
        s->strand.emplace(boost::asio::make_strand(ex));
        s->wake = std::make_shared<detail::waiter>();
        auto g = co_await s->src->get_group(s->group_id);
        co_await boost::asio::dispatch(*s->strand, boost::asio::use_awaitable);
        for (std::size_t i = 0; i < s->ids.size(); ++i) {
            const task_status* finished = nullptr;
            if (g)
                if (auto it = g->results.find(s->ids[i]); it != g->results.end()) finished = &it->second;
            if (finished) s->ready.emplace_back(i, *finished);
            else s->pending.push_back(i);
        }
        for (std::size_t k = 0; k < window; ++k) s->free_slots.push_back(window - 1 - k);
        fill(s);
    }

    /// Starts waits for pending members while there are free slots (on the strand).
    static void fill(const std::shared_ptr<state>& s) {
        while (!s->stopped && !s->pending.empty() && !s->free_slots.empty()) {
            auto i = s->pending.front();
            s->pending.pop_front();
            auto k = s->free_slots.back();
            s->free_slots.pop_back();
            boost::asio::co_spawn(*s->strand, wait_one(s, i, k), boost::asio::bind_cancellation_slot(s->signals[k].slot(), boost::asio::detached));
        }
    }

    static awaitable<void> wait_one(std::shared_ptr<state> s, std::size_t i, std::size_t k) {
        std::optional<task_status> st;
        std::exception_ptr failed;
        try {
            while (!s->stopped && !(st && is_terminal(st->state))) st = co_await s->src->wait(s->ids[i], std::chrono::hours(1));
        } catch (...) {
            failed = std::current_exception();
        }
        co_await boost::asio::dispatch(*s->strand, boost::asio::use_awaitable);
        if (s->stopped) co_return;
        if (failed) s->failure = failed;
        else s->ready.emplace_back(i, std::move(*st));
        s->free_slots.push_back(k);
        fill(s);
        s->wake->notify();
    }

    std::shared_ptr<state> s_;
};

/// A dispatched group: its id, its members' ids (fixed at dispatch), their typed results in
/// signature order (`wait`) or as they finish (`stream`). `R` is `std::vector<X>` (one task
/// type) or `std::tuple<X...>` (one type per signature). Cheap to copy.
template <class R>
class group_handle {
public:
    using item_type = typename detail::group_values<R>::item;

    group_handle(std::string id, std::vector<std::string> ids, std::shared_ptr<detail::result_source> src)
        : id_(std::move(id)), ids_(std::move(ids)), src_(std::move(src)) {}

    const std::string& id() const noexcept { return id_; }
    const std::vector<std::string>& ids() const noexcept { return ids_; }
    std::size_t size() const noexcept { return ids_.size(); }

    /// Waits (without polling) until every member has succeeded — the values, in signature
    /// order — or one has failed (`failure` names the first failed member found), or
    /// `timeout` passes.
    awaitable<canvas_result<R>> wait(std::chrono::milliseconds timeout) const {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        canvas_result<R> out;
        out.id = id_;
        std::vector<std::optional<task_status>> done(ids_.size());
        if (auto g = co_await src_->get_group(id_)) {
            for (std::size_t i = 0; i < ids_.size(); ++i)
                if (auto it = g->results.find(ids_[i]); it != g->results.end()) done[i] = it->second;
        }
        auto failed = [&](std::size_t i) { return done[i] && done[i]->state != task_state::succeeded; };
        for (std::size_t i = 0; i < ids_.size(); ++i)
            if (failed(i)) {
                out.failure = detail::failure_of(i, *done[i]);
                co_return out;
            }
        for (std::size_t i = 0; i < ids_.size(); ++i) {
            if (done[i]) continue;
            auto st = co_await src_->wait(ids_[i], detail::left_until(deadline));
            if (!st || !is_terminal(st->state)) {
                out.timed_out = true;
                co_return out;
            }
            done[i] = std::move(st);
            if (failed(i)) {
                out.failure = detail::failure_of(i, *done[i]);
                co_return out;
            }
        }
        out.value = detail::group_values<R>::make(done, src_->encoders());
        co_return out;
    }

    /// The members as they finish.
    group_stream<item_type> stream() const { return {id_, ids_, src_}; }

private:
    std::string id_;
    std::vector<std::string> ids_;
    std::shared_ptr<detail::result_source> src_;
};

}  // namespace stem
