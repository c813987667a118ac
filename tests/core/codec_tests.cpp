// Tests of stem/core/codec.hpp: described types to and from JSON, and decode errors naming the path.
#include <doctest/doctest.h>

#include <stem/core/clock.hpp>
#include <stem/core/codec.hpp>
#include <stem/core/error.hpp>

#include "expect_error.hpp"

#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/describe/class.hpp>
#include <boost/describe/enum.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

namespace json = boost::json;
using namespace std::chrono_literals;

namespace codec_test {

enum class color { red, green, blue };
BOOST_DESCRIBE_ENUM(color, red, green, blue)

enum class plain_level { low = 1, high = 7 };  // not described: travels as its number

struct address {
    std::string city;
    int zip = 0;
};
BOOST_DESCRIBE_STRUCT(address, (), (city, zip))

struct person {
    std::string name;
    int age = 0;
    address home;
    std::optional<address> work;
    std::optional<std::string> nickname;
    std::vector<std::string> tags;
    std::map<std::string, int> scores;
    color favourite = color::red;
    bool active = false;
    double height = 0;
};
BOOST_DESCRIBE_STRUCT(person, (), (name, age, home, work, nickname, tags, scores, favourite, active, height))

struct item {
    double price = 0;
};
BOOST_DESCRIBE_STRUCT(item, (), (price))

struct order {
    std::vector<item> items;
};
BOOST_DESCRIBE_STRUCT(order, (), (items))

struct needs_x {
    int x = 0;
    std::optional<int> y;
};
BOOST_DESCRIBE_STRUCT(needs_x, (), (x, y))

struct timings {
    std::chrono::milliseconds timeout{0};
    std::chrono::seconds interval{0};
    std::optional<std::chrono::milliseconds> delay;
};
BOOST_DESCRIBE_STRUCT(timings, (), (timeout, interval, delay))

struct stamped {
    stem::time_point at{};
    std::optional<stem::time_point> until;
};
BOOST_DESCRIBE_STRUCT(stamped, (), (at, until))

struct small {
    std::uint8_t level = 0;
    std::int16_t offset = 0;
    unsigned count = 0;
};
BOOST_DESCRIBE_STRUCT(small, (), (level, offset, count))

struct painted {
    color c = color::red;
    std::vector<color> palette;
    plain_level level = plain_level::low;
};
BOOST_DESCRIBE_STRUCT(painted, (), (c, palette, level))

/// A type with its own Boost.JSON conversion: travels as "<cents> <currency>".
struct money {
    long cents = 0;
    std::string currency;
    friend bool operator==(const money&, const money&) = default;
};
void tag_invoke(json::value_from_tag, json::value& jv, const money& m) {
    jv = std::to_string(m.cents) + " " + m.currency;
}
money tag_invoke(json::value_to_tag<money>, const json::value& jv) {
    if (!jv.is_string()) throw std::invalid_argument("money must be a string");
    std::string s(jv.get_string());
    auto sp = s.find(' ');
    if (sp == std::string::npos || sp == 0) throw std::invalid_argument("money needs '<cents> <currency>'");
    return money{std::stol(s.substr(0, sp)), s.substr(sp + 1)};
}

struct invoice {
    std::string number;
    money total;
    std::vector<money> lines;
};
BOOST_DESCRIBE_STRUCT(invoice, (), (number, total, lines))

struct base_part {
    int base_value = 0;
};
BOOST_DESCRIBE_STRUCT(base_part, (), (base_value))

struct derived_part : base_part {
    std::string extra;
};
BOOST_DESCRIBE_STRUCT(derived_part, (base_part), (extra))

struct raw_holder {
    json::value anything;
    json::object obj;
    json::array arr;
};
BOOST_DESCRIBE_STRUCT(raw_holder, (), (anything, obj, arr))

struct grid {
    std::vector<std::vector<int>> rows;
    std::map<std::string, std::vector<item>> by_shop;
};
BOOST_DESCRIBE_STRUCT(grid, (), (rows, by_shop))

person sample_person() {
    person p;
    p.name = "Ada";
    p.age = 36;
    p.home = {"London", 12345};
    p.work = address{"Cambridge", 777};
    p.nickname = std::nullopt;
    p.tags = {"math", "engines"};
    p.scores = {{"chess", 3}, {"go", -2}};
    p.favourite = color::blue;
    p.active = true;
    p.height = 1.65;
    return p;
}

}  // namespace codec_test

