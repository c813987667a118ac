// stem/detail: internals, never included by users directly.
// json_fields.hpp — reading named fields of a JSON object with errors that name the field.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/core/error.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

namespace stem::detail {

/// Reads fields of one JSON object; each error names `<where>.<field>`.
class field_reader {
public:
    field_reader(const boost::json::object& o, std::string_view where, errc code) : o_(o), where_(where), code_(code) {}

    [[noreturn]] void fail(std::string_view field, std::string_view what) const {
        throw error(code_, fmt::format("{}.{}: {}", where_, field, what));
    }
    const boost::json::value* find(std::string_view field) const {
        auto it = o_.find(field);
        if (it == o_.end() || it->value().is_null()) return nullptr;
        return &it->value();
    }
    const boost::json::value& required(std::string_view field) const {
        if (auto* v = find(field)) return *v;
        fail(field, "missing");
    }
    std::string string(std::string_view field) const { return string_of(field, required(field)); }
    std::string string_or(std::string_view field, std::string_view fallback) const {
        auto* v = find(field);
        return v ? string_of(field, *v) : std::string(fallback);
    }
    std::int64_t integer(std::string_view field) const { return integer_of(field, required(field)); }
    std::int64_t integer_or(std::string_view field, std::int64_t fallback) const {
        auto* v = find(field);
        return v ? integer_of(field, *v) : fallback;
    }
    /// An optional integer that must fit an int.
    int int_or(std::string_view field, int fallback) const {
        auto* v = find(field);
        if (!v) return fallback;
        auto i = integer_of(field, *v);
        if (i < INT32_MIN || i > INT32_MAX) fail(field, fmt::format("{} is out of range", i));
        return static_cast<int>(i);
    }
    bool boolean_or(std::string_view field, bool fallback) const {
        auto* v = find(field);
        if (!v) return fallback;
        if (!v->is_bool()) fail(field, "expected true or false");
        return v->get_bool();
    }
    double number_or(std::string_view field, double fallback) const {
        auto* v = find(field);
        if (!v) return fallback;
        if (v->is_double()) return v->get_double();
        if (v->is_int64()) return double(v->get_int64());
        if (v->is_uint64()) return double(v->get_uint64());
        fail(field, "expected number");
    }
    std::optional<time_point> time(std::string_view field) const {
        auto* v = find(field);
        if (!v) return std::nullopt;
        if (!v->is_string()) fail(field, "expected RFC 3339 time string");
        try {
            return parse_time(v->get_string());
        } catch (const error&) {
            fail(field, fmt::format("not an RFC 3339 time: '{}'", std::string_view(v->get_string())));
        }
    }
    boost::json::object object_or_empty(std::string_view field) const {
        auto* v = find(field);
        if (!v) return {};
        if (!v->is_object()) fail(field, "expected object");
        return v->get_object();
    }

private:
    std::string string_of(std::string_view field, const boost::json::value& v) const {
        if (!v.is_string()) fail(field, "expected string");
        return std::string(v.get_string());
    }
    std::int64_t integer_of(std::string_view field, const boost::json::value& v) const {
        if (v.is_int64()) return v.get_int64();
        if (v.is_uint64() && v.get_uint64() <= std::uint64_t(INT64_MAX)) return std::int64_t(v.get_uint64());
        fail(field, "expected integer");
    }

    const boost::json::object& o_;
    std::string_view where_;
    errc code_;
};

}  // namespace stem::detail
