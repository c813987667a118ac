// Test support for runtime tests: a one-number argument type and app options for tests.
#pragma once

#include <stem/stem.hpp>

#include <chrono>

namespace stem_test {

/// Arguments of the small test tasks.
struct num_args {
    int x = 0;
};
BOOST_DESCRIBE_STRUCT(num_args, (), (x))

/// App options for tests: no OS signal handlers, no environment, short waits.
inline stem::app_options app_options(std::size_t concurrency) {
    using namespace std::chrono_literals;
    stem::app_options o;
    o.signals_from_env = false;
    o.worker.install_signal_handlers = false;
    o.worker.concurrency = concurrency;
    o.worker.prefetch_multiplier = 4;
    o.worker.poll_wait = 100ms;
    o.worker.heartbeat_interval = 50ms;
    o.worker.soft_shutdown_timeout = 300ms;
    return o;
}

}  // namespace stem_test
