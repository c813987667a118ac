// stem/core: vocabulary shared by every room, with no I/O.
// envelope.hpp — the unit a broker carries: one task invocation and its metadata.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/core/error.hpp>
#include <stem/core/task_options.hpp>
#include <stem/detail/flat_envelope.hpp>
#include <stem/detail/json_fields.hpp>
#include <stem/detail/json_writer.hpp>
#include <stem/detail/text.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

namespace stem {

/// Highest priority accepted; 0 is the lowest, and the default.
inline constexpr int max_priority = 9;

/// One task invocation as it travels from producer to worker.
struct envelope {
    std::string id;                 ///< UUIDv7 unless the caller chose one
    std::string name;               ///< task name, e.g. "email.send"
    std::string args;               ///< arguments, encoded by `args_encoder` (may be binary)
    std::map<std::string, std::string> headers;  ///< travels with the envelope (tracing, signing)
    boost::json::object meta;       ///< copied onto the task's status records
    std::string queue = "default";
    int priority = 0;               ///< 0..9, higher first
    int attempt = 0;                ///< 0 for the first run
    int max_retries = 0;
    std::optional<time_point> not_before;   ///< not delivered before this instant
    std::optional<time_point> expires;      ///< skipped (recorded cancelled) if started after this
    std::optional<std::chrono::milliseconds> visibility_timeout;  ///< lease length for this task
    time_point enqueued_at{};
    std::string group_id, chord_id, parent_id, root_id;
    std::string args_encoder = "json";
    std::string result_encoder = "json";
    std::optional<retry_policy> retry;  ///< per-enqueue retry policy override

