// stem/contracts: one concept per contract, and its type-erased twin.
// any_backend.hpp — a result backend chosen at run time (from a URL, a config file).
#pragma once

#include <stem/contracts/result_backend.hpp>

#include <memory>
#include <type_traits>

namespace stem {

/// Holds any type that models stem::result_backend. Copies share the held backend.
class any_backend {
public:
    template <result_backend R>
        requires(!std::is_same_v<std::remove_cvref_t<R>, any_backend>)
    any_backend(R r) : p_(std::make_shared<model<R>>(std::move(r))) {}

    using opt_ms = std::optional<std::chrono::milliseconds>;
    awaitable<void> set(task_status s, opt_ms ttl) { return p_->set(std::move(s), ttl); }
    awaitable<std::optional<task_status>> get(std::string id) { return p_->get(std::move(id)); }
    awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds t) { return p_->wait(std::move(id), t); }
    awaitable<status_watch> watch(std::string id) { return p_->watch(std::move(id)); }
    awaitable<std::vector<task_status>> list(status_filter f) { return p_->list(std::move(f)); }
    awaitable<std::uint64_t> count(std::optional<task_state> s) { return p_->count(s); }
    awaitable<void> init_group(group_descriptor g, opt_ms ttl) { return p_->init_group(std::move(g), ttl); }
    awaitable<std::size_t> add_group_result(std::string g, task_status s) { return p_->add_group_result(std::move(g), std::move(s)); }
    awaitable<std::optional<group_record>> get_group(std::string g) { return p_->get_group(std::move(g)); }
    awaitable<bool> claim_chord(std::string g) { return p_->claim_chord(std::move(g)); }
    awaitable<void> set_heartbeat(worker_heartbeat hb, std::chrono::milliseconds ttl) { return p_->set_heartbeat(std::move(hb), ttl); }
    awaitable<std::vector<worker_heartbeat>> list_heartbeats() { return p_->list_heartbeats(); }
    backend_capabilities capabilities() const { return p_->capabilities(); }

    /// The held backend if it is an R, else nullptr.
    template <result_backend R>
    R* target() noexcept {
        auto* m = dynamic_cast<model<R>*>(p_.get());
        return m ? &m->r : nullptr;
    }

private:
    struct concept_t {
        virtual ~concept_t() = default;
        virtual awaitable<void> set(task_status, opt_ms) = 0;
        virtual awaitable<std::optional<task_status>> get(std::string) = 0;
        virtual awaitable<std::optional<task_status>> wait(std::string, std::chrono::milliseconds) = 0;
        virtual awaitable<status_watch> watch(std::string) = 0;
        virtual awaitable<std::vector<task_status>> list(status_filter) = 0;
        virtual awaitable<std::uint64_t> count(std::optional<task_state>) = 0;
        virtual awaitable<void> init_group(group_descriptor, opt_ms) = 0;
        virtual awaitable<std::size_t> add_group_result(std::string, task_status) = 0;
        virtual awaitable<std::optional<group_record>> get_group(std::string) = 0;
        virtual awaitable<bool> claim_chord(std::string) = 0;
        virtual awaitable<void> set_heartbeat(worker_heartbeat, std::chrono::milliseconds) = 0;
        virtual awaitable<std::vector<worker_heartbeat>> list_heartbeats() = 0;
        virtual backend_capabilities capabilities() const = 0;
    };
    template <class R>
    struct model final : concept_t {
        explicit model(R x) : r(std::move(x)) {}
        awaitable<void> set(task_status s, opt_ms t) override { return r.set(std::move(s), t); }
        awaitable<std::optional<task_status>> get(std::string id) override { return r.get(std::move(id)); }
        awaitable<std::optional<task_status>> wait(std::string id, std::chrono::milliseconds t) override { return r.wait(std::move(id), t); }
        awaitable<status_watch> watch(std::string id) override { return r.watch(std::move(id)); }
        awaitable<std::vector<task_status>> list(status_filter f) override { return r.list(std::move(f)); }
        awaitable<std::uint64_t> count(std::optional<task_state> s) override { return r.count(s); }
        awaitable<void> init_group(group_descriptor g, opt_ms t) override { return r.init_group(std::move(g), t); }
        awaitable<std::size_t> add_group_result(std::string g, task_status s) override { return r.add_group_result(std::move(g), std::move(s)); }
        awaitable<std::optional<group_record>> get_group(std::string g) override { return r.get_group(std::move(g)); }
        awaitable<bool> claim_chord(std::string g) override { return r.claim_chord(std::move(g)); }
        awaitable<void> set_heartbeat(worker_heartbeat hb, std::chrono::milliseconds t) override { return r.set_heartbeat(std::move(hb), t); }
        awaitable<std::vector<worker_heartbeat>> list_heartbeats() override { return r.list_heartbeats(); }
        backend_capabilities capabilities() const override { return r.capabilities(); }
        R r;
    };
    std::shared_ptr<concept_t> p_;
};

static_assert(result_backend<any_backend>);

}  // namespace stem
