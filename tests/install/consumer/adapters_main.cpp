// Links stem::sqlite, stem::postgres and stem::redis from an installed stem: opens the
// embedded default's broker and backend in a scratch directory, and makes (without
// connecting) a Redis broker from a URL.
#include <stem/adapters/url.hpp>

#include <cstdio>
#include <filesystem>

int main() {
    auto dir = std::filesystem::temp_directory_path() / "stem-install-consumer";
    std::filesystem::remove_all(dir);
    auto broker = stem::make_broker("sqlite://" + (dir / "broker.db").string());
    auto backend = stem::make_backend("sqlite://" + (dir / "backend.db").string());
    auto redis = stem::make_broker("redis://127.0.0.1:1/0?namespace=consumer");  // connects on first use only
    bool ok = broker.capabilities().durable && std::filesystem::exists(dir / "broker.db") &&
              std::filesystem::exists(dir / "backend.db") && redis.capabilities().cross_process_broadcast;
    std::filesystem::remove_all(dir);
    std::printf("sqlite and redis adapters through an installed stem: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
