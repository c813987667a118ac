// stem/detail: internals, never included by users directly.
// build_envelope.hpp — one envelope from a task's defaults and a call's overrides.
#pragma once

#include <stem/core/envelope.hpp>
#include <stem/core/payload_encoder.hpp>
#include <stem/core/task_id.hpp>
#include <stem/core/signature.hpp>
#include <stem/core/task_options.hpp>

#include <utility>

#include <boost/json/serialize.hpp>

namespace stem::detail {

inline boost::json::object step_to_json(const signature& s, const payload_encoder_registry& enc);

/// Applies `o` over `defaults`; `args_json` is encoded with the registry's default args encoder.
inline envelope build_envelope(std::string_view name, std::string args_json, const task_options& defaults,
                               enqueue_options o, const payload_encoder_registry& enc) {
    envelope e;
    auto now = clock::now();
    e.id = o.task_id ? std::move(*o.task_id) : make_task_id();
    e.name = std::string(name);
    e.args_encoder = enc.default_args_encoder;
    e.result_encoder = enc.default_result_encoder;
    e.args = enc.encode(e.args_encoder, std::move(args_json));
    e.headers = std::move(o.headers);
    e.meta = std::move(o.meta);
    e.queue = o.queue ? std::move(*o.queue) : std::string(defaults.queue);
    e.priority = o.priority.value_or(defaults.priority);
    e.max_retries = o.max_retries.value_or(defaults.max_retries);
    if (o.eta) e.not_before = *o.eta;
    if (o.countdown) e.not_before = std::max(e.not_before.value_or(now), now + *o.countdown);
    if (o.expires) e.expires = now + *o.expires;
    if (o.visibility_timeout) e.visibility_timeout = *o.visibility_timeout;
    else if (defaults.visibility_timeout.count() > 0) e.visibility_timeout = defaults.visibility_timeout;
    e.retry = o.retry ? o.retry : defaults.retry;
    e.enqueued_at = now;
    if (!o.link.empty() || !o.link_error.empty()) {
        auto& slot = e.meta["canvas"];
        if (!slot.is_object()) slot.emplace_object();
        auto& canvas = slot.get_object();
        for (auto* which : {&o.link, &o.link_error}) {
            if (which->empty()) continue;
            auto& arr = canvas[which == &o.link ? "link" : "link_error"].emplace_array();
            for (auto& s : *which) arr.emplace_back(step_to_json(s, enc));
        }
    }
    validate(e);
    return e;
}

/// A signature on the wire (in an envelope's `meta.canvas`): the envelope it becomes, its
/// id fixed now, its arguments still to come when it takes the previous result, and its
/// countdown and expiry kept relative to when it is finally enqueued.
inline boost::json::object step_to_json(const signature& s, const payload_encoder_registry& enc) {
    enqueue_options o = s.options();
    auto countdown = std::exchange(o.countdown, std::nullopt);
    auto expires = std::exchange(o.expires, std::nullopt);
    auto env = build_envelope(s.name(), s.args() ? boost::json::serialize(*s.args()) : std::string("null"), s.defaults(),
                              std::move(o), enc);
    boost::json::object step{{"envelope", to_json(env)}, {"previous", s.takes_previous()}};
    if (countdown) step["countdown_ms"] = countdown->count();
    if (expires) step["expires_ms"] = expires->count();
    return step;
}

/// The envelope a step becomes now; `previous` (JSON text) is its arguments when it takes
/// the previous result. A malformed step throws stem::error(decode_failed).
inline envelope step_envelope(const boost::json::value& step, std::string_view previous, const payload_encoder_registry& enc) {
    if (!step.is_object() || !step.get_object().contains("envelope"))
        throw error(errc::decode_failed, "canvas step: expected an object with an envelope");
    auto& o = step.get_object();
    auto e = envelope_from_json(o.at("envelope"));
    auto now = clock::now();
    if (auto* p = o.if_contains("previous"); p && p->is_bool() && p->get_bool())
        e.args = enc.encode(e.args_encoder, std::string(previous));
    e.enqueued_at = now;
    if (auto* c = o.if_contains("countdown_ms"); c && c->is_int64())
        e.not_before = std::max(e.not_before.value_or(now), now + std::chrono::milliseconds(c->get_int64()));
    if (auto* x = o.if_contains("expires_ms"); x && x->is_int64()) e.expires = now + std::chrono::milliseconds(x->get_int64());
    return e;
}

/// The `meta.canvas` object of `e`, or null.
inline const boost::json::object* canvas_of(const envelope& e) {
    auto* c = e.meta.if_contains("canvas");
    return c && c->is_object() ? &c->get_object() : nullptr;
}

}  // namespace stem::detail
