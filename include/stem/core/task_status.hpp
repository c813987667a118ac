// stem/core: vocabulary shared by every room, with no I/O.
// task_status.hpp — what a result backend records about one task.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/core/task_state.hpp>
#include <stem/detail/json_fields.hpp>
#include <stem/detail/json_writer.hpp>
#include <stem/detail/text.hpp>

#include <optional>
#include <string>

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace stem {

/// Why a task failed (or was retried).
struct task_error {
    std::string type;              ///< e.g. "std::runtime_error", "timeout", "expired"
    std::string message;
    boost::json::object context;   ///< free-form detail (traceback, field path...)
    bool retryable = false;
    friend bool operator==(const task_error&, const task_error&) = default;
};

/// A task's state as last recorded.
struct task_status {
    std::string id;
    std::string name;
    task_state state = task_state::queued;
    std::optional<std::string> result;  ///< encoded by `result_encoder` (may be binary)
    std::string result_encoder = "json";
    std::optional<task_error> error;
    int attempt = 0;
    double progress = 0;                ///< 0..100
    boost::json::object progress_data;
    boost::json::object meta;
    std::string queue;
    std::string worker_id;
    std::string group_id;
    time_point created_at{};
    time_point updated_at{};
    std::optional<time_point> started_at;
    std::optional<time_point> finished_at;
    friend bool operator==(const task_status&, const task_status&) = default;
};

/// Appends the status as JSON text, written field by field (backends store one or two per task).
inline void serialize_to(std::string& out, const task_status& s) {
    out.reserve(out.size() + 320 + s.id.size() + s.name.size() + (s.result ? s.result->size() : 0));
    detail::json_writer w(out);
    w.field("id", s.id);
    w.field("name", s.name);
    w.field("state", to_string(s.state));
    if (s.result) {
        if (detail::is_json_safe_utf8(*s.result)) w.field("result", *s.result);
        else w.field("result_base64", detail::base64_encode(*s.result));
    }
    w.field("result_encoder", s.result_encoder);
    if (s.error)
        w.object("error", [&](detail::json_writer& e) {
            e.field("type", s.error->type);
            e.field("message", s.error->message);
            e.field("context", s.error->context);
            e.field("retryable", s.error->retryable);
        });
    w.field("attempt", s.attempt);
    w.field("progress", boost::json::value(s.progress));
    if (!s.progress_data.empty()) w.field("progress_data", s.progress_data);
    if (!s.meta.empty()) w.field("meta", s.meta);
    if (!s.queue.empty()) w.field("queue", s.queue);
    if (!s.worker_id.empty()) w.field("worker_id", s.worker_id);
    if (!s.group_id.empty()) w.field("group_id", s.group_id);
    w.field("created_at", s.created_at);
    w.field("updated_at", s.updated_at);
    if (s.started_at) w.field("started_at", *s.started_at);
    if (s.finished_at) w.field("finished_at", *s.finished_at);
    w.close();
}

/// The status as JSON text.
inline std::string serialize(const task_status& s) {
    std::string out;
    serialize_to(out, s);
    return out;
}

/// The status as a JSON object: the fields `serialize` writes.
inline boost::json::object to_json(const task_status& s) {
    auto v = boost::json::parse(serialize(s));
    return std::move(v.as_object());
}

inline task_status task_status_from_json(const boost::json::value& v) {
    if (!v.is_object()) throw error(errc::decode_failed, "task_status: expected a JSON object");
    detail::field_reader r(v.get_object(), "task_status", errc::decode_failed);
    task_status s;
    s.id = r.string("id");
    s.name = r.string_or("name", "");
    auto st = task_state_from_string(r.string("state"));
    if (!st) r.fail("state", "unknown state name");
    s.state = *st;
    if (r.find("result")) s.result = r.string("result");
    else if (r.find("result_base64")) {
        s.result = detail::base64_decode(r.string("result_base64"));
        if (!s.result) r.fail("result_base64", "not valid base64");
    }
    s.result_encoder = r.string_or("result_encoder", "json");
    if (auto* ev = r.find("error")) {
        if (!ev->is_object()) r.fail("error", "expected object");
        detail::field_reader er(ev->get_object(), "task_status.error", errc::decode_failed);
        s.error = task_error{er.string_or("type", ""), er.string_or("message", ""), er.object_or_empty("context"),
                             er.boolean_or("retryable", false)};
    }
    s.attempt = r.int_or("attempt", 0);
    s.progress = r.number_or("progress", 0);
    s.progress_data = r.object_or_empty("progress_data");
    s.meta = r.object_or_empty("meta");
    s.queue = r.string_or("queue", "");
    s.worker_id = r.string_or("worker_id", "");
    s.group_id = r.string_or("group_id", "");
    s.created_at = r.time("created_at").value_or(time_point{});
    s.updated_at = r.time("updated_at").value_or(time_point{});
    s.started_at = r.time("started_at");
    s.finished_at = r.time("finished_at");
    return s;
}

}  // namespace stem
