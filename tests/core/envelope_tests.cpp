// Tests of stem/core/envelope.hpp: JSON form, text form, validation and field-naming errors.
#include <doctest/doctest.h>

#include <stem/core/clock.hpp>
#include <stem/core/envelope.hpp>
#include <stem/core/error.hpp>
#include <stem/core/task_options.hpp>

#include "expect_error.hpp"

#include <chrono>
#include <string>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace json = boost::json;
using namespace std::chrono_literals;
using core_tests::error_of;

namespace {

stem::envelope full_envelope() {
    stem::envelope e;
    e.id = "0190a6a8-1c2d-7abc-8def-0123456789ab";
    e.name = "email.send";
    e.args = R"({"to":"ada@example.com","subject":"h\u00e9llo"})";
    e.headers = {{"traceparent", "00-abc-def-01"}, {"x-sign", "s1g"}};
    e.meta = json::parse(R"({"tenant":"acme","weights":[1,2.5],"nested":{"ok":true}})").get_object();
    e.queue = "mail";
    e.priority = 7;
    e.attempt = 2;
    e.max_retries = 5;
    e.not_before = stem::from_unix_micros(1767323045123456);  // 2026-01-02T03:04:05.123456Z
    e.expires = stem::from_unix_micros(1767326645000001);
    e.visibility_timeout = 45s;
    e.enqueued_at = stem::from_unix_micros(1767323000654321);
    e.group_id = "group-1";
    e.chord_id = "chord-1";
    e.parent_id = "parent-1";
    e.root_id = "root-1";
    e.args_encoder = "base64";
    e.result_encoder = "aes";
    e.retry = stem::retry_policy{false, 1500ms, 60s, false};
    return e;
}

stem::envelope minimal_envelope() {
    stem::envelope e;
    e.id = "id-1";
    e.name = "t";
    e.args = "{}";
    return e;
}

/// A valid serialized envelope with `field` replaced by the JSON `value` (or removed when empty).
std::string with_field(const char* field, const char* value) {
    auto o = stem::to_json(minimal_envelope());
    if (*value) o[field] = json::parse(value);
    else o.erase(field);
    return json::serialize(o);
}

}  // namespace

TEST_CASE("core.envelope: full round trip through JSON text compares equal") {
    auto e = full_envelope();
    auto text = stem::serialize(e);
    auto back = stem::parse_envelope(text);
    CHECK(back == e);
    // Field by field, so a failure says which one.
    CHECK(back.id == e.id);
    CHECK(back.name == e.name);
    CHECK(back.args == e.args);
    CHECK(back.headers == e.headers);
    CHECK(back.meta == e.meta);
    CHECK(back.queue == "mail");
    CHECK(back.priority == 7);
    CHECK(back.attempt == 2);
    CHECK(back.max_retries == 5);
    CHECK(back.not_before == e.not_before);
    CHECK(back.expires == e.expires);
    CHECK(back.visibility_timeout == std::optional<std::chrono::milliseconds>{45s});
    CHECK(back.enqueued_at == e.enqueued_at);
    CHECK(back.group_id == "group-1");
    CHECK(back.chord_id == "chord-1");
    CHECK(back.parent_id == "parent-1");
    CHECK(back.root_id == "root-1");
    CHECK(back.args_encoder == "base64");
    CHECK(back.result_encoder == "aes");
    REQUIRE(back.retry.has_value());
    CHECK(back.retry->backoff == false);
    CHECK(back.retry->default_delay == 1500ms);
    CHECK(back.retry->backoff_max == 60s);
    CHECK(back.retry->jitter == false);
    // Serializing again gives the same text.
    CHECK(stem::serialize(back) == text);
}

TEST_CASE("core.envelope: the text written field by field is the object form's, byte for byte") {
    auto e = full_envelope();
    CHECK(stem::serialize(e) == json::serialize(stem::to_json(e)));
    // Keys and values that must be escaped, binary arguments, a minimal envelope.
    e.headers["quote\"key\\\n"] = "value \"quoted\"\t\x01";
    e.name = "n\u00e9\n";
    e.args = std::string("\x00\xfe", 2);
    CHECK(stem::serialize(e) == json::serialize(stem::to_json(e)));
    CHECK(stem::parse_envelope(stem::serialize(e)) == e);
    CHECK(stem::serialize(minimal_envelope()) == json::serialize(stem::to_json(minimal_envelope())));
}

