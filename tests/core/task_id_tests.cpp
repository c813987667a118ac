// Tests of stem/core/task_id.hpp: UUIDv7 text form, uniqueness and creation order.
#include <doctest/doctest.h>

#include <stem/core/clock.hpp>
#include <stem/core/task_id.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace {

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/// The 48-bit millisecond timestamp at the front of a UUIDv7.
std::int64_t id_millis(const std::string& id) {
    std::string hex = id.substr(0, 8) + id.substr(9, 4);
    return static_cast<std::int64_t>(std::stoull(hex, nullptr, 16));
}

std::int64_t now_millis() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(stem::clock::now().time_since_epoch()).count();
}

}  // namespace

TEST_CASE("core.task_id: UUIDv7 text layout") {
    for (int i = 0; i < 100; ++i) {
        auto id = stem::make_task_id();
        CAPTURE(id);
        REQUIRE(id.size() == 36);
        for (std::size_t k = 0; k < id.size(); ++k) {
            if (k == 8 || k == 13 || k == 18 || k == 23) CHECK(id[k] == '-');
            else CHECK(is_lower_hex(id[k]));
        }
        CHECK(id[14] == '7');
        CHECK(std::string("89ab").find(id[19]) != std::string::npos);
    }
}

TEST_CASE("core.task_id: the leading timestamp is the creation time in milliseconds") {
    // A fresh thread, so no earlier burst of ids on this thread has carried the clock ahead.
    std::int64_t before = 0, after = 0;
    std::string id;
    std::thread([&] {
        before = now_millis();
        id = stem::make_task_id();
        after = now_millis();
    }).join();
    CAPTURE(id);
    CHECK(id_millis(id) >= before);
    CHECK(id_millis(id) <= after);
}

TEST_CASE("core.task_id: 10000 ids are unique") {
    std::unordered_set<std::string> seen;
    for (int i = 0; i < 10000; ++i) seen.insert(stem::make_task_id());
    CHECK(seen.size() == 10000);
}

TEST_CASE("core.task_id: ids made in sequence by one thread sort in creation order") {
    std::vector<std::string> ids;
    ids.reserve(20000);
    for (int i = 0; i < 20000; ++i) ids.push_back(stem::make_task_id());
    for (std::size_t i = 1; i < ids.size(); ++i) {
        if (!(ids[i - 1] < ids[i])) {
            CAPTURE(i);
            CAPTURE(ids[i - 1]);
            CAPTURE(ids[i]);
            FAIL("ids out of creation order");
        }
    }
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    // Many were made within one millisecond, so the sequence field did the ordering.
    CHECK(id_millis(ids.front()) <= id_millis(ids.back()));
}

TEST_CASE("core.task_id: ids made on several threads are unique") {
    constexpr int threads = 4, per_thread = 5000;
    std::vector<std::vector<std::string>> made(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&made, t] {
            made[t].reserve(per_thread);
            for (int i = 0; i < per_thread; ++i) made[t].push_back(stem::make_task_id());
        });
    for (auto& th : pool) th.join();
    std::unordered_set<std::string> all;
    for (const auto& v : made) {
        CHECK(std::is_sorted(v.begin(), v.end()));
        all.insert(v.begin(), v.end());
    }
    CHECK(all.size() == std::size_t{threads} * per_thread);
}
