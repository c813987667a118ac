// stem/core: vocabulary shared by every room, with no I/O.
// clock.hpp — the wall clock stem stamps records with, and its ISO-8601 text form.
#pragma once

#include <stem/core/error.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace stem {

/// Wall clock used for timestamps that cross processes (enqueued_at, not_before...).
using clock = std::chrono::system_clock;
/// A wall-clock instant, microsecond precision when it travels.
using time_point = clock::time_point;
using std::chrono::milliseconds;

/// Microseconds since the Unix epoch.
inline std::int64_t to_unix_micros(time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
inline time_point from_unix_micros(std::int64_t us) noexcept {
    return time_point{std::chrono::duration_cast<clock::duration>(std::chrono::microseconds{us})};
}

namespace detail {
/// Writes `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC) into `out`: false, with nothing
/// written, for a year outside 0-9999 (not with libstdc++'s nanosecond clock, but possible
/// elsewhere). Statuses and envelopes carry several stamps each: fixed-width digits written
/// in place cost a fraction of a run-time format string.
inline bool write_time(char (&out)[27], time_point t) noexcept {
    using namespace std::chrono;
    auto us = floor<microseconds>(t);
    auto days = floor<std::chrono::days>(us);
    year_month_day ymd{days};
    hh_mm_ss hms{us - days};
    int year = int(ymd.year());
    if (year < 0 || year > 9999) return false;
    constexpr std::string_view form = "0000-00-00T00:00:00.000000Z";
    form.copy(out, form.size());
    auto put = [&out](std::size_t end, std::int64_t v) {
        for (auto i = end; v > 0; v /= 10) out[--i] = char('0' + v % 10);
    };
    put(4, year);
    put(7, unsigned(ymd.month()));
    put(10, unsigned(ymd.day()));
    put(13, hms.hours().count());
    put(16, hms.minutes().count());
    put(19, hms.seconds().count());
    put(26, hms.subseconds().count());
    return true;
}
}  // namespace detail

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
inline std::string format_time(time_point t) {
    char text[27];
    if (detail::write_time(text, t)) return std::string(text, sizeof text);
    using namespace std::chrono;
    auto us = floor<microseconds>(t);
    auto days = floor<std::chrono::days>(us);
    year_month_day ymd{days};
    hh_mm_ss hms{us - days};
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", int(ymd.year()), unsigned(ymd.month()),
                       unsigned(ymd.day()), hms.hours().count(), hms.minutes().count(), hms.seconds().count(),
                       hms.subseconds().count());
}

namespace detail {
inline bool read_digits(std::string_view s, std::size_t& pos, std::size_t n, int& out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (std::size_t i = 0; i < n; ++i) {
        char c = s[pos + i];
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    pos += n;
    out = v;
    return true;
}
inline bool expect_char(std::string_view s, std::size_t& pos, char c) {
    if (pos < s.size() && s[pos] == c) { ++pos; return true; }
    return false;
}
}  // namespace detail

/// Parses RFC 3339 text (`2026-01-02T03:04:05Z`, fractional seconds and
/// `+hh:mm` offsets allowed). Throws stem::error(invalid_argument) otherwise.
/// Written by hand: the standard library of GCC 12 has no chrono::parse.
inline time_point parse_time(std::string_view s) {
    using namespace std::chrono;
    auto fail = [&] { return error(errc::invalid_argument, fmt::format("not an RFC 3339 time: '{}'", s)); };
    std::size_t p = 0;
    int y, mo, d, h, mi, se;
    if (!detail::read_digits(s, p, 4, y) || !detail::expect_char(s, p, '-') || !detail::read_digits(s, p, 2, mo) ||
        !detail::expect_char(s, p, '-') || !detail::read_digits(s, p, 2, d))
        throw fail();
    if (!(detail::expect_char(s, p, 'T') || detail::expect_char(s, p, 't') || detail::expect_char(s, p, ' ')))
        throw fail();
    if (!detail::read_digits(s, p, 2, h) || !detail::expect_char(s, p, ':') || !detail::read_digits(s, p, 2, mi) ||
        !detail::expect_char(s, p, ':') || !detail::read_digits(s, p, 2, se))
        throw fail();
    std::int64_t frac_us = 0;
    if (detail::expect_char(s, p, '.')) {
        int digits = 0;
        while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
            if (digits < 6) frac_us = frac_us * 10 + (s[p] - '0');
            ++digits;
            ++p;
        }
        if (digits == 0) throw fail();
        for (int i = digits; i < 6; ++i) frac_us *= 10;
    }
    int offset_min = 0;
    if (detail::expect_char(s, p, 'Z') || detail::expect_char(s, p, 'z')) {
    } else if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
        int sign = s[p] == '-' ? -1 : 1;
        ++p;
        int oh, om;
        if (!detail::read_digits(s, p, 2, oh) || !detail::expect_char(s, p, ':') || !detail::read_digits(s, p, 2, om) ||
            oh > 23 || om > 59)
            throw fail();
        offset_min = sign * (oh * 60 + om);
    } else {
        throw fail();
    }
    if (p != s.size()) throw fail();
    year_month_day ymd{year{y}, month{unsigned(mo)}, day{unsigned(d)}};
    if (!ymd.ok() || h > 23 || mi > 59 || se > 60) throw fail();
    auto t = sys_days{ymd} + hours{h} + minutes{mi} + seconds{se} + microseconds{frac_us} - minutes{offset_min};
    return time_point{duration_cast<clock::duration>(t.time_since_epoch())};
}

}  // namespace stem
