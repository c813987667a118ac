// Test support for the Redis adapters: the test server's URL and fresh namespaces.
#pragma once

#include "support/async.hpp"
#include "support/runtime.hpp"

#include <stem/adapters/redis.hpp>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <unistd.h>

namespace redis_test {

/// The test server's URL; a clear failure when scripts/test did not start one.
inline std::string redis_url() {
    const char* u = std::getenv("STEM_TEST_REDIS_URL");
    if (!u || !*u) throw std::runtime_error("STEM_TEST_REDIS_URL is not set: run scripts/test, which starts a private redis-server");
    return u;
}

/// A namespace of its own per store, so cases never see each other's keys.
inline std::string fresh_namespace() {
    static std::atomic<int> n{0};
    return fmt::format("t{}_{}", ::getpid(), ++n);
}

inline stem::redis_broker_options broker_opts(std::string ns) {
    stem::redis_broker_options o;
    o.server = stem::redis::config::from_url(redis_url());
    o.namespace_ = std::move(ns);
    o.broadcast_poll = std::chrono::milliseconds(100);
    return o;
}

inline stem::redis_backend_options backend_opts(std::string ns) {
    stem::redis_backend_options o;
    o.server = stem::redis::config::from_url(redis_url());
    o.namespace_ = std::move(ns);
    return o;
}

}  // namespace redis_test
