// stem/core: vocabulary shared by every room, with no I/O.
// codec.hpp — argument/result structs to and from JSON through Boost.Describe, no per-type code.
#pragma once

#include <stem/core/clock.hpp>
#include <stem/core/duration.hpp>
#include <stem/core/error.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <boost/describe/class.hpp>
#include <boost/describe/enum.hpp>
#include <boost/describe/enum_from_string.hpp>
#include <boost/describe/enum_to_string.hpp>
#include <boost/describe/members.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/parser.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <boost/mp11/algorithm.hpp>
#include <fmt/format.h>

namespace stem {

/// The result type of a task that returns nothing useful (encodes as `null`).
using unit = std::monostate;

namespace detail {

template <class T> struct is_optional : std::false_type {};
template <class T> struct is_optional<std::optional<T>> : std::true_type {};
template <class T> struct is_vector : std::false_type {};
template <class T, class A> struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T> struct is_string_map : std::false_type {};
template <class V, class C, class A> struct is_string_map<std::map<std::string, V, C, A>> : std::true_type {};
template <class V, class H, class E, class A>
struct is_string_map<std::unordered_map<std::string, V, H, E, A>> : std::true_type {};
template <class T> struct is_duration : std::false_type {};
template <class R, class P> struct is_duration<std::chrono::duration<R, P>> : std::true_type {};
template <class T> struct is_time_point : std::false_type {};
template <class C, class D> struct is_time_point<std::chrono::time_point<C, D>> : std::true_type {};

template <class T>
concept json_native = std::same_as<T, boost::json::value> || std::same_as<T, boost::json::object> ||
                      std::same_as<T, boost::json::array> || std::same_as<T, boost::json::string>;

/// A type that brought its own Boost.JSON conversion (`tag_invoke`) opts out of Describe.
template <class T>
concept has_user_conversion = std::is_class_v<T> && !json_native<T> && requires(boost::json::value& jv, const T& t) {
    tag_invoke(boost::json::value_from_tag{}, jv, t);
};

template <class T>
concept described_struct = boost::describe::has_describe_members<T>::value;

template <class T>
concept described_enum = std::is_enum_v<T> && boost::describe::has_describe_enumerators<T>::value;

/// The path of a value inside the payload, built lazily for error messages only.
struct path {
    const path* parent = nullptr;
    std::string_view key{};
    std::size_t index = 0;
    bool is_index = false;

