// Built against an installed stem by tests/install/install_test.cmake.
#include <stem/core/task_id.hpp>

#include <cstdio>
#include <string>

int main() {
    const std::string id = stem::make_task_id();
    std::printf("task id from installed stem: %s\n", id.c_str());
    if (id.size() != 36) {
        std::fprintf(stderr, "expected a 36-character id, got %zu characters\n", id.size());
        return 1;
    }
    return 0;
}
