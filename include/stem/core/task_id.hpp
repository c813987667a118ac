// stem/core: vocabulary shared by every room, with no I/O.
// task_id.hpp — UUIDv7 task ids (time-ordered, RFC 9562).
#pragma once

#include <stem/core/clock.hpp>

#include <array>
#include <cstdint>
#include <random>
#include <string>

namespace stem {

namespace detail {
/// splitmix64: a small, fast generator seeded once per thread from random_device.
struct id_random {
    std::uint64_t state;
    id_random() {
        std::random_device rd;
        state = (std::uint64_t(rd()) << 32) ^ rd() ^ std::uint64_t(reinterpret_cast<std::uintptr_t>(this));
    }
    std::uint64_t next() noexcept {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};
inline id_random& thread_id_random() {
    thread_local id_random r;
    return r;
}
}  // namespace detail

/// A new UUIDv7 in its 36-character text form. Ids made by one thread within
/// one millisecond sort in creation order (a 12-bit sequence follows the time).
inline std::string make_task_id() {
    thread_local std::uint64_t last_ms = 0;
    thread_local std::uint16_t seq = 0;
    auto& rnd = detail::thread_id_random();
    auto ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch()).count());
    if (ms <= last_ms) {
        ms = last_ms;
        if (++seq > 0x0fff) { ++ms; seq = 0; }
    } else {
        seq = static_cast<std::uint16_t>(rnd.next() & 0x03ff);  // leave room to count up
    }
    last_ms = ms;
    std::uint64_t hi = (ms << 16) | 0x7000u | seq;
    std::uint64_t lo = (rnd.next() & 0x3fffffffffffffffull) | 0x8000000000000000ull;
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(36, '-');
    int pos = 0;
    auto put = [&](std::uint64_t v, int nibbles) {
        for (int i = nibbles - 1; i >= 0; --i) {
            if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
            out[pos++] = hex[(v >> (i * 4)) & 0xf];
        }
    };
    put(hi, 16);
    put(lo, 16);
    return out;
}

}  // namespace stem