    std::string str() const {
        if (!parent) return std::string(key);
        auto s = parent->str();
        if (is_index) return fmt::format("{}[{}]", s, index);
        return fmt::format("{}.{}", s, key);
    }
    path field(std::string_view k) const { return path{this, k, 0, false}; }
    path at(std::size_t i) const { return path{this, {}, i, true}; }
};

[[noreturn]] inline void decode_fail(const path& p, std::string_view what) {
    throw error(errc::decode_failed, fmt::format("{}: {}", p.str(), what));
}

inline std::string_view kind_name(const boost::json::value& v) {
    switch (v.kind()) {
    case boost::json::kind::null: return "null";
    case boost::json::kind::bool_: return "boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
    case boost::json::kind::double_: return "number";
    case boost::json::kind::string: return "string";
    case boost::json::kind::array: return "array";
    case boost::json::kind::object: return "object";
    }
    return "value";
}

[[noreturn]] inline void expected(const path& p, std::string_view what, const boost::json::value& got) {
    decode_fail(p, fmt::format("expected {}, got {}", what, kind_name(got)));
}

}  // namespace detail

// ---------------------------------------------------------------- encode

/// Encodes `v` as a JSON value.
template <class T>
boost::json::value to_json_value(const T& v);

namespace detail {
template <class T>
void encode_into(boost::json::value& out, const T& v) {
    if constexpr (std::same_as<T, unit>) {
        out = nullptr;
    } else if constexpr (json_native<T>) {
        out = v;
    } else if constexpr (std::same_as<T, bool>) {
        out = v;
    } else if constexpr (std::is_integral_v<T> || std::is_floating_point_v<T>) {
        out = v;
    } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
        out = std::string_view(v);
    } else if constexpr (described_enum<T>) {
        const char* name = boost::describe::enum_to_string(v, nullptr);
        if (!name) throw error(errc::encode_failed, fmt::format("enum value {} has no described name", +static_cast<std::underlying_type_t<T>>(v)));
        out = name;
    } else if constexpr (std::is_enum_v<T>) {
        out = static_cast<std::underlying_type_t<T>>(v);
    } else if constexpr (is_optional<T>::value) {
        if (v) encode_into(out, *v);
        else out = nullptr;
    } else if constexpr (is_duration<T>::value) {
        out = v.count();
    } else if constexpr (is_time_point<T>::value) {
        out = format_time(std::chrono::time_point_cast<clock::duration>(v));
    } else if constexpr (is_vector<T>::value) {
        auto& arr = out.emplace_array();
        arr.reserve(v.size());
        for (const auto& e : v) encode_into(arr.emplace_back(nullptr), e);
    } else if constexpr (is_string_map<T>::value) {
        auto& obj = out.emplace_object();
        obj.reserve(v.size());
        for (const auto& [k, e] : v) encode_into(obj[k], e);
    } else if constexpr (has_user_conversion<T>) {
        out = boost::json::value_from(v);
    } else if constexpr (described_struct<T>) {
        auto& obj = out.emplace_object();
        using members = boost::describe::describe_members<T, boost::describe::mod_public | boost::describe::mod_inherited>;
        obj.reserve(boost::mp11::mp_size<members>::value);
        boost::mp11::mp_for_each<members>([&](auto m) { encode_into(obj[m.name], v.*m.pointer); });
    } else {
        static_assert(sizeof(T) == 0,
                      "stem: this type cannot be encoded. Describe it with BOOST_DESCRIBE_STRUCT, "
                      "or give it Boost.JSON tag_invoke conversions.");
    }
}

template <class T>
T decode_from(const boost::json::value& v, const path& p) {
    namespace json = boost::json;
    // JSON values handed out are copied into default storage: the parsed tree may live in
    // a short-lived buffer (see decode_json).
    if constexpr (std::same_as<T, unit>) {
        return unit{};
    } else if constexpr (std::same_as<T, json::value>) {
        return json::value(v, json::storage_ptr{});
    } else if constexpr (std::same_as<T, json::object>) {
        if (!v.is_object()) expected(p, "object", v);
        return json::object(v.get_object(), json::storage_ptr{});
    } else if constexpr (std::same_as<T, json::array>) {
        if (!v.is_array()) expected(p, "array", v);
        return json::array(v.get_array(), json::storage_ptr{});
    } else if constexpr (std::same_as<T, json::string>) {
        if (!v.is_string()) expected(p, "string", v);
        return json::string(v.get_string(), json::storage_ptr{});
    } else if constexpr (std::same_as<T, bool>) {
        if (!v.is_bool()) expected(p, "boolean", v);
        return v.get_bool();
    } else if constexpr (std::is_integral_v<T>) {
        if (v.is_int64()) {
            auto x = v.get_int64();
            if (!std::in_range<T>(x)) decode_fail(p, fmt::format("{} is out of range", x));
            return static_cast<T>(x);
        }
        if (v.is_uint64()) {
            auto x = v.get_uint64();
            if (!std::in_range<T>(x)) decode_fail(p, fmt::format("{} is out of range", x));
            return static_cast<T>(x);
        }
        if (v.is_double()) {
            double d = v.get_double();
            // 2^digits is exact in a double, unlike max(): compare against it.
            const double limit = std::ldexp(1.0, std::numeric_limits<T>::digits);
            if (std::trunc(d) != d) decode_fail(p, "expected integer");
            if (d >= limit || (std::is_signed_v<T> ? d < -limit : d < 0))
                decode_fail(p, fmt::format("{} is out of range", d));
            return static_cast<T>(d);
        }
        expected(p, "integer", v);
    } else if constexpr (std::is_floating_point_v<T>) {
        if (v.is_double()) return static_cast<T>(v.get_double());
        if (v.is_int64()) return static_cast<T>(v.get_int64());
        if (v.is_uint64()) return static_cast<T>(v.get_uint64());
        expected(p, "number", v);
    } else if constexpr (std::same_as<T, std::string>) {
        if (!v.is_string()) expected(p, "string", v);
        return std::string(v.get_string());
    } else if constexpr (described_enum<T>) {
        if (!v.is_string()) expected(p, "string", v);
        T out{};
        if (!boost::describe::enum_from_string(v.get_string().c_str(), out)) {
            std::string names;
            boost::mp11::mp_for_each<boost::describe::describe_enumerators<T>>([&](auto d) {
                if (!names.empty()) names += ", ";
                names += d.name;
            });
            decode_fail(p, fmt::format("'{}' is not one of: {}", std::string_view(v.get_string()), names));
        }
        return out;
    } else if constexpr (std::is_enum_v<T>) {
        return static_cast<T>(decode_from<std::underlying_type_t<T>>(v, p));
    } else if constexpr (is_optional<T>::value) {
        if (v.is_null()) return std::nullopt;
        return decode_from<typename T::value_type>(v, p);
    } else if constexpr (is_duration<T>::value) {
        if (v.is_string()) {
            try {
                return std::chrono::duration_cast<T>(parse_duration(v.get_string()));
            } catch (const error& e) {
                decode_fail(p, e.code().message() + ": " + std::string(v.get_string()));
            }
        }
        return T{decode_from<typename T::rep>(v, p)};
    } else if constexpr (is_time_point<T>::value) {
        if (!v.is_string()) expected(p, "RFC 3339 time string", v);
        try {
            return std::chrono::time_point_cast<typename T::duration>(parse_time(v.get_string()));
        } catch (const error&) {
            decode_fail(p, fmt::format("not an RFC 3339 time: '{}'", std::string_view(v.get_string())));
        }
    } else if constexpr (is_vector<T>::value) {
        if (!v.is_array()) expected(p, "array", v);
        const auto& arr = v.get_array();
        T out;
        out.reserve(arr.size());
        for (std::size_t i = 0; i < arr.size(); ++i)
            out.push_back(decode_from<typename T::value_type>(arr[i], p.at(i)));
        return out;
    } else if constexpr (is_string_map<T>::value) {
        if (!v.is_object()) expected(p, "object", v);
        T out;
        for (const auto& kv : v.get_object())
            out.emplace(std::string(kv.key()), decode_from<typename T::mapped_type>(kv.value(), p.field(kv.key())));
        return out;
    } else if constexpr (has_user_conversion<T>) {
        try {
            return boost::json::value_to<T>(boost::json::value(v, boost::json::storage_ptr{}));  // own storage: T may keep parts
        } catch (const error&) {
            throw;
        } catch (const std::exception& e) {
            decode_fail(p, e.what());
        }
    } else if constexpr (described_struct<T>) {
        static_assert(std::is_default_constructible_v<T>, "stem: described argument/result types must be default-constructible");
        if (!v.is_object()) expected(p, "object", v);
        const auto& obj = v.get_object();
        T out{};
        using members = boost::describe::describe_members<T, boost::describe::mod_public | boost::describe::mod_inherited>;
        boost::mp11::mp_for_each<members>([&](auto m) {
            using M = std::remove_cvref_t<decltype(out.*m.pointer)>;
            auto sub = p.field(m.name);
            auto it = obj.find(m.name);
            if (it == obj.end()) {
                if constexpr (!is_optional<M>::value) decode_fail(sub, "missing");
                return;
            }
            out.*m.pointer = decode_from<M>(it->value(), sub);
        });
        return out;
    } else {
        static_assert(sizeof(T) == 0,
                      "stem: this type cannot be decoded. Describe it with BOOST_DESCRIBE_STRUCT, "
                      "or give it Boost.JSON tag_invoke conversions.");
    }
}
}  // namespace detail

