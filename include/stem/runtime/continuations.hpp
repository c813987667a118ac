// stem/runtime: producer, worker, task context, retries, lifecycle.
// continuations.hpp — what a worker enqueues after a task's final state: the next step of a
// chain, links, a chord's callback (see docs/canvas.md for the wire format).
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/contracts/result_backend.hpp>
#include <stem/detail/build_envelope.hpp>
#include <stem/runtime/producer.hpp>

#include <fmt/format.h>

#include <functional>
#include <optional>
#include <string>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace stem::detail {

/// Runs the continuations an envelope's `meta.canvas` names, once its task has a final
/// status. Every step goes through the producer (publish signals). Errors propagate: the
/// caller leaves the delivery unacknowledged so that it comes back.
template <broker Broker, result_backend Backend>
class continuations {
public:
    /// `warn` reports what cannot be done and will not get better by trying again.
    continuations(producer<Broker, Backend>& p, Backend& b, const payload_encoder_registry& enc,
                  const std::optional<std::chrono::milliseconds>& ttl, std::function<void(const std::string&)> warn)
        : producer_(p), backend_(b), enc_(enc), ttl_(ttl), warn_(std::move(warn)) {}

    /// `st` is the task's `succeeded` status, as recorded.
    awaitable<void> succeeded(const envelope& env, const task_status& st) {
        const auto* canvas = canvas_of(env);
        if (!canvas) co_return;
        std::string result = st.result ? enc_.decode(st.result_encoder, *st.result) : std::string("null");
        if (auto* chain = canvas->if_contains("chain"); chain && chain->is_array() && !chain->get_array().empty()) {
            auto& steps = chain->get_array();
            auto next = step_envelope(steps[0], result, enc_);
            if (steps.size() > 1) {
                auto& slot = next.meta["canvas"];
                if (!slot.is_object()) slot.emplace_object();
                slot.get_object()["chain"] = boost::json::array(steps.begin() + 1, steps.end());
            }
            co_await producer_.publish(std::move(next));
        }
        co_await publish_all(*canvas, "link", result);
        if (!env.group_id.empty()) co_await group_member_done(env, *canvas, st);
    }

    /// `st` is the task's final `failed` (or `cancelled`) status, as recorded.
    awaitable<void> failed(const envelope& env, const task_status& st) {
        const auto* canvas = canvas_of(env);
        if (!canvas) co_return;
        if (canvas->contains("link_error")) {
            failed_task f;
            f.task_id = env.id;
            f.task_name = env.name;
            f.attempts = env.attempt + 1;
            if (st.error) {
                f.error_type = st.error->type;
                f.message = st.error->message;
                if (auto* r = st.error->context.if_contains("dead_letter_reason"); r && r->is_string()) f.reason = r->get_string();
            }
            co_await publish_all(*canvas, "link_error", encode_json(f));
        }
        if (!env.group_id.empty()) co_await group_member_done(env, *canvas, st);
    }

private:
    awaitable<void> publish_all(const boost::json::object& canvas, std::string_view key, const std::string& previous) {
        auto* list = canvas.if_contains(key);
        if (!list || !list->is_array()) co_return;
        for (auto& step : list->get_array()) {
            auto e = step_envelope(step, previous, enc_);  // (named: see exactly<> in task_definition.hpp)
            co_await producer_.publish(std::move(e));
        }
    }

    /// Records a group member's final status; in a chord, the member that completes the
    /// header (or the first that fails) claims the chord, once, and dispatches the callback
    /// (or records the callback as failed, naming the branch).
    awaitable<void> group_member_done(const envelope& env, const boost::json::object& canvas, const task_status& st) {
        std::size_t finished = 0;
        bool gone = false;
        try {
            finished = co_await backend_.add_group_result(env.group_id, st);
        } catch (const error& e) {
            if (e.condition() != errc::not_found) throw;
            gone = true;
        }
        if (gone) {  // expired (its TTL passed) or never made: nothing to count it in
            warn_(fmt::format("task {}: its group {} does not exist or has expired; the result is not counted", env.id, env.group_id));
            co_return;
        }
        auto* chord = canvas.if_contains("chord");
        if (!chord) co_return;
        // A failed member fails the chord at once (the first to fail claims it); otherwise
        // the member whose result completes the header claims it and calls back.
        if (st.state != task_state::succeeded) {
            if (co_await backend_.claim_chord(env.group_id)) co_await fail_callback(*chord, env.group_id, json_count(canvas, "index"), st);
            co_return;
        }
        auto expected = json_count(canvas, "size");
        if (expected == 0 || finished < expected || !co_await backend_.claim_chord(env.group_id)) co_return;
        auto group = co_await backend_.get_group(env.group_id);
        if (!group) {
            warn_(fmt::format("chord {}: its group record expired before the callback was sent", env.group_id));
            co_return;
        }
        // The results in signature order (a member that failed without claiming, its worker
        // gone before the claim, fails the chord here).
        boost::json::array results;
        results.reserve(group->task_ids.size());
        for (std::size_t i = 0; i < group->task_ids.size(); ++i) {
            auto it = group->results.find(group->task_ids[i]);
            if (it == group->results.end()) throw error(errc::backend_failure, fmt::format("chord {}: branch {} has no result", env.group_id, i));
            const task_status& child = it->second;
            if (child.state != task_state::succeeded) {
                co_await fail_callback(*chord, env.group_id, i, child);
                co_return;
            }
            results.push_back(child.result ? boost::json::parse(enc_.decode(child.result_encoder, *child.result)) : boost::json::value());
        }
        auto callback = step_envelope(*chord, boost::json::serialize(results), enc_);
        co_await producer_.publish(std::move(callback));
    }

    /// A non-negative count stored in `canvas[key]` (0 when absent).
    static std::size_t json_count(const boost::json::object& canvas, std::string_view key) {
        auto* v = canvas.if_contains(key);
        return !v ? 0 : v->is_int64() ? std::size_t(v->get_int64()) : v->is_uint64() ? std::size_t(v->get_uint64()) : 0;
    }

    awaitable<void> fail_callback(const boost::json::value& step, const std::string& group_id, std::size_t branch, const task_status& child) {
        auto cb = envelope_from_json(step.get_object().at("envelope"));
        task_status st;
        st.id = cb.id;
        st.name = cb.name;
        st.state = task_state::failed;
        st.queue = cb.queue;
        st.group_id = group_id;
        st.created_at = st.updated_at = clock::now();
        st.finished_at = st.updated_at;
        task_error err;
        err.type = "chord_branch_failed";
        err.message = fmt::format("branch {} ({} {}) {}: {}", branch, child.name, child.id, to_string(child.state),
                                  child.error ? child.error->type + ": " + child.error->message : std::string("no error recorded"));
        err.context = {{"branch", branch}, {"branch_id", child.id}, {"branch_name", child.name}, {"chord", group_id}};
        st.error = std::move(err);
        co_await backend_.set(std::move(st), ttl_);
    }

    producer<Broker, Backend>& producer_;
    Backend& backend_;
    const payload_encoder_registry& enc_;
    const std::optional<std::chrono::milliseconds>& ttl_;
    std::function<void(const std::string&)> warn_;
};

}  // namespace stem::detail
