// stem/adapters: the Redis adapters. Link the CMake target stem::redis.
// redis.hpp — redis_broker (Redis Streams) and redis_backend.
#pragma once

#include <stem/adapters/redis/redis_backend.hpp>
#include <stem/adapters/redis/redis_broker.hpp>
