// stem/detail: internals, never included by users directly.
// text.hpp — UTF-8 validation and base64, used where binary payloads travel as JSON text.
// Written by hand: the Boost 1.81 packages have no public base64 or UTF-8 validator.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace stem::detail {

/// True when `s` is well-formed UTF-8 with no NUL byte (a JSON string can carry it as is).
inline bool is_json_safe_utf8(std::string_view s) noexcept {
    auto p = reinterpret_cast<const unsigned char*>(s.data());
    auto end = p + s.size();
    while (p < end) {
        unsigned char c = *p;
        if (c == 0) return false;
        if (c < 0x80) { ++p; continue; }
        int n;
        std::uint32_t cp;
        if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; if (c < 0xC2) return false; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; if (c > 0xF4) return false; }
        else return false;
        if (end - p <= n) return false;
        for (int i = 1; i <= n; ++i) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

inline std::string base64_encode(std::string_view in) {
    static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    auto b = [&](std::size_t k) { return static_cast<unsigned char>(in[k]); };
    for (; i + 2 < in.size(); i += 3) {
        std::uint32_t v = (b(i) << 16) | (b(i + 1) << 8) | b(i + 2);
        out += tbl[v >> 18]; out += tbl[(v >> 12) & 63]; out += tbl[(v >> 6) & 63]; out += tbl[v & 63];
    }
    if (i + 1 == in.size()) {
        std::uint32_t v = b(i) << 16;
        out += tbl[v >> 18]; out += tbl[(v >> 12) & 63]; out += "==";
    } else if (i + 2 == in.size()) {
        std::uint32_t v = (b(i) << 16) | (b(i + 1) << 8);
        out += tbl[v >> 18]; out += tbl[(v >> 12) & 63]; out += tbl[(v >> 6) & 63]; out += '=';
    }
    return out;
}

/// Decodes standard base64 (padding required); nullopt on malformed input.
inline std::optional<std::string> base64_decode(std::string_view in) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    if (in.size() % 4 != 0) return std::nullopt;
    std::string out;
    out.reserve(in.size() / 4 * 3);
    for (std::size_t i = 0; i < in.size(); i += 4) {
        int a = val(in[i]), b = val(in[i + 1]);
        if (a < 0 || b < 0) return std::nullopt;
        bool last = i + 4 == in.size();
        int c = in[i + 2] == '=' && last ? -2 : val(in[i + 2]);
        int d = in[i + 3] == '=' && last ? -2 : val(in[i + 3]);
        if (c == -1 || d == -1 || (c == -2 && d != -2)) return std::nullopt;
        out += static_cast<char>((a << 2) | (b >> 4));
        if (c >= 0) out += static_cast<char>(((b & 15) << 4) | (c >> 2));
        if (d >= 0) out += static_cast<char>(((c & 3) << 6) | d);
    }
    return out;
}

}  // namespace stem::detail
