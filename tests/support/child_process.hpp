// Test support: a forked child process that does not outlive the test process.
#pragma once

#include <csignal>

#include <sys/prctl.h>
#include <unistd.h>

namespace stem_test {

/// fork(); the child is sent SIGKILL when the test process ends, however it ends
/// (a failed REQUIRE, a crash, a ctest timeout), so no worker process outlives the
/// case that started it. Returns what fork() returns.
inline pid_t fork_child() {
    pid_t parent = ::getpid();
    pid_t child = ::fork();
    if (child == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(1);  // the parent ended before the request took effect
    }
    return child;
}

}  // namespace stem_test
