// Test support: a scratch directory for files (SQLite databases), removed at exit.
#pragma once

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace stem_test {

/// The suite's scratch directory: $STEM_TEST_TMPDIR or the system's, one per process.
inline const std::filesystem::path& scratch_dir() {
    struct dir {
        std::filesystem::path path;
        dir() {
            const char* base = std::getenv("STEM_TEST_TMPDIR");
            path = std::filesystem::path(base && *base ? base : std::filesystem::temp_directory_path().string()) /
                   ("stem-tests-" + std::to_string(::getpid()));
            std::filesystem::create_directories(path);
        }
        ~dir() {
            std::error_code ec;
            std::filesystem::remove_all(path, ec);
        }
    };
    static dir d;
    return d.path;
}

/// A fresh file name in the scratch directory.
inline std::string scratch_file(const std::string& stem_name) {
    static std::atomic<int> n{0};
    return (scratch_dir() / (stem_name + "-" + std::to_string(++n) + ".db")).string();
}

}  // namespace stem_test
