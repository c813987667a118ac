// stem/detail: internals, never included by users directly.
// json_writer.hpp — a JSON object written field by field into a string, for the records
// stored once per task (envelopes, statuses): no boost::json::object is built first.
#pragma once

#include <stem/core/clock.hpp>

#include <cassert>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/json/serializer.hpp>
#include <boost/json/value.hpp>

namespace stem::detail {

/// Appends one JSON object to `out`, with what boost::json::serialize would write for the
/// same object. A string needing no escape (no control character, quote or backslash) is
/// copied as it is; any other string, and every other value, goes through Boost.JSON's
/// serializer.
class json_writer {
public:
    explicit json_writer(std::string& out) : out_(out) { out_ += '{'; }

    json_writer(const json_writer&) = delete;
    json_writer& operator=(const json_writer&) = delete;

    /// `key` is written as it is: a short name known to need no escape.
    void field(std::string_view key, std::string_view v) {
        name(key);
        string(v);
    }
    void field(std::string_view key, const char* v) { field(key, std::string_view(v)); }
    void field(std::string_view key, std::int64_t v) {
        name(key);
        char buf[24];
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out_.append(buf, r.ptr);
    }
    void field(std::string_view key, int v) { field(key, std::int64_t(v)); }
    void field(std::string_view key, bool v) {
        name(key);
        out_ += v ? "true" : "false";
    }
    /// A time stamp, as format_time writes it.
    void field(std::string_view key, time_point t) {
        char text[27];
        if (!write_time(text, t)) return field(key, format_time(t));
        name(key);
        out_ += '"';
        out_.append(text, sizeof text);
        out_ += '"';
    }
    /// Any JSON value (objects, doubles).
    void field(std::string_view key, const boost::json::value& v) {
        name(key);
        sr_.reset(&v);
        pump();
    }
    void field(std::string_view key, const boost::json::object& v) {
        name(key);
        sr_.reset(&v);
        pump();
    }
    /// A field whose key comes from data (escaped if it must be).
    void field_any_key(std::string_view key, std::string_view v) {
        if (!first_) out_ += ',';
        first_ = false;
        string(key);
        out_ += ':';
        string(v);
    }
    /// A nested object, written by `f(json_writer&)`.
    template <class F>
    void object(std::string_view key, F f) {
        name(key);
        json_writer inner(out_);
        f(inner);
        inner.close();
    }

    /// Ends the object; call once, last.
    void close() { out_ += '}'; }

private:
    void name(std::string_view key) {
        char buf[64];
        assert(key.size() <= sizeof buf - 4);  // a short literal
        std::size_t n = 0;
        if (!first_) buf[n++] = ',';
        first_ = false;
        buf[n++] = '"';
        key.copy(buf + n, key.size());
        n += key.size();
        buf[n++] = '"';
        buf[n++] = ':';
        out_.append(buf, n);
    }
    void string(std::string_view v) {
        bool plain = true;
        for (unsigned char c : v) plain &= c >= 0x20 && c != '"' && c != '\\';
        if (plain) {
            out_ += '"';
            out_ += v;
            out_ += '"';
            return;
        }
        sr_.reset(boost::json::string_view(v.data(), v.size()));
        pump();
    }
    void pump() {
        char buf[512];
        while (!sr_.done()) {
            auto got = sr_.read(buf, sizeof buf);
            out_.append(got.data(), got.size());
        }
    }

    std::string& out_;
    boost::json::serializer sr_;
    bool first_ = true;
};

}  // namespace stem::detail
