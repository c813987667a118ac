// Links stem::sqlite and stem::postgres from an installed stem: opens the embedded
// default's broker and backend in a scratch directory.
#include <stem/adapters/url.hpp>

#include <cstdio>
#include <filesystem>

int main() {
    auto dir = std::filesystem::temp_directory_path() / "stem-install-consumer";
    std::filesystem::remove_all(dir);
    auto broker = stem::make_broker("sqlite://" + (dir / "broker.db").string());
    auto backend = stem::make_backend("sqlite://" + (dir / "backend.db").string());
    bool ok = broker.capabilities().durable && std::filesystem::exists(dir / "broker.db") &&
              std::filesystem::exists(dir / "backend.db");
    std::filesystem::remove_all(dir);
    std::printf("sqlite adapters through an installed stem: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
