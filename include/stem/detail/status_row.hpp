// stem/detail: internals, never included by users directly.
// status_row.hpp — a status write as the backends batch it, and which writes of a batch run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace stem::detail {

/// One status write, ready for the database thread; `State` is the backend's shared state.
template <class State>
struct status_row {
    State* s;
    std::string id, state_name, name;
    std::int64_t updated_at, expires_at;  ///< unix µs
    std::string text;                     ///< the status as JSON
    std::int64_t now;                     ///< unix µs, when it was written
};

/// For the writes of a batch in order, where `id_of(i)` names the record write `i` changes:
/// true for each write that no later write of the same record follows (the one to run).
template <class IdOf>
std::vector<bool> last_of_each(std::size_t n, IdOf id_of) {
    std::vector<bool> last(n, true);
    if (n > 1) {
        std::unordered_set<std::string_view> later;
        for (auto i = n; i-- > 0;) last[i] = later.insert(id_of(i)).second;
    }
    return last;
}

}  // namespace stem::detail
