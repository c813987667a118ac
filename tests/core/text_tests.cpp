// Tests of stem/detail/text.hpp: UTF-8 validation and base64.
#include <doctest/doctest.h>

#include <stem/detail/text.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>

using stem::detail::base64_decode;
using stem::detail::base64_encode;
using stem::detail::is_json_safe_utf8;

namespace {
std::string bytes(std::initializer_list<unsigned> bs) {
    std::string s;
    for (auto b : bs) s += static_cast<char>(b);
    return s;
}
}  // namespace

TEST_CASE("core.text: well-formed UTF-8 is JSON-safe") {
    CHECK(is_json_safe_utf8(""));
    CHECK(is_json_safe_utf8("plain ascii {\"json\": [1, 2]}\n\t"));
    CHECK(is_json_safe_utf8("caf\xc3\xa9"));                  // U+00E9
    CHECK(is_json_safe_utf8("\xc2\x80"));                     // U+0080, smallest 2-byte
    CHECK(is_json_safe_utf8("\xdf\xbf"));                     // U+07FF
    CHECK(is_json_safe_utf8("\xe0\xa0\x80"));                 // U+0800, smallest 3-byte
    CHECK(is_json_safe_utf8("\xe2\x82\xac"));                 // U+20AC euro
    CHECK(is_json_safe_utf8("\xed\x9f\xbf"));                 // U+D7FF, just below surrogates
    CHECK(is_json_safe_utf8("\xee\x80\x80"));                 // U+E000, just above surrogates
    CHECK(is_json_safe_utf8("\xef\xbf\xbf"));                 // U+FFFF
    CHECK(is_json_safe_utf8("\xf0\x90\x80\x80"));             // U+10000, smallest 4-byte
    CHECK(is_json_safe_utf8("\xf0\x9f\x98\x80 smile"));       // U+1F600
    CHECK(is_json_safe_utf8("\xf4\x8f\xbf\xbf"));             // U+10FFFF, the last code point
    CHECK(is_json_safe_utf8(std::string(1, '\x7f')));
}

TEST_CASE("core.text: malformed UTF-8 and NUL are not JSON-safe") {
    CHECK_FALSE(is_json_safe_utf8(std::string(1, '\0')));
    CHECK_FALSE(is_json_safe_utf8(std::string("ab\0cd", 5)));
    CHECK_FALSE(is_json_safe_utf8("\xff"));
    CHECK_FALSE(is_json_safe_utf8("\xfe"));
    CHECK_FALSE(is_json_safe_utf8("\x80"));                   // lone continuation byte
    CHECK_FALSE(is_json_safe_utf8("a\xbf"));
    CHECK_FALSE(is_json_safe_utf8("\xc3"));                   // truncated 2-byte
    CHECK_FALSE(is_json_safe_utf8("\xe2\x82"));               // truncated 3-byte
    CHECK_FALSE(is_json_safe_utf8("\xf0\x9f\x98"));           // truncated 4-byte
    CHECK_FALSE(is_json_safe_utf8("\xc3\x28"));               // bad continuation
    CHECK_FALSE(is_json_safe_utf8("\xe2\x28\xa1"));
    CHECK_FALSE(is_json_safe_utf8("\xc0\xaf"));               // overlong '/'
    CHECK_FALSE(is_json_safe_utf8("\xc1\xbf"));               // overlong
    CHECK_FALSE(is_json_safe_utf8("\xe0\x80\xaf"));           // overlong 3-byte
    CHECK_FALSE(is_json_safe_utf8("\xe0\x9f\xbf"));           // overlong U+07FF
    CHECK_FALSE(is_json_safe_utf8("\xf0\x80\x80\xaf"));       // overlong 4-byte
    CHECK_FALSE(is_json_safe_utf8("\xf0\x8f\xbf\xbf"));       // overlong U+FFFF
    CHECK_FALSE(is_json_safe_utf8("\xed\xa0\x80"));           // U+D800, a surrogate
    CHECK_FALSE(is_json_safe_utf8("\xed\xbf\xbf"));           // U+DFFF
    CHECK_FALSE(is_json_safe_utf8("\xf4\x90\x80\x80"));       // U+110000, past the end
    CHECK_FALSE(is_json_safe_utf8("\xf5\x80\x80\x80"));
    CHECK_FALSE(is_json_safe_utf8("\xf8\x88\x80\x80\x80"));   // 5-byte form
    CHECK_FALSE(is_json_safe_utf8("ok so far \xc3"));
}

TEST_CASE("core.text: base64 RFC 4648 test vectors") {
    CHECK(base64_encode("") == "");
    CHECK(base64_encode("f") == "Zg==");
    CHECK(base64_encode("fo") == "Zm8=");
    CHECK(base64_encode("foo") == "Zm9v");
    CHECK(base64_encode("foob") == "Zm9vYg==");
    CHECK(base64_encode("fooba") == "Zm9vYmE=");
    CHECK(base64_encode("foobar") == "Zm9vYmFy");

    CHECK(base64_decode("") == std::optional<std::string>(""));
    CHECK(base64_decode("Zg==") == std::optional<std::string>("f"));
    CHECK(base64_decode("Zm8=") == std::optional<std::string>("fo"));
    CHECK(base64_decode("Zm9v") == std::optional<std::string>("foo"));
    CHECK(base64_decode("Zm9vYg==") == std::optional<std::string>("foob"));
    CHECK(base64_decode("Zm9vYmE=") == std::optional<std::string>("fooba"));
    CHECK(base64_decode("Zm9vYmFy") == std::optional<std::string>("foobar"));
}

TEST_CASE("core.text: base64 uses + and / and carries high bytes") {
    CHECK(base64_encode(bytes({0xfb, 0xff, 0xbf})) == "+/+/");
    CHECK(base64_decode("+/+/") == std::optional<std::string>(bytes({0xfb, 0xff, 0xbf})));
    CHECK(base64_encode(bytes({0x00, 0x00, 0x00})) == "AAAA");
    CHECK(base64_encode(bytes({0xff})) == "/w==");
    CHECK(base64_encode(bytes({0xff, 0xff})) == "//8=");
}

TEST_CASE("core.text: base64 round trips every length and byte") {
    std::mt19937 gen(12345);
    std::uniform_int_distribution<int> byte(0, 255);
    for (std::size_t len = 0; len < 70; ++len) {
        std::string s;
        for (std::size_t i = 0; i < len; ++i) s += static_cast<char>(byte(gen));
        auto enc = base64_encode(s);
        CAPTURE(len);
        CHECK(enc.size() == (len + 2) / 3 * 4);
        auto dec = base64_decode(enc);
        REQUIRE(dec.has_value());
        CHECK(*dec == s);
    }
}

TEST_CASE("core.text: malformed base64 is rejected") {
    for (std::string bad : {"Z", "Zg", "Zg=", "Zm9vY", "Zm9v=", "Zg===", "====", "=Zg=", "Z===", "Zg=a", "Zm9v!A==",
                            "Zm 9", "Zg==Zm9v", "Zm9-", "Zm9_", "Zm9v\n", "\xc3\xa9\xc3\xa9"}) {
        CAPTURE(bad);
        CHECK_FALSE(base64_decode(bad).has_value());
    }
}
