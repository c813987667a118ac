// stem/contracts: one concept per contract, and its type-erased twin.
// result_backend.hpp — the history contract: statuses, waiting, groups/chords, heartbeats.
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/core/task_status.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

namespace stem {

/// Which statuses `list` returns, oldest update first.
struct status_filter {
    std::optional<task_state> state{};
    std::string name{};          ///< task name; empty: any
    std::size_t limit = 100;
    std::size_t offset = 0;
};

/// A group (or the header of a chord) before its children run.
struct group_descriptor {
    std::string id;
    std::vector<std::string> task_ids;  ///< children in signature order
    boost::json::object meta{};
};

/// A group's progress. `results` holds each finished child's final status by id.
struct group_record {
    std::string id;
    std::vector<std::string> task_ids;
    std::map<std::string, task_status> results;
    bool chord_claimed = false;
    boost::json::object meta;
    time_point created_at{};
    std::size_t expected() const noexcept { return task_ids.size(); }
    std::size_t completed() const noexcept { return results.size(); }
};

/// A worker's liveness record.
struct worker_heartbeat {
    std::string worker_id;
    std::string namespace_ = "stem";
    std::string host;
    std::int64_t pid = 0;
    std::vector<std::string> queues;
    std::uint64_t inflight = 0;
    std::uint64_t processed = 0;
    std::uint64_t concurrency = 0;
    time_point started_at{};
    time_point sent_at{};
    boost::json::object extra{};
};

/// A heartbeat as JSON (for adapters that store documents).
inline boost::json::object to_json(const worker_heartbeat& hb) {
    boost::json::array queues;
    for (auto& q : hb.queues) queues.emplace_back(q);
    return {{"worker_id", hb.worker_id}, {"namespace", hb.namespace_}, {"host", hb.host}, {"pid", hb.pid},
            {"queues", std::move(queues)}, {"inflight", hb.inflight}, {"processed", hb.processed},
            {"concurrency", hb.concurrency}, {"started_at", format_time(hb.started_at)},
            {"sent_at", format_time(hb.sent_at)}, {"extra", hb.extra}};
}

/// Reads what `to_json(worker_heartbeat)` wrote; malformed input throws naming the field.
inline worker_heartbeat worker_heartbeat_from_json(const boost::json::value& v) {
    if (!v.is_object()) throw error(errc::decode_failed, "worker_heartbeat: expected a JSON object");
    detail::field_reader r(v.get_object(), "worker_heartbeat", errc::decode_failed);
    worker_heartbeat hb;
    hb.worker_id = r.string("worker_id");
    hb.namespace_ = r.string_or("namespace", "stem");
    hb.host = r.string_or("host", "");
    hb.pid = r.integer_or("pid", 0);
    if (auto* q = r.find("queues")) {
        if (!q->is_array()) r.fail("queues", "expected array");
        for (auto& x : q->get_array()) {
            if (!x.is_string()) r.fail("queues", "expected strings");
            hb.queues.emplace_back(x.get_string());
        }
    }
    hb.inflight = std::uint64_t(r.integer_or("inflight", 0));
    hb.processed = std::uint64_t(r.integer_or("processed", 0));
    hb.concurrency = std::uint64_t(r.integer_or("concurrency", 0));
    hb.started_at = r.time("started_at").value_or(time_point{});
    hb.sent_at = r.time("sent_at").value_or(time_point{});
    hb.extra = r.object_or_empty("extra");
    return hb;
}

namespace detail {
/// What an adapter implements to feed a status_watch.
struct watch_source {
    virtual ~watch_source() = default;
    virtual awaitable<std::optional<task_status>> next(std::chrono::milliseconds timeout) = 0;
};
}  // namespace detail

/// A stream of one task's status updates, in the order they were written,
/// from the moment the watch was opened.
class status_watch {
public:
    explicit status_watch(std::shared_ptr<detail::watch_source> s) : src_(std::move(s)) {}
    /// The next update, or nullopt if none arrives within `timeout`.
    awaitable<std::optional<task_status>> next(std::chrono::milliseconds timeout) { return src_->next(timeout); }

private:
    std::shared_ptr<detail::watch_source> src_;
};

/// What a result backend guarantees beyond the contract; the runtime adapts where one is missing.
struct backend_capabilities {
    /// A caller may start a task's `running` write and, without waiting for it, the task's
    /// later writes: the `running` status never replaces them. (The backend applies one task's
    /// writes in the order they began, or drops a `running` status older than the stored one.)
    bool ordered_writes = false;
    /// The store is in this process and `set` finishes without waiting on I/O: a caller
    /// gains nothing by overlapping a write with other work.
    bool in_process = false;
};

/// The result-backend contract. Every awaitable honours Asio cancellation.
///
/// * `set` replaces a task's whole status (so a success after a failure carries no error);
///   `ttl` bounds how long it is kept (nullopt: the backend's default). The awaitable it
///   returns owns what it needs: the caller may destroy the status argument before awaiting
///   it (a coroutine `set` taking the status by value does this by itself).
/// * `wait(id, timeout)` returns as soon as the status is terminal, without busy polling;
///   on timeout it returns the latest status (or nullopt if there is none).
/// * `add_group_result` records one finished child and returns how many distinct children
///   have finished; it is atomic under concurrent completions. `claim_chord` returns true
///   exactly once per group initialisation. `init_group` on an existing id resets it.
template <class R>
concept result_backend = requires(R& r, task_status st, std::string s, std::optional<std::chrono::milliseconds> ttl,
                                  std::chrono::milliseconds ms, status_filter f, std::optional<task_state> state,
                                  group_descriptor g, worker_heartbeat hb) {
    { r.set(std::move(st), ttl) } -> std::same_as<awaitable<void>>;
    { r.get(s) } -> std::same_as<awaitable<std::optional<task_status>>>;
    { r.wait(s, ms) } -> std::same_as<awaitable<std::optional<task_status>>>;
    { r.watch(s) } -> std::same_as<awaitable<status_watch>>;
    { r.list(f) } -> std::same_as<awaitable<std::vector<task_status>>>;
    { r.count(state) } -> std::same_as<awaitable<std::uint64_t>>;
    { r.init_group(std::move(g), ttl) } -> std::same_as<awaitable<void>>;
    { r.add_group_result(s, std::move(st)) } -> std::same_as<awaitable<std::size_t>>;
    { r.get_group(s) } -> std::same_as<awaitable<std::optional<group_record>>>;
    { r.claim_chord(s) } -> std::same_as<awaitable<bool>>;
    { r.set_heartbeat(std::move(hb), ms) } -> std::same_as<awaitable<void>>;
    { r.list_heartbeats() } -> std::same_as<awaitable<std::vector<worker_heartbeat>>>;
    { r.capabilities() } -> std::same_as<backend_capabilities>;
};

}  // namespace stem
