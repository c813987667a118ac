// Tests of stem/core/task_status.hpp and stem/core/task_state.hpp.
#include <doctest/doctest.h>

#include <stem/core/clock.hpp>
#include <stem/core/error.hpp>
#include <stem/core/task_state.hpp>
#include <stem/core/task_status.hpp>

#include "expect_error.hpp"

#include <string>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

namespace json = boost::json;
using core_tests::error_of;

namespace {

stem::task_status full_status() {
    stem::task_status s;
    s.id = "0190a6a8-1c2d-7abc-8def-0123456789ab";
    s.name = "report.build";
    s.state = stem::task_state::failed;
    s.result = R"({"partial":true})";
    s.result_encoder = "gzip";
    s.error = stem::task_error{"std::runtime_error", "disk full",
                               json::parse(R"({"path":"/tmp/x","codes":[28,5]})").get_object(), true};
    s.attempt = 3;
    s.progress = 42.5;
    s.progress_data = json::parse(R"({"step":"render","done":17})").get_object();
    s.meta = json::parse(R"({"tenant":"acme"})").get_object();
    s.queue = "reports";
    s.worker_id = "worker-7";
    s.group_id = "g-1";
    s.created_at = stem::from_unix_micros(1767323045000001);
    s.updated_at = stem::from_unix_micros(1767323099999999);
    s.started_at = stem::from_unix_micros(1767323046500000);
    s.finished_at = stem::from_unix_micros(1767323099999999);
    return s;
}

stem::task_status round_trip(const stem::task_status& s) {
    return stem::task_status_from_json(json::parse(json::serialize(stem::to_json(s))));
}

}  // namespace

TEST_CASE("core.task_status: full round trip through JSON text compares equal") {
    auto s = full_status();
    auto back = round_trip(s);
    CHECK(back == s);
    CHECK(back.state == stem::task_state::failed);
    REQUIRE(back.result.has_value());
    CHECK(*back.result == R"({"partial":true})");
    CHECK(back.result_encoder == "gzip");
    REQUIRE(back.error.has_value());
    CHECK(back.error->type == "std::runtime_error");
    CHECK(back.error->message == "disk full");
    CHECK(back.error->context == s.error->context);
    CHECK(back.error->retryable);
    CHECK(back.attempt == 3);
    CHECK(back.progress == 42.5);
    CHECK(back.progress_data == s.progress_data);
    CHECK(back.meta == s.meta);
    CHECK(back.queue == "reports");
    CHECK(back.worker_id == "worker-7");
    CHECK(back.group_id == "g-1");
    CHECK(back.created_at == s.created_at);
    CHECK(back.updated_at == s.updated_at);
    CHECK(back.started_at == s.started_at);
    CHECK(back.finished_at == s.finished_at);
}

TEST_CASE("core.task_status: the text written field by field is the object form's, byte for byte") {
    auto s = full_status();
    CHECK(stem::serialize(s) == json::serialize(stem::to_json(s)));
    // Strings that must be escaped, a binary result, a fractional progress, a sparse record.
    s.name = "quote\" backslash\\ newline\n tab\t nul" + std::string(1, '\0') + " \x01 h\u00e9llo \u2603";
    s.result = std::string("\xff\x00\x01", 3);
    s.error->message = "line 1\nline \"2\"";
    s.progress = 1.0 / 3;
    CHECK(stem::serialize(s) == json::serialize(stem::to_json(s)));
    CHECK(stem::task_status_from_json(json::parse(stem::serialize(s))) == s);
    stem::task_status sparse;
    sparse.id = "id-1";
    CHECK(stem::serialize(sparse) == json::serialize(stem::to_json(sparse)));
}

TEST_CASE("core.task_status: JSON form") {
    auto o = stem::to_json(full_status());
    CHECK(o.at("state") == json::value("failed"));
    CHECK(o.at("result") == json::value(R"({"partial":true})"));
    CHECK_FALSE(o.contains("result_base64"));
    CHECK(o.at("error") ==
          json::parse(R"({"type":"std::runtime_error","message":"disk full","context":{"path":"/tmp/x","codes":[28,5]},"retryable":true})"));
    CHECK(o.at("created_at") == json::value("2026-01-02T03:04:05.000001Z"));
    CHECK(o.at("finished_at") == json::value("2026-01-02T03:04:59.999999Z"));
}

TEST_CASE("core.task_status: binary result travels as result_base64") {
    stem::task_status s;
    s.id = "i";
    s.state = stem::task_state::succeeded;
    s.result = std::string("\x00\x01\xfe\xff", 4);
    auto o = stem::to_json(s);
    CHECK_FALSE(o.contains("result"));
    CHECK(o.at("result_base64") == json::value("AAH+/w=="));
    auto back = round_trip(s);
    REQUIRE(back.result.has_value());
    CHECK(*back.result == std::string("\x00\x01\xfe\xff", 4));
    CHECK(back == s);
}

