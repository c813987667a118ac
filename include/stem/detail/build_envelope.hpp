// stem/detail: internals, never included by users directly.
// build_envelope.hpp — one envelope from a task's defaults and a call's overrides.
#pragma once

#include <stem/core/envelope.hpp>
#include <stem/core/payload_encoder.hpp>
#include <stem/core/task_id.hpp>
#include <stem/core/task_options.hpp>

namespace stem::detail {

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
    validate(e);
    return e;
}

}  // namespace stem::detail
