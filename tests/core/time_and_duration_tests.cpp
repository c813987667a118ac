// Tests of stem/core/clock.hpp (RFC 3339 text) and stem/core/duration.hpp (duration and rate text).
#include <doctest/doctest.h>

#include <stem/core/clock.hpp>
#include <stem/core/duration.hpp>
#include <stem/core/error.hpp>

#include "expect_error.hpp"

#include <chrono>
#include <string>

using namespace std::chrono_literals;
using core_tests::error_of;

namespace {
// 2026-01-02T03:04:05Z
constexpr std::int64_t base_us = 1767323045LL * 1'000'000;
}  // namespace

TEST_CASE("core.time: unix micros convert both ways") {
    auto t = stem::from_unix_micros(base_us + 7);
    CHECK(stem::to_unix_micros(t) == base_us + 7);
    CHECK(stem::to_unix_micros(stem::time_point{}) == 0);
    CHECK(stem::from_unix_micros(0) == stem::time_point{});
    CHECK(stem::to_unix_micros(stem::from_unix_micros(-1)) == -1);
}

TEST_CASE("core.time: format_time writes UTC with six fraction digits") {
    CHECK(stem::format_time(stem::from_unix_micros(base_us)) == "2026-01-02T03:04:05.000000Z");
    CHECK(stem::format_time(stem::from_unix_micros(base_us + 123456)) == "2026-01-02T03:04:05.123456Z");
    CHECK(stem::format_time(stem::time_point{}) == "1970-01-01T00:00:00.000000Z");
    CHECK(stem::format_time(stem::from_unix_micros(-1)) == "1969-12-31T23:59:59.999999Z");
    // 2024-02-29T23:59:59.5Z, a leap day.
    CHECK(stem::format_time(stem::from_unix_micros(1709251199500000)) == "2024-02-29T23:59:59.500000Z");
    // Sub-microsecond parts are dropped, not rounded.
    CHECK(stem::format_time(stem::from_unix_micros(base_us) + 999ns) == "2026-01-02T03:04:05.000000Z");
}

TEST_CASE("core.time: parse_time reads Z, fractions and offsets") {
    auto base = stem::from_unix_micros(base_us);
    CHECK(stem::parse_time("2026-01-02T03:04:05Z") == base);
    CHECK(stem::parse_time("2026-01-02t03:04:05z") == base);
    CHECK(stem::parse_time("2026-01-02 03:04:05Z") == base);
    CHECK(stem::parse_time("2026-01-02T03:04:05.5Z") == base + 500ms);
    CHECK(stem::parse_time("2026-01-02T03:04:05.123456Z") == base + 123456us);
    CHECK(stem::parse_time("2026-01-02T03:04:05.000001Z") == base + 1us);
    // Digits past the sixth are ignored.
    CHECK(stem::parse_time("2026-01-02T03:04:05.1234569Z") == base + 123456us);
    CHECK(stem::parse_time("2026-01-02T05:04:05+02:00") == base);
    CHECK(stem::parse_time("2026-01-02T05:34:05.25+02:30") == base + 250ms);
    CHECK(stem::parse_time("2026-01-01T22:04:05-05:00") == base);
    CHECK(stem::parse_time("2026-01-02T03:04:05+00:00") == base);
    CHECK(stem::parse_time("1970-01-01T00:00:00Z") == stem::time_point{});
}

