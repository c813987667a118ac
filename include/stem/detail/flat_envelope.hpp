// stem/detail: internals, never included by users directly.
// flat_envelope.hpp — the common envelope (no headers, meta or retry policy) read in one
// pass of Boost.JSON's event parser, without building a JSON tree first.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/detail/text.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/basic_parser_impl.hpp>

namespace stem::detail {

/// The fields the one-pass reader knows: the flat ones, each a string or an integer.
enum class flat_field { id, name, args, args_base64, queue, priority, attempt, max_retries, not_before, expires,
                        visibility_timeout_ms, enqueued_at, group_id, chord_id, parent_id, root_id, args_encoder,
                        result_encoder, count };

inline constexpr std::array<std::string_view, std::size_t(flat_field::count)> flat_field_names{
    "id", "name", "args", "args_base64", "queue", "priority", "attempt", "max_retries", "not_before", "expires",
    "visibility_timeout_ms", "enqueued_at", "group_id", "chord_id", "parent_id", "root_id", "args_encoder",
    "result_encoder"};

/// Event handler for boost::json::basic_parser: keeps the flat fields' raw values. Anything
/// else (a nested object or array, an unknown or repeated key, a value of another type)
/// stops it; the caller then reads the envelope through the JSON tree, which accepts or
/// names the fault as before.
struct flat_envelope_handler {
    static constexpr std::size_t max_array_size = -1;
    static constexpr std::size_t max_object_size = -1;
    static constexpr std::size_t max_string_size = -1;
    static constexpr std::size_t max_key_size = -1;

    static constexpr std::size_t n = std::size_t(flat_field::count);
    std::array<std::string, n> text;         ///< string values
    std::array<std::int64_t, n> number{};    ///< integer values
    std::array<bool, n> present{};           ///< a non-null value was given
    std::array<bool, n> seen{};              ///< the key was given (null included)
    std::size_t current = n;                 ///< the field whose value comes next
    std::string part;                        ///< a key or string given in pieces
    int depth = 0;

    using sv = boost::json::string_view;
    using ec_t = boost::json::error_code;

    static bool stop(ec_t& ec) {
        ec = boost::json::error::syntax;
        return false;
    }

    bool on_document_begin(ec_t&) { return true; }
    bool on_document_end(ec_t&) { return true; }
    bool on_array_begin(ec_t& ec) { return stop(ec); }
    bool on_array_end(std::size_t, ec_t& ec) { return stop(ec); }
    bool on_object_begin(ec_t& ec) { return ++depth == 1 || stop(ec); }
    bool on_object_end(std::size_t, ec_t&) { return true; }
    bool on_key_part(sv s, std::size_t, ec_t&) {
        part.append(s.data(), s.size());
        return true;
    }
    bool on_key(sv s, std::size_t, ec_t& ec) {
        std::string_view key(s.data(), s.size());
        if (!part.empty()) key = part.append(s.data(), s.size());
        current = n;
        for (std::size_t i = 0; i < n; ++i)
            if (flat_field_names[i] == key) current = i;
        part.clear();
        if (current == n || seen[current]) return stop(ec);
        seen[current] = true;
        return true;
    }
    bool on_string_part(sv s, std::size_t, ec_t&) {
        part.append(s.data(), s.size());
        return true;
    }
    bool on_string(sv s, std::size_t, ec_t& ec) {
        if (current == n || is_integer_field(current)) return stop(ec);
        auto& out = text[current];
        if (part.empty()) {
            out.assign(s.data(), s.size());
        } else {
            out = std::move(part.append(s.data(), s.size()));
            part.clear();
        }
        present[current] = true;
        return true;
    }
    bool on_number_part(sv, ec_t&) { return true; }
    bool on_int64(std::int64_t v, sv, ec_t& ec) {
        if (current == n || !is_integer_field(current)) return stop(ec);
        number[current] = v;
        present[current] = true;
        return true;
    }
    bool on_uint64(std::uint64_t, sv, ec_t& ec) { return stop(ec); }  // beyond int64: the tree names it
    bool on_double(double, sv, ec_t& ec) { return stop(ec); }
    bool on_bool(bool, ec_t& ec) { return stop(ec); }
    bool on_null(ec_t&) { return true; }  // as if absent, as field_reader treats it
    bool on_comment_part(sv, ec_t&) { return true; }
    bool on_comment(sv, ec_t&) { return true; }

    static bool is_integer_field(std::size_t f) {
        auto e = flat_field(f);
        return e == flat_field::priority || e == flat_field::attempt || e == flat_field::max_retries ||
               e == flat_field::visibility_timeout_ms;
    }
};

/// The envelope in `text` when it is a flat one that reads without fault; nullopt sends the
/// caller to the full reader (which also names any fault).
template <class Envelope>
std::optional<Envelope> read_flat_envelope(std::string_view text) {
    boost::json::basic_parser<flat_envelope_handler> p(boost::json::parse_options{});
    boost::json::error_code ec;
    auto used = p.write_some(false, text.data(), text.size(), ec);
    if (ec || !p.done() || used != text.size()) return std::nullopt;
    auto& h = p.handler();
    auto has = [&](flat_field f) { return h.present[std::size_t(f)]; };
    auto take = [&](flat_field f) -> std::string& { return h.text[std::size_t(f)]; };
    auto small = [&](flat_field f, int fallback) -> std::optional<int> {
        if (!has(f)) return fallback;
        auto v = h.number[std::size_t(f)];
        if (v < INT32_MIN || v > INT32_MAX) return std::nullopt;
        return int(v);
    };
    if (!has(flat_field::id) || !has(flat_field::name) || has(flat_field::args) == has(flat_field::args_base64)) return std::nullopt;
    Envelope e;
    e.id = std::move(take(flat_field::id));
    e.name = std::move(take(flat_field::name));
    if (has(flat_field::args)) {
        e.args = std::move(take(flat_field::args));
    } else {
        auto raw = base64_decode(take(flat_field::args_base64));
        if (!raw) return std::nullopt;
        e.args = std::move(*raw);
    }
    auto priority = small(flat_field::priority, 0), attempt = small(flat_field::attempt, 0),
         max_retries = small(flat_field::max_retries, 0);
    if (!priority || !attempt || !max_retries) return std::nullopt;
    e.priority = *priority;
    e.attempt = *attempt;
    e.max_retries = *max_retries;
    try {
        auto time = [&](flat_field f) -> std::optional<time_point> {
            if (!has(f)) return std::nullopt;
            return parse_time(take(f));
        };
        e.not_before = time(flat_field::not_before);
        e.expires = time(flat_field::expires);
        e.enqueued_at = time(flat_field::enqueued_at).value_or(time_point{});
    } catch (const std::exception&) {
        return std::nullopt;
    }
    if (has(flat_field::visibility_timeout_ms))
        e.visibility_timeout = std::chrono::milliseconds{h.number[std::size_t(flat_field::visibility_timeout_ms)]};
    auto string_or = [&](flat_field f, std::string& out) {
        if (has(f)) out = std::move(take(f));
    };
    string_or(flat_field::queue, e.queue);
    string_or(flat_field::group_id, e.group_id);
    string_or(flat_field::chord_id, e.chord_id);
    string_or(flat_field::parent_id, e.parent_id);
    string_or(flat_field::root_id, e.root_id);
    string_or(flat_field::args_encoder, e.args_encoder);
    string_or(flat_field::result_encoder, e.result_encoder);
    return e;
}

}  // namespace stem::detail
