// stem/adapters/postgres: the PostgreSQL adapters (libpqxx).
// postgres.hpp — both PostgreSQL adapters. Link the CMake target stem::postgres.
#pragma once

#include <stem/adapters/postgres/postgres_backend.hpp>
#include <stem/adapters/postgres/postgres_broker.hpp>