    friend bool operator==(const envelope&, const envelope&) = default;
};

/// Throws stem::error(invalid_envelope) naming the first field out of range.
inline void validate(const envelope& e) {
    auto bad = [&](std::string_view field, std::string_view what) {
        return error(errc::invalid_envelope, fmt::format("envelope.{}: {} (task id '{}')", field, what, e.id));
    };
    if (e.id.empty()) throw bad("id", "empty");
    if (e.name.empty()) throw bad("name", "empty");
    if (e.queue.empty()) throw bad("queue", "empty");
    if (e.priority < 0 || e.priority > max_priority) throw bad("priority", fmt::format("{} is outside 0..9", e.priority));
    if (e.attempt < 0) throw bad("attempt", "negative");
    if (e.max_retries < 0) throw bad("max_retries", "negative");
    if (e.visibility_timeout && e.visibility_timeout->count() <= 0) throw bad("visibility_timeout_ms", "must be positive");
}

inline boost::json::object to_json(const retry_policy& p) {
    return {{"backoff", p.backoff},
            {"default_delay_ms", p.default_delay.count()},
            {"backoff_max_ms", p.backoff_max.count()},
            {"jitter", p.jitter}};
}

inline retry_policy retry_policy_from_json(const boost::json::value& v, std::string_view where, errc code) {
    if (!v.is_object()) throw error(code, fmt::format("{}: expected object", where));
    detail::field_reader r(v.get_object(), where, code);
    retry_policy p;
    p.backoff = r.boolean_or("backoff", p.backoff);
    p.default_delay = std::chrono::milliseconds{r.integer_or("default_delay_ms", p.default_delay.count())};
    p.backoff_max = std::chrono::milliseconds{r.integer_or("backoff_max_ms", p.backoff_max.count())};
    p.jitter = r.boolean_or("jitter", p.jitter);
    return p;
}

/// Reads an envelope; throws stem::error(invalid_envelope) naming the field at fault.
inline envelope envelope_from_json(const boost::json::value& v) {
    if (!v.is_object()) throw error(errc::invalid_envelope, "envelope: expected a JSON object");
    detail::field_reader r(v.get_object(), "envelope", errc::invalid_envelope);
    envelope e;
    e.id = r.string("id");
    e.name = r.string("name");
    if (r.find("args")) {
        e.args = r.string("args");
    } else if (r.find("args_base64")) {
        auto raw = detail::base64_decode(r.string("args_base64"));
        if (!raw) r.fail("args_base64", "not valid base64");
        e.args = std::move(*raw);
    } else {
        r.fail("args", "missing");
    }
    for (auto& [k, hv] : r.object_or_empty("headers")) {
        if (!hv.is_string()) r.fail(fmt::format("headers.{}", std::string_view(k)), "expected string");
        e.headers.emplace(std::string(k), std::string(hv.get_string()));
    }
    e.meta = r.object_or_empty("meta");
    e.queue = r.string_or("queue", "default");
    e.priority = r.int_or("priority", 0);
    e.attempt = r.int_or("attempt", 0);
    e.max_retries = r.int_or("max_retries", 0);
    e.not_before = r.time("not_before");
    e.expires = r.time("expires");
    if (r.find("visibility_timeout_ms")) e.visibility_timeout = std::chrono::milliseconds{r.integer("visibility_timeout_ms")};
    e.enqueued_at = r.time("enqueued_at").value_or(time_point{});
    e.group_id = r.string_or("group_id", "");
    e.chord_id = r.string_or("chord_id", "");
    e.parent_id = r.string_or("parent_id", "");
    e.root_id = r.string_or("root_id", "");
    e.args_encoder = r.string_or("args_encoder", "json");
    e.result_encoder = r.string_or("result_encoder", "json");
    if (auto* rp = r.find("retry_policy")) e.retry = retry_policy_from_json(*rp, "envelope.retry_policy", errc::invalid_envelope);
    validate(e);
    return e;
}

/// Envelope to JSON text, written field by field. Arguments that are not JSON-safe UTF-8
/// travel base64-encoded under `args_base64`.
inline std::string serialize(const envelope& e) {
    std::string out;
    out.reserve(384 + e.args.size());
    detail::json_writer w(out);
    w.field("id", e.id);
    w.field("name", e.name);
    if (detail::is_json_safe_utf8(e.args)) w.field("args", e.args);
    else w.field("args_base64", detail::base64_encode(e.args));
    if (!e.headers.empty())
        w.object("headers", [&](detail::json_writer& h) {
            for (auto& [k, v] : e.headers) h.field_any_key(k, v);
        });
    if (!e.meta.empty()) w.field("meta", e.meta);
    w.field("queue", e.queue);
    w.field("priority", e.priority);
    w.field("attempt", e.attempt);
    w.field("max_retries", e.max_retries);
    if (e.not_before) w.field("not_before", *e.not_before);
    if (e.expires) w.field("expires", *e.expires);
    if (e.visibility_timeout) w.field("visibility_timeout_ms", std::int64_t(e.visibility_timeout->count()));
    w.field("enqueued_at", e.enqueued_at);
    auto opt = [&](std::string_view k, const std::string& v) {
        if (!v.empty()) w.field(k, v);
    };
    opt("group_id", e.group_id);
    opt("chord_id", e.chord_id);
    opt("parent_id", e.parent_id);
    opt("root_id", e.root_id);
    w.field("args_encoder", e.args_encoder);
    w.field("result_encoder", e.result_encoder);
    if (e.retry) w.field("retry_policy", to_json(*e.retry));
    w.close();
    return out;
}

/// The envelope as a JSON object: the fields `serialize` writes.
inline boost::json::object to_json(const envelope& e) {
    auto v = boost::json::parse(serialize(e));
    return std::move(v.as_object());
}

/// JSON text to envelope; malformed JSON or fields give stem::error(invalid_envelope).
inline envelope parse_envelope(std::string_view text) {
    if (auto flat = detail::read_flat_envelope<envelope>(text)) {  // the common case, in one pass
        validate(*flat);
        return std::move(*flat);
    }
    // The parsed tree lives only for this call: its nodes come from a buffer on the stack.
    unsigned char buffer[2048];
    boost::json::monotonic_resource scratch(buffer, sizeof buffer);
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec, &scratch);
    if (ec) throw error(errc::invalid_envelope, fmt::format("envelope: not JSON ({})", ec.message()));
    return envelope_from_json(v);
}

}  // namespace stem