TEST_CASE("core.task_status: no result and an empty result are distinct") {
    stem::task_status none;
    none.id = "i";
    auto o = stem::to_json(none);
    CHECK_FALSE(o.contains("result"));
    CHECK_FALSE(o.contains("result_base64"));
    CHECK_FALSE(o.contains("error"));
    auto back = round_trip(none);
    CHECK_FALSE(back.result.has_value());
    CHECK_FALSE(back.error.has_value());
    CHECK(back == none);

    auto empty = none;
    empty.result = "";
    auto eback = round_trip(empty);
    REQUIRE(eback.result.has_value());
    CHECK(eback.result->empty());
}

TEST_CASE("core.task_status: every state round trips by name") {
    for (auto st : {stem::task_state::queued, stem::task_state::running, stem::task_state::retried,
                    stem::task_state::succeeded, stem::task_state::failed, stem::task_state::cancelled}) {
        stem::task_status s;
        s.id = "i";
        s.state = st;
        CAPTURE(std::string(stem::to_string(st)));
        CHECK(stem::to_json(s).at("state") == json::value(stem::to_string(st)));
        CHECK(round_trip(s).state == st);
    }
}

TEST_CASE("core.task_status: malformed status records are refused with decode_failed") {
    auto parse = [](const char* text) { return stem::task_status_from_json(json::parse(text)); };
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"exploded"})"); }, stem::errc::decode_failed) ==
          "task_status.state: unknown state name");
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"Succeeded"})"); }, stem::errc::decode_failed) ==
          "task_status.state: unknown state name");
    CHECK(error_of([&] { (void)parse(R"({"state":"queued"})"); }, stem::errc::decode_failed) == "task_status.id: missing");
    CHECK(error_of([&] { (void)parse(R"({"id":"i"})"); }, stem::errc::decode_failed) == "task_status.state: missing");
    CHECK(error_of([&] { (void)parse(R"([])"); }, stem::errc::decode_failed) == "task_status: expected a JSON object");
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"queued","result_base64":"@@@@"})"); },
                   stem::errc::decode_failed) == "task_status.result_base64: not valid base64");
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"queued","error":"boom"})"); }, stem::errc::decode_failed) ==
          "task_status.error: expected object");
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"queued","error":{"retryable":1}})"); },
                   stem::errc::decode_failed) == "task_status.error.retryable: expected true or false");
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"queued","progress":"half"})"); },
                   stem::errc::decode_failed) == "task_status.progress: expected number");
    CHECK(error_of([&] { (void)parse(R"({"id":"i","state":"queued","started_at":"soon"})"); },
                   stem::errc::decode_failed) == "task_status.started_at: not an RFC 3339 time: 'soon'");
}

TEST_CASE("core.task_status: sparse record reads defaults") {
    auto s = stem::task_status_from_json(json::parse(R"({"id":"i","state":"running","progress":7})"));
    CHECK(s.id == "i");
    CHECK(s.name.empty());
    CHECK(s.state == stem::task_state::running);
    CHECK(s.result_encoder == "json");
    CHECK(s.progress == 7.0);
    CHECK(s.attempt == 0);
    CHECK(s.created_at == stem::time_point{});
    CHECK_FALSE(s.started_at.has_value());
}

TEST_CASE("core.task_state: names of all six states") {
    CHECK(stem::to_string(stem::task_state::queued) == "queued");
    CHECK(stem::to_string(stem::task_state::running) == "running");
    CHECK(stem::to_string(stem::task_state::retried) == "retried");
    CHECK(stem::to_string(stem::task_state::succeeded) == "succeeded");
    CHECK(stem::to_string(stem::task_state::failed) == "failed");
    CHECK(stem::to_string(stem::task_state::cancelled) == "cancelled");
    CHECK(stem::to_string(static_cast<stem::task_state>(99)) == "unknown");
    CHECK(fmt::format("[{}]", stem::task_state::retried) == "[retried]");
    static_assert(stem::to_string(stem::task_state::failed) == "failed");
}

TEST_CASE("core.task_state: from_string inverts to_string and rejects other names") {
    CHECK(stem::task_state_from_string("queued") == stem::task_state::queued);
    CHECK(stem::task_state_from_string("running") == stem::task_state::running);
    CHECK(stem::task_state_from_string("retried") == stem::task_state::retried);
    CHECK(stem::task_state_from_string("succeeded") == stem::task_state::succeeded);
    CHECK(stem::task_state_from_string("failed") == stem::task_state::failed);
    CHECK(stem::task_state_from_string("cancelled") == stem::task_state::cancelled);
    CHECK_FALSE(stem::task_state_from_string("").has_value());
    CHECK_FALSE(stem::task_state_from_string("canceled").has_value());
    CHECK_FALSE(stem::task_state_from_string("FAILED").has_value());
    CHECK_FALSE(stem::task_state_from_string("unknown").has_value());
    CHECK_FALSE(stem::task_state_from_string("queued ").has_value());
}

TEST_CASE("core.task_state: terminal states are succeeded, failed and cancelled") {
    CHECK_FALSE(stem::is_terminal(stem::task_state::queued));
    CHECK_FALSE(stem::is_terminal(stem::task_state::running));
    CHECK_FALSE(stem::is_terminal(stem::task_state::retried));
    CHECK(stem::is_terminal(stem::task_state::succeeded));
    CHECK(stem::is_terminal(stem::task_state::failed));
    CHECK(stem::is_terminal(stem::task_state::cancelled));
}