using namespace codec_test;
using core_tests::error_of;

TEST_CASE("core.codec: described struct encodes its fields with their JSON kinds") {
    auto v = stem::to_json_value(sample_person());
    REQUIRE(v.is_object());
    const auto& o = v.get_object();
    CHECK(o.size() == 10);
    CHECK(o.at("name") == json::value("Ada"));
    CHECK(o.at("age").as_int64() == 36);
    CHECK(o.at("home") == json::parse(R"({"city":"London","zip":12345})"));
    CHECK(o.at("work") == json::parse(R"({"city":"Cambridge","zip":777})"));
    CHECK(o.at("nickname").is_null());
    CHECK(o.at("tags") == json::parse(R"(["math","engines"])"));
    CHECK(o.at("scores") == json::parse(R"({"chess":3,"go":-2})"));
    CHECK(o.at("favourite") == json::value("blue"));
    CHECK(o.at("active") == json::value(true));
    CHECK(o.at("height").as_double() == doctest::Approx(1.65));
}

TEST_CASE("core.codec: described struct round trips through JSON text") {
    auto p = sample_person();
    auto text = stem::encode_json(p);
    auto back = stem::decode_json<person>(text, "args");
    CHECK(back.name == "Ada");
    CHECK(back.age == 36);
    CHECK(back.home.city == "London");
    CHECK(back.home.zip == 12345);
    REQUIRE(back.work.has_value());
    CHECK(back.work->city == "Cambridge");
    CHECK(back.work->zip == 777);
    CHECK_FALSE(back.nickname.has_value());
    CHECK(back.tags == std::vector<std::string>{"math", "engines"});
    CHECK(back.scores == std::map<std::string, int>{{"chess", 3}, {"go", -2}});
    CHECK(back.favourite == color::blue);
    CHECK(back.active);
    CHECK(back.height == 1.65);
    // Encoding again gives the same text.
    CHECK(stem::encode_json(back) == text);
}

TEST_CASE("core.codec: missing optional field decodes as nullopt, null too") {
    auto a = stem::decode_json<needs_x>(R"({"x":4})", "args");
    CHECK(a.x == 4);
    CHECK_FALSE(a.y.has_value());

    auto b = stem::decode_json<needs_x>(R"({"x":4,"y":null})", "args");
    CHECK_FALSE(b.y.has_value());

    auto c = stem::decode_json<needs_x>(R"({"x":4,"y":9})", "args");
    REQUIRE(c.y.has_value());
    CHECK(*c.y == 9);

    // Unknown extra fields are ignored.
    auto d = stem::decode_json<needs_x>(R"({"x":1,"zzz":[1,2]})", "args");
    CHECK(d.x == 1);
}

TEST_CASE("core.codec: missing required field names the path") {
    auto msg = error_of([] { (void)stem::decode_json<needs_x>(R"({"y":1})", "args"); }, stem::errc::decode_failed);
    CHECK(msg == "args.x: missing");

    auto nested = error_of([] { (void)stem::decode_json<person>(R"({"name":"a","age":1,"home":{"city":"c"}})", "args"); },
                           stem::errc::decode_failed);
    CHECK(nested == "args.home.zip: missing");
}