TEST_CASE("core.time: format_time and parse_time round trip") {
    for (std::int64_t us : {base_us, base_us + 1, base_us + 999'999, std::int64_t{0}, std::int64_t{-1},
                            std::int64_t{951'782'400'000'000} /* 2000-02-29 */, std::int64_t{4'102'444'799'999'999}}) {
        CAPTURE(us);
        auto t = stem::from_unix_micros(us);
        CHECK(stem::parse_time(stem::format_time(t)) == t);
    }
}

TEST_CASE("core.time: invalid texts are rejected with invalid_argument") {
    for (std::string bad : {"", "2026-01-02", "2026-01-02T03:04:05", "2026-01-02T03:04Z", "2026-1-02T03:04:05Z",
                            "26-01-02T03:04:05Z", "2026-01-02X03:04:05Z", "2026-01-02T03:04:05.Z",
                            "2026-01-02T03:04:05ZZ", "2026-01-02T03:04:05Z ", " 2026-01-02T03:04:05Z",
                            "2026-01-02T03:04:05+0200", "2026-01-02T03:04:05+02", "2026-13-02T03:04:05Z",
                            "2026-00-02T03:04:05Z", "2026-02-29T03:04:05Z", "2026-01-32T03:04:05Z",
                            "2026-01-02T24:00:00Z", "2026-01-02T03:60:05Z", "2026-01-02T03:04:61Z",
                            "2026-01-02T03:04:05.12a Z", "yesterday", "2026-01-02T03:04:05UTC"}) {
        CAPTURE(bad);
        auto msg = error_of([&] { (void)stem::parse_time(bad); }, stem::errc::invalid_argument);
        CHECK(msg == std::string("not an RFC 3339 time: '") + bad + "'");
    }
}

// Regression test for a bug found in review.
TEST_CASE("core.time: offsets out of range are rejected") {
    for (std::string bad : {"2026-01-02T03:04:05+99:99", "2026-01-02T03:04:05+02:60", "2026-01-02T03:04:05-24:00"}) {
        CAPTURE(bad);
        (void)error_of([&] { (void)stem::parse_time(bad); }, stem::errc::invalid_argument);
    }
}

TEST_CASE("core.duration: parse_duration units and sums") {
    CHECK(stem::parse_duration("250ms") == 250ms);
    CHECK(stem::parse_duration("5s") == 5s);
    CHECK(stem::parse_duration("1.5s") == 1500ms);
    CHECK(stem::parse_duration("5m") == 5min);
    CHECK(stem::parse_duration("2h") == 2h);
    CHECK(stem::parse_duration("1h30m") == 90min);
    CHECK(stem::parse_duration("1d") == 24h);
    CHECK(stem::parse_duration("1m30s500ms") == 90'500ms);
    CHECK(stem::parse_duration("0s") == 0ms);
    CHECK(stem::parse_duration("0.25m") == 15s);
    CHECK(stem::parse_duration("10") == 10s);  // a bare number means seconds
    CHECK(stem::parse_duration("0.5") == 500ms);
}

TEST_CASE("core.duration: parse_duration rejects malformed text") {
    for (std::string bad : {"", "5x", "m", "ms", "5 s", " 5s", "5s ", "-5s", "5S", "1h30", "5sm", ".s", "1e3s", "s5"}) {
        CAPTURE(bad);
        auto msg = error_of([&] { (void)stem::parse_duration(bad); }, stem::errc::invalid_argument);
        CHECK(msg == std::string("not a duration: '") + bad + "'");
    }
}

// Regression test for a bug found in review.
TEST_CASE("core.duration: numbers with two dots are rejected") {
    for (std::string bad : {"1.2.3s", "1..5s"}) {
        CAPTURE(bad);
        (void)error_of([&] { (void)stem::parse_duration(bad); }, stem::errc::invalid_argument);
    }
}

TEST_CASE("core.duration: format_duration picks the shortest exact unit") {
    CHECK(stem::format_duration(250ms) == "250ms");
    CHECK(stem::format_duration(1500ms) == "1500ms");
    CHECK(stem::format_duration(5s) == "5s");
    CHECK(stem::format_duration(90s) == "90s");
    CHECK(stem::format_duration(3min) == "3m");
    CHECK(stem::format_duration(90min) == "90m");
    CHECK(stem::format_duration(2h) == "2h");
    CHECK(stem::format_duration(48h) == "48h");
    CHECK(stem::format_duration(0ms) == "0s");
    CHECK(stem::format_duration(1ms) == "1ms");
}

TEST_CASE("core.duration: format_duration output parses back to the same duration") {
    for (auto d : {1ms, 250ms, 1500ms, 1000ms, 59'000ms, 60'000ms, 90'000ms, 3'600'000ms, 5'400'000ms, 86'400'000ms}) {
        CAPTURE(d.count());
        CHECK(stem::parse_duration(stem::format_duration(d)) == d);
    }
}

TEST_CASE("core.duration: parse_rate reads tokens per period") {
    CHECK(stem::parse_rate("10/s") == stem::rate{10, 1s});
    CHECK(stem::parse_rate("100/m") == stem::rate{100, 1min});
    CHECK(stem::parse_rate("5/2s") == stem::rate{5, 2s});
    CHECK(stem::parse_rate("1/h") == stem::rate{1, 1h});
    CHECK(stem::parse_rate("100/5m") == stem::rate{100, 5min});
    CHECK(stem::parse_rate("3/d") == stem::rate{3, 24h});
    CHECK(stem::parse_rate("7/250ms") == stem::rate{7, 250ms});
    CHECK(stem::parse_rate("1000000/s").tokens == 1'000'000);
    // Default-constructed rate: nothing per second.
    CHECK(stem::rate{} == stem::rate{0, 1s});
}

TEST_CASE("core.duration: parse_rate rejects malformed text") {
    for (std::string bad : {"x/s", "0/s", "10/", "10", "/s", "", "-1/s", "1.5/s", "10/x", "10/0s", "10/0", "10//s",
                            "10 /s", "10/ s", "10/s/m"}) {
        CAPTURE(bad);
        auto msg = error_of([&] { (void)stem::parse_rate(bad); }, stem::errc::invalid_argument);
        CHECK(msg == std::string("not a rate (expected e.g. '10/s'): '") + bad + "'");
    }
}
