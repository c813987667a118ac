// The broker and backend contract kits, run against the SQLite adapters (a fresh file
// per case), directly and through any_broker / any_backend made from a URL.
#include "contracts/backend_kit.hpp"
#include "contracts/broker_kit.hpp"
#include "support/temp_dir.hpp"

#include <stem/adapters/sqlite.hpp>
#include <stem/adapters/url.hpp>

namespace {

stem::sqlite_broker_options fast_broker(std::string path) {
    stem::sqlite_broker_options o;
    o.path = std::move(path);
    o.poll_interval = std::chrono::milliseconds(10);
    return o;
}

struct sqlite_broker_fixture {
    static stem::sqlite_broker make() { return stem::sqlite_broker{fast_broker(stem_test::scratch_file("broker"))}; }
    // A second object on the same file: what a second process would open.
    static stem::sqlite_broker peer(stem::sqlite_broker& b) { return stem::sqlite_broker{fast_broker(b.path())}; }
};
struct url_sqlite_broker_fixture {
    static stem::any_broker make() {
        return stem::make_broker("sqlite://" + stem_test::scratch_file("broker") + "?poll_interval=10ms&namespace=kit");
    }
    static stem::any_broker peer(stem::any_broker& b) { return b; }
};
struct sqlite_backend_fixture {
    static stem::sqlite_backend make() {
        stem::sqlite_backend_options o;
        o.path = stem_test::scratch_file("backend");
        o.poll_interval = std::chrono::milliseconds(10);
        return stem::sqlite_backend{o};
    }
    static stem::sqlite_backend peer(stem::sqlite_backend& r) { return r; }
};
struct url_sqlite_backend_fixture {
    static stem::any_backend make() {
        return stem::make_backend("sqlite://" + stem_test::scratch_file("backend") + "?poll_interval=10ms&namespace=kit");
    }
    static stem::any_backend peer(stem::any_backend& r) { return r; }
};

}  // namespace

STEM_BROKER_CONTRACT_TESTS(sqlite_broker_fixture, "sqlite")
STEM_BROKER_CONTRACT_TESTS(url_sqlite_broker_fixture, "any(sqlite)")
STEM_BACKEND_CONTRACT_TESTS(sqlite_backend_fixture, "sqlite")
STEM_BACKEND_CONTRACT_TESTS(url_sqlite_backend_fixture, "any(sqlite)")
