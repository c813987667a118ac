// The broker and backend contract kits, run against the memory adapters, directly and
// through the type-erased any_broker / any_backend; the memory broker's wake-ups.
#include "contracts/backend_kit.hpp"
#include "contracts/broker_kit.hpp"

#include <stem/adapters/memory.hpp>
#include <stem/contracts/any_backend.hpp>
#include <stem/contracts/any_broker.hpp>

namespace {

struct memory_broker_fixture {
    static stem::memory_broker make() { return stem::memory_broker{}; }
    static stem::memory_broker peer(stem::memory_broker& b) { return b; }
};
struct any_memory_broker_fixture {
    static stem::any_broker make() { return stem::any_broker{stem::memory_broker{}}; }
    static stem::any_broker peer(stem::any_broker& b) { return b; }
};
struct memory_backend_fixture {
    static stem::memory_backend make() { return stem::memory_backend{}; }
    static stem::memory_backend peer(stem::memory_backend& r) { return r; }
};
struct any_memory_backend_fixture {
    static stem::any_backend make() { return stem::any_backend{stem::memory_backend{}}; }
    static stem::any_backend peer(stem::any_backend& r) { return r; }
};

}  // namespace

STEM_BROKER_CONTRACT_TESTS(memory_broker_fixture, "memory")
STEM_BROKER_CONTRACT_TESTS(any_memory_broker_fixture, "any(memory)")
STEM_BACKEND_CONTRACT_TESTS(memory_backend_fixture, "memory")
STEM_BACKEND_CONTRACT_TESTS(any_memory_backend_fixture, "any(memory)")

TEST_CASE("adapters.memory: a waiting consumer takes a delayed task when it falls due and an expired lease at once") {
    stem_test::run([]() -> stem_test::awaitable<void> {
        stem::memory_broker b;
        co_await broker_kit::wakes_when_delay_and_lease_end(b);
    }, std::chrono::seconds(60));
}