template <class T>
boost::json::value to_json_value(const T& v) {
    boost::json::value out;
    detail::encode_into(out, v);
    return out;
}

/// Decodes `v` as a T; errors name the path under `root` (`args.items[2].price: expected number`).
template <class T>
T from_json_value(const boost::json::value& v, std::string_view root = "value") {
    detail::path p{nullptr, root};
    return detail::decode_from<T>(v, p);
}

/// `v` as JSON text. The intermediate JSON tree lives in a stack buffer when it fits.
template <class T>
std::string encode_json(const T& v) {
    // Scalars (a typical result) are written directly: Boost.JSON writes them the same way.
    if constexpr (std::same_as<T, unit>) {
        return "null";
    } else if constexpr (std::same_as<T, bool>) {
        return v ? "true" : "false";
    } else if constexpr (std::is_integral_v<T> && sizeof(T) <= sizeof(std::int64_t)) {
        char digits[24];
        return std::string(digits, std::to_chars(digits, digits + sizeof digits, v).ptr);
    } else {
        unsigned char buf[2048];
        boost::json::monotonic_resource mr(buf, sizeof buf);
        boost::json::value out(&mr);
        detail::encode_into(out, v);
        return boost::json::serialize(out);
    }
}

namespace detail {
/// `text` parsed into `sp`. A document of up to 64 KiB goes through the thread's parser, kept
/// because constructing one costs more than parsing a small document; a larger one gets a
/// parser of its own, so that the kept one never holds on to a large internal stack.
inline boost::json::value parse_json(std::string_view text, boost::system::error_code& ec, boost::json::storage_ptr sp) {
    if (text.size() > 64 * 1024) return boost::json::parse(text, ec, std::move(sp));
    thread_local boost::json::parser parser;
    parser.reset(std::move(sp));
    try {
        parser.write(text.data(), text.size(), ec);
    } catch (...) {
        parser.reset();  // it may hold values in `sp`, which may end with the caller
        throw;
    }
    if (ec) {
        parser.reset();
        return nullptr;
    }
    return parser.release();
}
}  // namespace detail

/// JSON text as a T; malformed JSON or a mismatch gives stem::error(decode_failed).
/// The parsed tree lives in a stack buffer when it fits.
template <class T>
T decode_json(std::string_view text, std::string_view root = "value") {
    unsigned char buf[4096];
    boost::json::monotonic_resource mr(buf, sizeof buf);
    boost::system::error_code ec;
    auto v = detail::parse_json(text, ec, &mr);
    if (ec) throw error(errc::decode_failed, fmt::format("{}: not JSON ({})", root, ec.message()));
    return from_json_value<T>(v, root);
}

}  // namespace stem