TEST_CASE("core.codec: wrong nested type names the path") {
    auto msg = error_of(
        [] { (void)stem::decode_json<order>(R"({"items":[{"price":1},{"price":2},{"price":"x"}]})", "args"); },
        stem::errc::decode_failed);
    CHECK(msg.find("args.items[2].price: expected number") != std::string::npos);
    CHECK(msg == "args.items[2].price: expected number, got string");

    // The default root is "value".
    auto def = error_of([] { (void)stem::decode_json<order>(R"({"items":[{"price":true}]})"); },
                        stem::errc::decode_failed);
    CHECK(def == "value.items[0].price: expected number, got boolean");

    auto not_array = error_of([] { (void)stem::decode_json<order>(R"({"items":{"price":1}})", "args"); },
                              stem::errc::decode_failed);
    CHECK(not_array == "args.items: expected array, got object");

    auto not_object = error_of([] { (void)stem::decode_json<order>(R"([1])", "args"); }, stem::errc::decode_failed);
    CHECK(not_object == "args: expected object, got array");

    auto in_map = error_of([] { (void)stem::decode_json<grid>(R"({"rows":[[1],[2,null]],"by_shop":{}})", "args"); },
                           stem::errc::decode_failed);
    CHECK(in_map == "args.rows[1][1]: expected integer, got null");

    auto map_key = error_of(
        [] { (void)stem::decode_json<grid>(R"({"rows":[],"by_shop":{"north":[{"price":1}],"south":[{"price":[]}]}})", "args"); },
        stem::errc::decode_failed);
    CHECK(map_key == "args.by_shop.south[0].price: expected number, got array");
}

