// stem/contracts: one concept per contract, and its type-erased twin.
// broker.hpp — the transport contract: publish, consume with a lease, ack/nack, dead letters.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/core/envelope.hpp>

#include <chrono>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

namespace stem {

template <class T>
using awaitable = boost::asio::awaitable<T>;

/// What one consumer reads: queues (priority honoured across all of them) and
/// broadcast channels. `consumer` names the reader: broadcast fan-out is once
/// per consumer name.
struct subscription {
    std::vector<std::string> queues{"default"};
    std::vector<std::string> broadcasts{};
    std::string consumer = "default-consumer";
};

/// One leased delivery of an envelope. `tag` and `token` identify the lease;
/// an ack, nack or extension with a token that is no longer current is refused.
struct delivery {
    envelope env;
    std::string queue;            ///< queue (or broadcast channel) it came from
    std::uint64_t tag = 0;        ///< adapter's id of the delivery
    std::uint64_t token = 0;      ///< lease generation
    std::string locator;          ///< adapter-specific extra (stream entry id, row id...)
    time_point lease_expires{};
    bool broadcast = false;       ///< broadcast deliveries need no ack
};

/// Per-queue counters.
struct queue_stats {
    std::string queue;
    std::uint64_t pending = 0;    ///< ready to deliver now
    std::uint64_t delayed = 0;    ///< waiting for not_before
    std::uint64_t inflight = 0;   ///< delivered, not yet acked
    std::uint64_t dead = 0;       ///< in the dead-letter queue
    friend bool operator==(const queue_stats&, const queue_stats&) = default;
};

/// A dead-lettered envelope and why.
struct dead_letter_entry {
    envelope env;
    std::string reason;
    time_point dead_at{};
};

/// A page of dead letters, newest last.
struct dead_letter_page {
    std::vector<dead_letter_entry> items;
    std::uint64_t total = 0;      ///< all dead letters of the queue
};

/// What `replay_dead_letters` does.
struct replay_options {
    std::size_t limit = 100;
    bool dry_run = false;                          ///< report what would be replayed, change nothing
    std::optional<std::chrono::milliseconds> delay{};  ///< replay hidden until now + delay
};

/// What a broker can do; the runtime adapts where a capability is missing.
struct broker_capabilities {
    bool priority = true;
    bool delay = true;
    bool cross_process_broadcast = false;
    bool durable = false;
};

/// The transport contract. Every awaitable honours Asio cancellation.
///
/// * `publish`/`publish_batch` store envelopes (delayed ones hidden until `not_before`).
/// * `consume(sub, max, wait)` returns 1..max deliveries, highest priority first across the
///   subscription's queues, waiting up to `wait` (empty on timeout). Each delivery is leased
///   for its envelope's `visibility_timeout` (or the adapter default); an unacked delivery
///   whose lease expires is delivered again, with the same envelope id.
/// * `ack`, `nack(requeue)`, `extend_lease`, `retry` and `dead_letter` return false when the
///   lease is no longer held (expired and granted to another consumer) and change nothing.
/// * `retry(d, next)` replaces the delivered envelope with `next` (new attempt, `not_before`)
///   in one step; it never produces a dead letter.
template <class B>
concept broker = requires(B& b, envelope e, std::vector<envelope> batch, const subscription& sub,
                          const delivery& d, std::string s, std::size_t n, std::chrono::milliseconds ms,
                          replay_options ro) {
    { b.publish(std::move(e)) } -> std::same_as<awaitable<void>>;
    { b.publish_batch(std::move(batch)) } -> std::same_as<awaitable<void>>;
    { b.broadcast(s, std::move(e)) } -> std::same_as<awaitable<void>>;
    { b.consume(sub, n, ms) } -> std::same_as<awaitable<std::vector<delivery>>>;
    { b.ack(d) } -> std::same_as<awaitable<bool>>;
    { b.nack(d, true) } -> std::same_as<awaitable<bool>>;
    { b.extend_lease(d, ms) } -> std::same_as<awaitable<bool>>;
    { b.retry(d, std::move(e)) } -> std::same_as<awaitable<bool>>;
    { b.dead_letter(d, s) } -> std::same_as<awaitable<bool>>;
    { b.list_dead_letters(s, n, n) } -> std::same_as<awaitable<dead_letter_page>>;
    { b.get_dead_letter(s) } -> std::same_as<awaitable<std::optional<dead_letter_entry>>>;
    { b.replay_dead_letters(s, ro) } -> std::same_as<awaitable<std::vector<dead_letter_entry>>>;
    { b.purge_dead_letters(s, true) } -> std::same_as<awaitable<std::uint64_t>>;
    { b.purge(s) } -> std::same_as<awaitable<std::uint64_t>>;
    { b.stats(s) } -> std::same_as<awaitable<queue_stats>>;
    { b.queues() } -> std::same_as<awaitable<std::vector<std::string>>>;
    { b.capabilities() } -> std::same_as<broker_capabilities>;
};

}  // namespace stem
