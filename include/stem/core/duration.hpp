// stem/core: vocabulary shared by every room, with no I/O.
// duration.hpp — duration text ("250ms", "5m", "1h30m") and rate text ("10/s", "100/5m").
#pragma once

#include <stem/core/error.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace stem {

/// Parses a duration such as `250ms`, `5s`, `1.5s`, `5m`, `2h`, `1d` or a
/// sum `1h30m`. A bare number means seconds. Throws stem::error(invalid_argument).
inline std::chrono::milliseconds parse_duration(std::string_view text) {
    auto fail = [&] { return error(errc::invalid_argument, fmt::format("not a duration: '{}'", text)); };
    if (text.empty()) throw fail();
    double total_ms = 0;
    std::size_t p = 0;
    while (p < text.size()) {
        std::size_t start = p;
        int dots = 0;
        while (p < text.size() && ((text[p] >= '0' && text[p] <= '9') || text[p] == '.')) dots += text[p++] == '.';
        if (p == start || dots > 1 || text[start] == '.' || text[p - 1] == '.') throw fail();
        double value = 0;
        try {
            value = std::stod(std::string(text.substr(start, p - start)));
        } catch (...) {
            throw fail();
        }
        std::size_t ustart = p;
        while (p < text.size() && text[p] >= 'a' && text[p] <= 'z') ++p;
        std::string_view unit = text.substr(ustart, p - ustart);
        double scale;
        if (unit.empty()) {
            if (p != text.size() || start != 0) throw fail();  // bare number only on its own
            scale = 1000;
        } else if (unit == "ms") scale = 1;
        else if (unit == "s") scale = 1000;
        else if (unit == "m") scale = 60'000;
        else if (unit == "h") scale = 3'600'000;
        else if (unit == "d") scale = 86'400'000;
        else throw fail();
        total_ms += value * scale;
    }
    return std::chrono::milliseconds{static_cast<std::int64_t>(total_ms + 0.5)};
}

/// Formats a duration in the shortest exact unit (`250ms`, `5s`, `3m`, `2h`).
inline std::string format_duration(std::chrono::milliseconds d) {
    auto ms = d.count();
    if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
    if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
    if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
    return fmt::format("{}ms", ms);
}

/// A rate such as `10/s`: `tokens` per `period`.
struct rate {
    std::int64_t tokens = 0;
    std::chrono::milliseconds period{1000};
    friend bool operator==(const rate&, const rate&) = default;
};

/// Parses `N/s`, `N/m`, `N/h`, or `N/<duration>` (`100/5m`). Throws stem::error(invalid_argument).
inline rate parse_rate(std::string_view text) {
    auto fail = [&] { return error(errc::invalid_argument, fmt::format("not a rate (expected e.g. '10/s'): '{}'", text)); };
    auto slash = text.find('/');
    if (slash == std::string_view::npos || slash == 0) throw fail();
    rate r;
    for (char c : text.substr(0, slash)) {
        if (c < '0' || c > '9') throw fail();
        r.tokens = r.tokens * 10 + (c - '0');
    }
    if (r.tokens <= 0) throw fail();
    auto per = text.substr(slash + 1);
    if (per.empty()) throw fail();
    if (per[0] < '0' || per[0] > '9') {
        std::string one = "1" + std::string(per);
        try {
            r.period = parse_duration(one);
        } catch (const error&) {
            throw fail();
        }
    } else {
        try {
            r.period = parse_duration(per);
        } catch (const error&) {
            throw fail();
        }
    }
    if (r.period.count() <= 0) throw fail();
    return r;
}

}  // namespace stem