TEST_CASE("core.codec: non-JSON text gives decode_failed naming the root") {
    auto msg = error_of([] { (void)stem::decode_json<order>("{not json", "args"); }, stem::errc::decode_failed);
    CHECK(msg.rfind("args: not JSON", 0) == 0);

    auto empty = error_of([] { (void)stem::decode_json<int>("", "result"); }, stem::errc::decode_failed);
    CHECK(empty.rfind("result: not JSON", 0) == 0);

    auto trailing = error_of([] { (void)stem::decode_json<int>("1 2", "result"); }, stem::errc::decode_failed);
    CHECK(trailing.rfind("result: not JSON", 0) == 0);

    // The thread's parser is reused: a document cut short leaves nothing behind for the next.
    (void)error_of([] { (void)stem::decode_json<json::value>(R"({"a":[1,{"b":"x)", "args"); }, stem::errc::decode_failed);
    CHECK(stem::decode_json<json::value>(R"({"c":[2]})") == json::parse(R"({"c":[2]})"));
}

TEST_CASE("core.codec: documents over 64 KiB decode the same (a parser of their own)") {
    std::vector<int> many(30'000);
    for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<int>(i * 7);
    auto text = stem::encode_json(many);
    REQUIRE(text.size() > 64 * 1024);
    CHECK(stem::decode_json<std::vector<int>>(text) == many);
    auto cut = error_of([&] { (void)stem::decode_json<std::vector<int>>(text.substr(0, text.size() - 1), "args"); },
                        stem::errc::decode_failed);
    CHECK(cut.rfind("args: not JSON", 0) == 0);
    CHECK(stem::decode_json<std::vector<int>>("[1,2]") == std::vector<int>{1, 2});
}

TEST_CASE("core.codec: vectors and string maps, nested") {
    grid g;
    g.rows = {{1, 2}, {}, {3}};
    g.by_shop["north"] = {item{1.5}, item{2}};
    g.by_shop["empty"] = {};
    auto v = stem::to_json_value(g);
    CHECK(v == json::parse(R"({"rows":[[1,2],[],[3]],"by_shop":{"empty":[],"north":[{"price":1.5},{"price":2.0}]}})"));

    auto back = stem::from_json_value<grid>(v, "args");
    CHECK(back.rows == g.rows);
    REQUIRE(back.by_shop.size() == 2);
    REQUIRE(back.by_shop.at("north").size() == 2);
    CHECK(back.by_shop.at("north")[0].price == 1.5);
    CHECK(back.by_shop.at("north")[1].price == 2.0);
    CHECK(back.by_shop.at("empty").empty());

    auto strings = stem::decode_json<std::vector<std::string>>(R"(["a","","c"])");
    CHECK(strings == std::vector<std::string>{"a", "", "c"});
    CHECK(stem::encode_json(std::vector<int>{}) == "[]");
    CHECK(stem::encode_json(std::map<std::string, bool>{{"k", false}}) == R"({"k":false})");
}

TEST_CASE("core.codec: described enums travel as their names") {
    painted p{color::green, {color::red, color::blue}, plain_level::high};
    auto v = stem::to_json_value(p);
    CHECK(v == json::parse(R"({"c":"green","palette":["red","blue"],"level":7})"));
    auto back = stem::from_json_value<painted>(v, "args");
    CHECK(back.c == color::green);
    CHECK(back.palette == std::vector<color>{color::red, color::blue});
    CHECK(back.level == plain_level::high);
    CHECK(stem::encode_json(color::red) == R"("red")");
}

TEST_CASE("core.codec: unknown enum name lists the valid names") {
    auto msg = error_of([] { (void)stem::decode_json<painted>(R"({"c":"purple","palette":[],"level":1})", "args"); },
                        stem::errc::decode_failed);
    CHECK(msg == "args.c: 'purple' is not one of: red, green, blue");

    auto in_vec = error_of([] { (void)stem::decode_json<painted>(R"({"c":"red","palette":["blue","Red"],"level":1})", "args"); },
                           stem::errc::decode_failed);
    CHECK(in_vec == "args.palette[1]: 'Red' is not one of: red, green, blue");

    auto not_string = error_of([] { (void)stem::decode_json<color>("2", "args"); }, stem::errc::decode_failed);
    CHECK(not_string == "args: expected string, got number");
}

TEST_CASE("core.codec: enum value without a described name fails to encode") {
    auto bogus = static_cast<color>(42);
    auto msg = error_of([&] { (void)stem::to_json_value(bogus); }, stem::errc::encode_failed);
    CHECK(msg.find("42") != std::string::npos);
}

TEST_CASE("core.codec: durations encode as their count") {
    timings t{250ms, 90s, 5min};
    auto v = stem::to_json_value(t);
    CHECK(v == json::parse(R"({"timeout":250,"interval":90,"delay":300000})"));
    CHECK(stem::encode_json(std::chrono::microseconds{1500}) == "1500");

    auto back = stem::from_json_value<timings>(v, "args");
    CHECK(back.timeout == 250ms);
    CHECK(back.interval == 90s);
    REQUIRE(back.delay.has_value());
    CHECK(*back.delay == 5min);
}

TEST_CASE("core.codec: durations decode from duration text") {
    auto t = stem::decode_json<timings>(R"({"timeout":"250ms","interval":"5m","delay":"1h30m"})", "args");
    CHECK(t.timeout == 250ms);
    CHECK(t.interval == 300s);
    REQUIRE(t.delay.has_value());
    CHECK(*t.delay == 90min);

    CHECK(stem::decode_json<std::chrono::milliseconds>(R"("5m")") == 300'000ms);
    CHECK(stem::decode_json<std::chrono::milliseconds>("5") == 5ms);  // a number is a count, not seconds
    CHECK(stem::decode_json<std::chrono::microseconds>(R"("250ms")") == std::chrono::microseconds{250'000});

    auto bad = error_of([] { (void)stem::decode_json<timings>(R"({"timeout":"5x","interval":1})", "args"); },
                        stem::errc::decode_failed);
    CHECK(bad.rfind("args.timeout: ", 0) == 0);
    CHECK(bad.find("5x") != std::string::npos);

    auto wrong_kind = error_of([] { (void)stem::decode_json<timings>(R"({"timeout":1,"interval":[1]})", "args"); },
                               stem::errc::decode_failed);
    CHECK(wrong_kind == "args.interval: expected integer, got array");
}

TEST_CASE("core.codec: time points travel as RFC 3339 text with microseconds") {
    // 2026-03-04T05:06:07.123456Z
    auto t = stem::from_unix_micros(1772600767123456);
    stamped s{t, std::nullopt};
    auto v = stem::to_json_value(s);
    REQUIRE(v.is_object());
    CHECK(v.get_object().at("at") == json::value("2026-03-04T05:06:07.123456Z"));
    CHECK(v.get_object().at("until").is_null());

    auto back = stem::from_json_value<stamped>(v, "args");
    CHECK(back.at == t);
    CHECK_FALSE(back.until.has_value());

    auto with_until = stem::decode_json<stamped>(R"({"at":"2026-03-04T07:06:07.123456+02:00","until":"2026-03-04T05:06:08Z"})");
    CHECK(with_until.at == t);
    REQUIRE(with_until.until.has_value());
    CHECK(*with_until.until == stem::from_unix_micros(1772600768000000));

    // Sub-microsecond precision is dropped on the way out.
    auto nano = t + std::chrono::nanoseconds{789};
    CHECK(stem::encode_json(nano) == R"("2026-03-04T05:06:07.123456Z")");
}

TEST_CASE("core.codec: bad time values name the path") {
    auto text = error_of([] { (void)stem::decode_json<stamped>(R"({"at":"yesterday"})", "args"); },
                         stem::errc::decode_failed);
    CHECK(text == "args.at: not an RFC 3339 time: 'yesterday'");
    auto kind = error_of([] { (void)stem::decode_json<stamped>(R"({"at":12})", "args"); }, stem::errc::decode_failed);
    CHECK(kind == "args.at: expected RFC 3339 time string, got number");
}

TEST_CASE("core.codec: integer range and kind errors") {
    auto over = error_of([] { (void)stem::decode_json<small>(R"({"level":300,"offset":0,"count":0})", "args"); },
                         stem::errc::decode_failed);
    CHECK(over == "args.level: 300 is out of range");

    auto neg = error_of([] { (void)stem::decode_json<small>(R"({"level":1,"offset":0,"count":-1})", "args"); },
                        stem::errc::decode_failed);
    CHECK(neg == "args.count: -1 is out of range");

    auto big = error_of([] { (void)stem::decode_json<small>(R"({"level":1,"offset":40000,"count":0})", "args"); },
                        stem::errc::decode_failed);
    CHECK(big == "args.offset: 40000 is out of range");

    auto huge = error_of([] { (void)stem::decode_json<std::int64_t>("18446744073709551615", "args"); },
                         stem::errc::decode_failed);
    CHECK(huge == "args: 18446744073709551615 is out of range");

    auto frac = error_of([] { (void)stem::decode_json<int>("1.5", "args"); }, stem::errc::decode_failed);
    CHECK(frac == "args: expected integer");

    auto str = error_of([] { (void)stem::decode_json<int>(R"("7")", "args"); }, stem::errc::decode_failed);
    CHECK(str == "args: expected integer, got string");

    auto boolean = error_of([] { (void)stem::decode_json<bool>("1", "args"); }, stem::errc::decode_failed);
    CHECK(boolean == "args: expected boolean, got number");

    // In range values decode, including the edges and whole doubles.
    auto ok = stem::decode_json<small>(R"({"level":255,"offset":-32768,"count":4294967295})");
    CHECK(ok.level == 255);
    CHECK(ok.offset == -32768);
    CHECK(ok.count == 4294967295u);
    CHECK(stem::decode_json<int>("3.0") == 3);
    CHECK(stem::decode_json<std::uint64_t>("18446744073709551615") == 18446744073709551615ull);
    CHECK(stem::decode_json<double>("3") == 3.0);
}

// Regression test for a bug found in review.
TEST_CASE("core.codec: whole double just past int64 max is out of range") {
    auto msg = error_of([] { (void)stem::decode_json<std::int64_t>("9223372036854775808.0", "args"); },
                        stem::errc::decode_failed);
    CHECK(msg.rfind("args: ", 0) == 0);
}

TEST_CASE("core.codec: a type with its own tag_invoke is used inside a described struct") {
    invoice inv{"INV-1", money{1234, "EUR"}, {money{1, "USD"}, money{-5, "GBP"}}};
    auto v = stem::to_json_value(inv);
    CHECK(v == json::parse(R"({"number":"INV-1","total":"1234 EUR","lines":["1 USD","-5 GBP"]})"));

    auto back = stem::from_json_value<invoice>(v, "args");
    CHECK(back.number == "INV-1");
    CHECK(back.total == money{1234, "EUR"});
    CHECK(back.lines == std::vector<money>{money{1, "USD"}, money{-5, "GBP"}});

    // Its own exceptions are reported as decode_failed at the right path.
    auto msg = error_of([] { (void)stem::decode_json<invoice>(R"({"number":"n","total":"1 EUR","lines":["1 USD",7]})", "args"); },
                        stem::errc::decode_failed);
    CHECK(msg == "args.lines[1]: money must be a string");
}

TEST_CASE("core.codec: inherited described members are encoded and decoded") {
    derived_part d;
    d.base_value = 5;
    d.extra = "x";
    auto v = stem::to_json_value(d);
    CHECK(v == json::parse(R"({"base_value":5,"extra":"x"})"));
    auto back = stem::from_json_value<derived_part>(v);
    CHECK(back.base_value == 5);
    CHECK(back.extra == "x");
    auto msg = error_of([] { (void)stem::decode_json<derived_part>(R"({"extra":"x"})", "args"); },
                        stem::errc::decode_failed);
    CHECK(msg == "args.base_value: missing");
}

TEST_CASE("core.codec: stem::unit encodes as null and decodes from anything") {
    CHECK(stem::to_json_value(stem::unit{}).is_null());
    CHECK(stem::encode_json(stem::unit{}) == "null");
    CHECK(stem::decode_json<stem::unit>("null") == stem::unit{});
    CHECK(stem::decode_json<stem::unit>(R"({"ignored":1})") == stem::unit{});
}

TEST_CASE("core.codec: integers and booleans are written as Boost.JSON writes them") {
    auto same = [](auto v) { CHECK(stem::encode_json(v) == json::serialize(stem::to_json_value(v))); };
    same(0);
    same(-1);
    same(std::numeric_limits<std::int64_t>::min());
    same(std::numeric_limits<std::int64_t>::max());
    same(std::numeric_limits<std::uint64_t>::max());
    same(short{-300});
    same(static_cast<unsigned char>(200));
    same(true);
    same(false);
    CHECK(stem::decode_json<std::int64_t>(stem::encode_json(std::numeric_limits<std::int64_t>::min())) ==
          std::numeric_limits<std::int64_t>::min());
}

TEST_CASE("core.codec: boost::json values pass through unchanged") {
    auto doc = json::parse(R"({"a":[1,2.5,"three",null,{"b":false}]})");
    CHECK(stem::to_json_value(doc) == doc);
    CHECK(stem::from_json_value<json::value>(doc) == doc);
    CHECK(stem::decode_json<json::value>(R"([1,{"x":null}])") == json::parse(R"([1,{"x":null}])"));

    raw_holder h;
    h.anything = json::parse(R"([true,"s"])");
    h.obj = json::parse(R"({"k":1})").get_object();
    h.arr = json::parse(R"([3,4])").get_array();
    auto v = stem::to_json_value(h);
    CHECK(v == json::parse(R"({"anything":[true,"s"],"obj":{"k":1},"arr":[3,4]})"));
    auto back = stem::from_json_value<raw_holder>(v);
    CHECK(back.anything == h.anything);
    CHECK(back.obj == h.obj);
    CHECK(back.arr == h.arr);

    auto msg = error_of([] { (void)stem::decode_json<raw_holder>(R"({"anything":1,"obj":[],"arr":[]})", "args"); },
                        stem::errc::decode_failed);
    CHECK(msg == "args.obj: expected object, got array");
}

TEST_CASE("core.codec: strings and scalars") {
    CHECK(stem::encode_json(std::string("he said \"hi\"")) == R"("he said \"hi\"")");
    CHECK(stem::encode_json(std::string_view("sv")) == R"("sv")");
    CHECK(stem::encode_json(42) == "42");
    CHECK(stem::encode_json(true) == "true");
    CHECK(stem::decode_json<std::string>(R"("caf\u00e9")") == "caf\xc3\xa9");
    auto msg = error_of([] { (void)stem::decode_json<std::string>("null", "result"); }, stem::errc::decode_failed);
    CHECK(msg == "result: expected string, got null");
}
