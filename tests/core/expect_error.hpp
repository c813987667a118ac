// Shared helper of the core tests: run a callable that must throw stem::error.
#pragma once

#include <doctest/doctest.h>

#include <stem/core/error.hpp>

#include <exception>
#include <string>

namespace core_tests {

/// Runs `f`, expecting stem::error with `code`; returns the context part of its what()
/// (std::system_error appends ": <category message>", which is checked and removed).
template <class F>
std::string error_of(F&& f, stem::errc code) {
    try {
        f();
    } catch (const stem::error& e) {
        CHECK(e.condition() == code);
        CHECK(e.code() == stem::make_error_code(code));
        std::string what = e.what();
        std::string suffix = ": " + stem::make_error_code(code).message();
        REQUIRE(what.size() > suffix.size());
        CHECK(what.substr(what.size() - suffix.size()) == suffix);
        return what.substr(0, what.size() - suffix.size());
    } catch (const std::exception& e) {
        FAIL_CHECK("unexpected exception type: " << e.what());
        return "<not a stem::error>";
    }
    FAIL_CHECK("no stem::error thrown");
    return "<no exception>";
}

}  // namespace core_tests