TEST_CASE("core.envelope: JSON form uses the documented field names") {
    auto o = stem::to_json(full_envelope());
    CHECK(o.at("id") == json::value("0190a6a8-1c2d-7abc-8def-0123456789ab"));
    CHECK(o.at("args").is_string());
    CHECK_FALSE(o.contains("args_base64"));
    CHECK(o.at("headers") == json::parse(R"({"traceparent":"00-abc-def-01","x-sign":"s1g"})"));
    CHECK(o.at("not_before") == json::value("2026-01-02T03:04:05.123456Z"));
    CHECK(o.at("expires") == json::value("2026-01-02T04:04:05.000001Z"));
    CHECK(o.at("visibility_timeout_ms").as_int64() == 45000);
    CHECK(o.at("enqueued_at") == json::value("2026-01-02T03:03:20.654321Z"));
    CHECK(o.at("retry_policy") ==
          json::parse(R"({"backoff":false,"default_delay_ms":1500,"backoff_max_ms":60000,"jitter":false})"));
}

TEST_CASE("core.envelope: minimal envelope omits empty optional fields and reads defaults back") {
    auto e = minimal_envelope();
    auto o = stem::to_json(e);
    for (const char* absent : {"headers", "meta", "not_before", "expires", "visibility_timeout_ms", "group_id",
                               "chord_id", "parent_id", "root_id", "retry_policy", "args_base64"})
        CHECK_MESSAGE(!o.contains(absent), absent);
    CHECK(o.at("queue") == json::value("default"));
    CHECK(o.at("args_encoder") == json::value("json"));
    CHECK(o.at("enqueued_at") == json::value("1970-01-01T00:00:00.000000Z"));

    auto back = stem::envelope_from_json(o);
    CHECK(back == e);

    // Only id, name and args are needed on the wire.
    auto sparse = stem::parse_envelope(R"({"id":"a","name":"b","args":"[1]"})");
    CHECK(sparse.queue == "default");
    CHECK(sparse.priority == 0);
    CHECK(sparse.attempt == 0);
    CHECK(sparse.args_encoder == "json");
    CHECK(sparse.result_encoder == "json");
    CHECK(sparse.enqueued_at == stem::time_point{});
    CHECK_FALSE(sparse.not_before.has_value());
    CHECK_FALSE(sparse.retry.has_value());
    CHECK(sparse.args == "[1]");
}

TEST_CASE("core.envelope: binary args travel as args_base64") {
    auto e = minimal_envelope();
    e.args = std::string("\x00\xff\xc3\x28 bin", 8);  // NUL, 0xff, an invalid UTF-8 pair
    REQUIRE(e.args.size() == 8);
    auto o = stem::to_json(e);
    CHECK_FALSE(o.contains("args"));
    REQUIRE(o.contains("args_base64"));
    CHECK(o.at("args_base64") == json::value("AP/DKCBiaW4="));

    auto back = stem::parse_envelope(stem::serialize(e));
    CHECK(back.args == e.args);
    CHECK(back == e);

    // Every byte value survives.
    std::string all;
    for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
    e.args = all;
    CHECK(stem::parse_envelope(stem::serialize(e)).args == all);

    // Well-formed UTF-8 stays readable text.
    e.args = "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"";
    auto text_o = stem::to_json(e);
    CHECK(text_o.contains("args"));
    CHECK_FALSE(text_o.contains("args_base64"));
    CHECK(stem::parse_envelope(stem::serialize(e)).args == e.args);
}

TEST_CASE("core.envelope: missing required fields are named") {
    CHECK(error_of([] { (void)stem::parse_envelope(R"({"name":"t","args":"{}"})"); }, stem::errc::invalid_envelope) ==
          "envelope.id: missing");
    CHECK(error_of([] { (void)stem::parse_envelope(R"({"id":null,"name":"t","args":"{}"})"); },
                   stem::errc::invalid_envelope) == "envelope.id: missing");
    CHECK(error_of([] { (void)stem::parse_envelope(R"({"id":"i","args":"{}"})"); }, stem::errc::invalid_envelope) ==
          "envelope.name: missing");
    CHECK(error_of([] { (void)stem::parse_envelope(R"({"id":"i","name":"t"})"); }, stem::errc::invalid_envelope) ==
          "envelope.args: missing");
}

