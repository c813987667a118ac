// stem/contracts: one concept per contract, and its type-erased twin.
// any_broker.hpp — a broker chosen at run time (from a URL, a config file).
#pragma once

#include <stem/contracts/broker.hpp>

#include <memory>
#include <type_traits>

namespace stem {

/// Holds any type that models stem::broker. Copies share the held broker.
class any_broker {
public:
    template <broker B>
        requires(!std::is_same_v<std::remove_cvref_t<B>, any_broker>)
    any_broker(B b) : p_(std::make_shared<model<B>>(std::move(b))) {}

    awaitable<void> publish(envelope e) { return p_->publish(std::move(e)); }
    awaitable<void> publish_batch(std::vector<envelope> b) { return p_->publish_batch(std::move(b)); }
    awaitable<void> broadcast(std::string ch, envelope e) { return p_->broadcast(std::move(ch), std::move(e)); }
    awaitable<std::vector<delivery>> consume(const subscription& s, std::size_t max, std::chrono::milliseconds wait) {
        return p_->consume(s, max, wait);
    }
    awaitable<bool> ack(const delivery& d) { return p_->ack(d); }
    awaitable<bool> nack(const delivery& d, bool requeue) { return p_->nack(d, requeue); }
    awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) { return p_->extend_lease(d, by); }
    awaitable<bool> retry(const delivery& d, envelope next) { return p_->retry(d, std::move(next)); }
    awaitable<bool> dead_letter(const delivery& d, std::string reason) { return p_->dead_letter(d, std::move(reason)); }
    awaitable<dead_letter_page> list_dead_letters(std::string q, std::size_t limit, std::size_t offset) {
        return p_->list_dead_letters(std::move(q), limit, offset);
    }
    awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string id) { return p_->get_dead_letter(std::move(id)); }
    awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string q, replay_options o) {
        return p_->replay_dead_letters(std::move(q), o);
    }
    awaitable<std::uint64_t> purge_dead_letters(std::string q, bool dry_run) { return p_->purge_dead_letters(std::move(q), dry_run); }
    awaitable<std::uint64_t> purge(std::string q) { return p_->purge(std::move(q)); }
    awaitable<queue_stats> stats(std::string q) { return p_->stats(std::move(q)); }
    awaitable<std::vector<std::string>> queues() { return p_->queues(); }
    broker_capabilities capabilities() const { return p_->capabilities(); }

    /// The held broker if it is a B, else nullptr.
    template <broker B>
    B* target() noexcept {
        auto* m = dynamic_cast<model<B>*>(p_.get());
        return m ? &m->b : nullptr;
    }

private:
    struct concept_t {
        virtual ~concept_t() = default;
        virtual awaitable<void> publish(envelope) = 0;
        virtual awaitable<void> publish_batch(std::vector<envelope>) = 0;
        virtual awaitable<void> broadcast(std::string, envelope) = 0;
        virtual awaitable<std::vector<delivery>> consume(const subscription&, std::size_t, std::chrono::milliseconds) = 0;
        virtual awaitable<bool> ack(const delivery&) = 0;
        virtual awaitable<bool> nack(const delivery&, bool) = 0;
        virtual awaitable<bool> extend_lease(const delivery&, std::chrono::milliseconds) = 0;
        virtual awaitable<bool> retry(const delivery&, envelope) = 0;
        virtual awaitable<bool> dead_letter(const delivery&, std::string) = 0;
        virtual awaitable<dead_letter_page> list_dead_letters(std::string, std::size_t, std::size_t) = 0;
        virtual awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string) = 0;
        virtual awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string, replay_options) = 0;
        virtual awaitable<std::uint64_t> purge_dead_letters(std::string, bool) = 0;
        virtual awaitable<std::uint64_t> purge(std::string) = 0;
        virtual awaitable<queue_stats> stats(std::string) = 0;
        virtual awaitable<std::vector<std::string>> queues() = 0;
        virtual broker_capabilities capabilities() const = 0;
    };
    template <class B>
    struct model final : concept_t {
        explicit model(B x) : b(std::move(x)) {}
        awaitable<void> publish(envelope e) override { return b.publish(std::move(e)); }
        awaitable<void> publish_batch(std::vector<envelope> v) override { return b.publish_batch(std::move(v)); }
        awaitable<void> broadcast(std::string c, envelope e) override { return b.broadcast(std::move(c), std::move(e)); }
        awaitable<std::vector<delivery>> consume(const subscription& s, std::size_t n, std::chrono::milliseconds w) override {
            return b.consume(s, n, w);
        }
        awaitable<bool> ack(const delivery& d) override { return b.ack(d); }
        awaitable<bool> nack(const delivery& d, bool r) override { return b.nack(d, r); }
        awaitable<bool> extend_lease(const delivery& d, std::chrono::milliseconds by) override { return b.extend_lease(d, by); }
        awaitable<bool> retry(const delivery& d, envelope e) override { return b.retry(d, std::move(e)); }
        awaitable<bool> dead_letter(const delivery& d, std::string r) override { return b.dead_letter(d, std::move(r)); }
        awaitable<dead_letter_page> list_dead_letters(std::string q, std::size_t l, std::size_t o) override {
            return b.list_dead_letters(std::move(q), l, o);
        }
        awaitable<std::optional<dead_letter_entry>> get_dead_letter(std::string id) override { return b.get_dead_letter(std::move(id)); }
        awaitable<std::vector<dead_letter_entry>> replay_dead_letters(std::string q, replay_options o) override {
            return b.replay_dead_letters(std::move(q), o);
        }
        awaitable<std::uint64_t> purge_dead_letters(std::string q, bool d) override { return b.purge_dead_letters(std::move(q), d); }
        awaitable<std::uint64_t> purge(std::string q) override { return b.purge(std::move(q)); }
        awaitable<queue_stats> stats(std::string q) override { return b.stats(std::move(q)); }
        awaitable<std::vector<std::string>> queues() override { return b.queues(); }
        broker_capabilities capabilities() const override { return b.capabilities(); }
        B b;
    };
    std::shared_ptr<concept_t> p_;
};

static_assert(broker<any_broker>);

}  // namespace stem
