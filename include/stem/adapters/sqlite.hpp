// stem/adapters/sqlite: the SQLite adapters (embedded default; one host, no server).
// sqlite.hpp — both SQLite adapters. Link the CMake target stem::sqlite.
#pragma once

#include <stem/adapters/sqlite/sqlite_backend.hpp>
#include <stem/adapters/sqlite/sqlite_broker.hpp>
