// The reply reader behind every Redis connection: hiredis parses, and each reply tree is
// built in blocks freed together (no server needed; ASan checks the memory in CI).
#include <stem/adapters/redis/detail/protocol.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <string_view>

namespace {

std::string resp_bulk(std::string_view s) { return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n"; }

/// A stream read's reply shape: n entries [id, [v, 0, e, <envelope>]].
std::string resp_stream_read(int n, std::string_view envelope) {
    std::string out = "*" + std::to_string(n) + "\r\n";
    for (int i = 0; i < n; ++i)
        out += "*2\r\n" + resp_bulk(std::to_string(1000 + i) + "-0") + "*4\r\n" + resp_bulk("v") + resp_bulk("0") + resp_bulk("e") + resp_bulk(envelope);
    return out;
}

}  // namespace

TEST_CASE("adapters.redis.protocol: nested replies of every type, fed in pieces") {
    stem::redis::detail::reply_reader reader;
    std::string bytes = "*3\r\n" + resp_bulk("abc") + "*3\r\n:-5\r\n$-1\r\n-ERR no\r\n+QUEUED\r\n" + ":42\r\n";
    reader.feed(bytes.data(), 7);
    CHECK_FALSE(reader.next());
    reader.feed(bytes.data() + 7, bytes.size() - 7);
    auto a = reader.next();
    REQUIRE(a);
    REQUIRE(stem::redis::size(*a) == 3);
    CHECK(stem::redis::text(stem::redis::at(*a, 0)) == "abc");
    auto& inner = stem::redis::at(*a, 1);
    REQUIRE(stem::redis::size(inner) == 3);
    CHECK(stem::redis::integer(stem::redis::at(inner, 0)) == -5);
    CHECK(stem::redis::is_nil(stem::redis::at(inner, 1)));
    CHECK(stem::redis::is_error(stem::redis::at(inner, 2)));
    CHECK(stem::redis::text(stem::redis::at(inner, 2)) == "ERR no");
    CHECK(stem::redis::text(stem::redis::at(*a, 2)) == "QUEUED");
    auto b = reader.next();
    REQUIRE(b);
    CHECK(stem::redis::integer(*b) == 42);
    CHECK_FALSE(reader.next());
}

TEST_CASE("adapters.redis.protocol: a reply larger than one block keeps every element") {
    stem::redis::detail::reply_reader reader;
    std::string envelope(700, 'x');
    envelope.front() = '{';
    auto bytes = resp_stream_read(3000, envelope) + resp_bulk(std::string(200'000, 'y'));  // then one string bigger than a block
    for (int round = 0; round < 2; ++round) {
        for (std::size_t at = 0; at < bytes.size(); at += 4096) reader.feed(bytes.data() + at, std::min<std::size_t>(4096, bytes.size() - at));
        auto r = reader.next();
        REQUIRE(r);
        REQUIRE(stem::redis::size(*r) == 3000);
        for (std::size_t i : {std::size_t(0), std::size_t(1499), std::size_t(2999)}) {
            auto& entry = stem::redis::at(*r, i);
            CHECK(stem::redis::text(stem::redis::at(entry, 0)) == std::to_string(1000 + i) + "-0");
            CHECK(stem::redis::text(stem::redis::at(stem::redis::at(entry, 1), 3)) == envelope);
        }
        auto big = reader.next();
        REQUIRE(big);
        CHECK(stem::redis::text(*big).size() == 200'000);
        CHECK(stem::redis::text(*big).find_first_not_of('y') == std::string_view::npos);
    }
}

TEST_CASE("adapters.redis.protocol: a protocol error, also in the middle of an array, is a clear error") {
    for (std::string bytes : {std::string("?x\r\n"), "*2\r\n" + resp_bulk("abc") + "?x\r\n"}) {
        stem::redis::detail::reply_reader reader;
        reader.feed(bytes.data(), bytes.size());
        CHECK_THROWS_WITH_AS(reader.next(), doctest::Contains("protocol error"), stem::error);
    }
    stem::redis::detail::reply_reader abandoned;  // a reply left half read is freed with the reader
    auto partial = resp_stream_read(10, "{}");
    abandoned.feed(partial.data(), partial.size() / 2);
    CHECK_FALSE(abandoned.next());
}