TEST_CASE("core.envelope: out-of-range priority is refused") {
    auto msg = error_of([] { (void)stem::parse_envelope(with_field("priority", "12")); }, stem::errc::invalid_envelope);
    CHECK(msg.rfind("envelope.priority: ", 0) == 0);
    CHECK(msg.find("12") != std::string::npos);

    auto neg = error_of([] { (void)stem::parse_envelope(with_field("priority", "-1")); }, stem::errc::invalid_envelope);
    CHECK(neg.rfind("envelope.priority: ", 0) == 0);

    // The edges are accepted.
    CHECK(stem::parse_envelope(with_field("priority", "9")).priority == 9);
    CHECK(stem::parse_envelope(with_field("priority", "0")).priority == 0);
}

// Regression test for a bug found in review.
TEST_CASE("core.envelope: priority beyond int range is refused, not truncated") {
    auto msg = error_of([] { (void)stem::parse_envelope(with_field("priority", "4294967305")); },
                        stem::errc::invalid_envelope);
    CHECK(msg.rfind("envelope.priority: ", 0) == 0);
}

TEST_CASE("core.envelope: wrong field types are named") {
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("attempt", R"("2")")); }, stem::errc::invalid_envelope) ==
          "envelope.attempt: expected integer");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("attempt", "1.5")); }, stem::errc::invalid_envelope) ==
          "envelope.attempt: expected integer");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("id", "7")); }, stem::errc::invalid_envelope) ==
          "envelope.id: expected string");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("args", "{}")); }, stem::errc::invalid_envelope) ==
          "envelope.args: expected string");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("headers", "[]")); }, stem::errc::invalid_envelope) ==
          "envelope.headers: expected object");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("headers", R"({"a":"x","b":1})")); },
                   stem::errc::invalid_envelope) == "envelope.headers.b: expected string");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("meta", R"("m")")); }, stem::errc::invalid_envelope) ==
          "envelope.meta: expected object");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("retry_policy", "3")); }, stem::errc::invalid_envelope) ==
          "envelope.retry_policy: expected object");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("retry_policy", R"({"jitter":"yes"})")); },
                   stem::errc::invalid_envelope) == "envelope.retry_policy.jitter: expected true or false");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("not_before", "1767323045")); },
                   stem::errc::invalid_envelope) == "envelope.not_before: expected RFC 3339 time string");
}

TEST_CASE("core.envelope: bad time text names the field") {
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("not_before", R"("tomorrow")")); },
                   stem::errc::invalid_envelope) == "envelope.not_before: not an RFC 3339 time: 'tomorrow'");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("expires", R"("2026-02-30T00:00:00Z")")); },
                   stem::errc::invalid_envelope) == "envelope.expires: not an RFC 3339 time: '2026-02-30T00:00:00Z'");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("enqueued_at", R"("2026-01-02 03:04")")); },
                   stem::errc::invalid_envelope) == "envelope.enqueued_at: not an RFC 3339 time: '2026-01-02 03:04'");
}

TEST_CASE("core.envelope: text that is not a JSON object is refused") {
    auto not_json = error_of([] { (void)stem::parse_envelope("{\"id\":"); }, stem::errc::invalid_envelope);
    CHECK(not_json.rfind("envelope: not JSON (", 0) == 0);

    auto garbage = error_of([] { (void)stem::parse_envelope("hello"); }, stem::errc::invalid_envelope);
    CHECK(garbage.rfind("envelope: not JSON (", 0) == 0);

    CHECK(error_of([] { (void)stem::parse_envelope("[1,2]"); }, stem::errc::invalid_envelope) ==
          "envelope: expected a JSON object");
    CHECK(error_of([] { (void)stem::parse_envelope(R"("text")"); }, stem::errc::invalid_envelope) ==
          "envelope: expected a JSON object");
    CHECK(error_of([] { (void)stem::envelope_from_json(json::value(nullptr)); }, stem::errc::invalid_envelope) ==
          "envelope: expected a JSON object");
}

TEST_CASE("core.envelope: bad base64 args are refused") {
    auto json_text = [](const std::string& b64) {
        return std::string(R"({"id":"i","name":"t","args_base64":")") + b64 + "\"}";
    };
    for (std::string bad : {"!!!!", "AP/DKCBiaW4", "AP==DKCB", "A===", "AP/D KCB"}) {
        CAPTURE(bad);
        CHECK(error_of([&] { (void)stem::parse_envelope(json_text(bad)); }, stem::errc::invalid_envelope) ==
              "envelope.args_base64: not valid base64");
    }
    CHECK(stem::parse_envelope(json_text("AP8=")).args == std::string("\x00\xff", 2));
}

