// Tests of stem/core/payload_encoder.hpp: the registry of payload transforms.
#include <doctest/doctest.h>

#include <stem/core/error.hpp>
#include <stem/core/payload_encoder.hpp>

#include "expect_error.hpp"

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>
#include <utility>

using core_tests::error_of;

namespace {

/// A reversible test transform: reverse the bytes and wrap them in brackets.
stem::payload_encoder reversing_encoder(std::string id) {
    return {std::move(id),
            [](std::string_view s) { return "<" + std::string(s.rbegin(), s.rend()) + ">"; },
            [](std::string_view s) {
                if (s.size() < 2 || s.front() != '<' || s.back() != '>')
                    throw stem::error(stem::errc::decode_failed, "not wrapped");
                auto inner = s.substr(1, s.size() - 2);
                return std::string(inner.rbegin(), inner.rend());
            }};
}

}  // namespace

TEST_CASE("core.payload_encoder: json is the identity and always present") {
    stem::payload_encoder_registry r;
    CHECK(r.contains("json"));
    const std::string text = R"({"a":[1,2],"b":"\u00e9"})";
    CHECK(r.encode("json", text) == text);
    CHECK(r.decode("json", text) == text);
    // Identity even for bytes that are not JSON.
    CHECK(r.decode("json", std::string("\x00\xff", 2)) == std::string("\x00\xff", 2));
    CHECK(r.default_args_encoder == "json");
    CHECK(r.default_result_encoder == "json");
}

TEST_CASE("core.payload_encoder: built-in base64 round trips") {
    stem::payload_encoder_registry r;
    CHECK(r.contains("base64"));
    CHECK(r.encode("base64", R"({"a":1})") == "eyJhIjoxfQ==");
    CHECK(r.decode("base64", "eyJhIjoxfQ==") == R"({"a":1})");
    std::string binary;
    for (int b = 255; b >= 0; --b) binary += static_cast<char>(b);
    CHECK(r.decode("base64", r.encode("base64", binary)) == binary);
    CHECK(r.encode("base64", "") == "");

    auto msg = error_of([&] { (void)r.decode("base64", "not base64!"); }, stem::errc::decode_failed);
    CHECK(msg == "payload is not valid base64");
}

TEST_CASE("core.payload_encoder: custom encoder is registered and used") {
    stem::payload_encoder_registry r;
    CHECK_FALSE(r.contains("reverse"));
    r.add(reversing_encoder("reverse"));
    CHECK(r.contains("reverse"));
    CHECK(r.encode("reverse", R"({"k":1})") == R"(<}1:"k"{>)");
    CHECK(r.decode("reverse", R"(<}1:"k"{>)") == R"({"k":1})");
    // Its own errors come through unchanged.
    CHECK(error_of([&] { (void)r.decode("reverse", "plain"); }, stem::errc::decode_failed) == "not wrapped");
    // Other encoders are untouched.
    CHECK(r.encode("json", "x") == "x");
    CHECK(r.encode("base64", "x") == "eA==");
}

TEST_CASE("core.payload_encoder: a registered id other than json may be replaced") {
    stem::payload_encoder_registry r;
    r.add(reversing_encoder("base64"));
    CHECK(r.encode("base64", "ab") == "<ba>");
    r.add({"upper",
           [](std::string_view s) {
               std::string out(s);
               std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::toupper(c)); });
               return out;
           },
           [](std::string_view s) { return std::string(s); }});
    CHECK(r.encode("upper", "ab") == "AB");
    r.add(reversing_encoder("upper"));
    CHECK(r.encode("upper", "ab") == "<ba>");
}

TEST_CASE("core.payload_encoder: unknown id is errc::unknown_encoder") {
    stem::payload_encoder_registry r;
    CHECK_FALSE(r.contains("gzip"));
    CHECK_FALSE(r.contains(""));
    CHECK_FALSE(r.contains("JSON"));
    CHECK(error_of([&] { (void)r.encode("gzip", "{}"); }, stem::errc::unknown_encoder) ==
          "no payload encoder registered under id 'gzip'");
    CHECK(error_of([&] { (void)r.decode("gzip", "{}"); }, stem::errc::unknown_encoder) ==
          "no payload encoder registered under id 'gzip'");
    CHECK(error_of([&] { (void)r.encode("JSON", "{}"); }, stem::errc::unknown_encoder) ==
          "no payload encoder registered under id 'JSON'");
}

TEST_CASE("core.payload_encoder: registering json, an empty id or a half encoder is refused") {
    stem::payload_encoder_registry r;
    CHECK(error_of([&] { r.add(reversing_encoder("json")); }, stem::errc::invalid_argument) ==
          "payload encoder id 'json' is reserved or empty");
    CHECK(r.encode("json", "ab") == "ab");  // still the identity

    CHECK(error_of([&] { r.add(reversing_encoder("")); }, stem::errc::invalid_argument) ==
          "payload encoder id '' is reserved or empty");

    auto half = reversing_encoder("half");
    half.decode = nullptr;
    CHECK(error_of([&] { r.add(half); }, stem::errc::invalid_argument) ==
          "payload encoder 'half' needs both encode and decode");
    CHECK_FALSE(r.contains("half"));

    auto other_half = reversing_encoder("half");
    other_half.encode = nullptr;
    CHECK(error_of([&] { r.add(other_half); }, stem::errc::invalid_argument) ==
          "payload encoder 'half' needs both encode and decode");
    CHECK_FALSE(r.contains("half"));
}

TEST_CASE("core.payload_encoder: registries are independent") {
    stem::payload_encoder_registry a, b;
    a.add(reversing_encoder("reverse"));
    CHECK(a.contains("reverse"));
    CHECK_FALSE(b.contains("reverse"));
    auto copy = a;
    CHECK(copy.encode("reverse", "xy") == "<yx>");
}
