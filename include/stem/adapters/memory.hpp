// stem/adapters/memory: the in-process adapters (tests, demos; no server, not durable).
// memory.hpp — both memory adapters.
#pragma once

#include <stem/adapters/memory/memory_backend.hpp>
#include <stem/adapters/memory/memory_broker.hpp>