TEST_CASE("core.envelope: validate names the first field out of range") {
    auto e = minimal_envelope();
    CHECK_NOTHROW(stem::validate(e));

    auto with = [&](auto change) {
        auto c = minimal_envelope();
        change(c);
        return error_of([&] { stem::validate(c); }, stem::errc::invalid_envelope);
    };
    CHECK(with([](stem::envelope& c) { c.id.clear(); }).rfind("envelope.id: empty", 0) == 0);
    CHECK(with([](stem::envelope& c) { c.name.clear(); }).rfind("envelope.name: empty", 0) == 0);
    CHECK(with([](stem::envelope& c) { c.queue.clear(); }).rfind("envelope.queue: empty", 0) == 0);
    CHECK(with([](stem::envelope& c) { c.priority = 10; }) == "envelope.priority: 10 is outside 0..9 (task id 'id-1')");
    CHECK(with([](stem::envelope& c) { c.attempt = -1; }).rfind("envelope.attempt: negative", 0) == 0);
    CHECK(with([](stem::envelope& c) { c.max_retries = -3; }).rfind("envelope.max_retries: negative", 0) == 0);
    CHECK(with([](stem::envelope& c) { c.visibility_timeout = 0ms; }).rfind("envelope.visibility_timeout_ms: must be positive", 0) == 0);

    // The first fault wins: empty id is reported before a bad priority.
    CHECK(with([](stem::envelope& c) {
              c.id.clear();
              c.priority = 99;
          }).rfind("envelope.id: ", 0) == 0);

    // Parsing validates too.
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("queue", R"("")")); }, stem::errc::invalid_envelope) ==
          "envelope.queue: empty (task id 'id-1')");
    CHECK(error_of([] { (void)stem::parse_envelope(with_field("visibility_timeout_ms", "-5")); },
                   stem::errc::invalid_envelope)
              .rfind("envelope.visibility_timeout_ms: must be positive", 0) == 0);
}

TEST_CASE("core.envelope: envelopes differing in one field compare unequal") {
    auto a = full_envelope();
    auto b = a;
    CHECK(a == b);
    b.meta["tenant"] = "other";
    CHECK_FALSE(a == b);
    b = a;
    b.not_before = *a.not_before + 1us;
    CHECK_FALSE(a == b);
    b = a;
    b.retry->jitter = true;
    CHECK_FALSE(a == b);
}

TEST_CASE("core.envelope: the one-pass reader of flat envelopes agrees with the tree reader") {
    auto flat = full_envelope();
    flat.headers.clear();
    flat.meta.clear();
    flat.retry.reset();
    auto escaped = minimal_envelope();
    escaped.name = "t\"\\\n\u00e9";
    escaped.args = std::string(5000, 'a') + "\\\"b";  // long, and escaped near the end
    auto binary = minimal_envelope();
    binary.args = std::string("\x00\xff\x01", 3);
    for (const auto& text : {stem::serialize(flat), stem::serialize(minimal_envelope()), stem::serialize(escaped),
                             stem::serialize(binary), std::string(R"( { "id" : "i", "name":"t", "args":"{}", "queue":null,
                                                                   "priority":3, "group_id":null } )")}) {
        CAPTURE(text);
        auto one_pass = stem::detail::read_flat_envelope<stem::envelope>(text);
        REQUIRE(one_pass);
        CHECK(*one_pass == stem::envelope_from_json(json::parse(text)));
        CHECK(stem::parse_envelope(text) == *one_pass);
    }
    // Anything else goes to the tree reader, which accepts it or names the fault.
    for (const char* other : {R"({"id":"i","name":"t","args":"{}","headers":{}})", R"({"id":"i","name":"t","args":"{}","x":1})",
                              R"({"id":"i","name":"t","args":"{}","id":"j"})", R"({"id":"i","name":"t","args":"{}","args_base64":"AA=="})",
                              R"({"id":"i","name":"t","args":"{}","priority":"1"})", R"({"id":"i","name":"t","args":"{}","attempt":1.0})",
                              R"({"id":"i","name":"t","args":"{}","max_retries":18446744073709551615})", R"({"id":"i","name":"t"})",
                              R"({"id":"i","name":"t","args":"{}","expires":"soon"})", R"(["id"])", R"("id")", R"({"id":"i",)"}) {
        CAPTURE(other);
        CHECK_FALSE(stem::detail::read_flat_envelope<stem::envelope>(other));
    }
    CHECK(stem::parse_envelope(R"({"id":"i","name":"t","args":"{}","x":1})").name == "t");
    CHECK(stem::parse_envelope(R"({"id":"i","name":"t","args":"{}","args_base64":"AA=="})").args == "{}");
}
