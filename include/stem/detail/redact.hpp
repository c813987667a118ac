// stem/detail: internals, never included by users directly.
// redact.hpp — connection strings without their passwords, for messages and logs.
#pragma once

#include <string>
#include <string_view>

namespace stem::detail {

/// `url` with any password replaced by "***": the `user:password@` part of a URI, a
/// `password=` query parameter, or a `password=` key of a libpq key=value string.
inline std::string redact_password(std::string_view url) {
    std::string out(url);
    if (auto scheme = out.find("://"); scheme != std::string::npos) {
        auto start = scheme + 3;
        auto end = out.find_first_of("/?#", start);
        if (end == std::string::npos) end = out.size();
        if (auto at = out.rfind('@', end); at != std::string::npos && at >= start) {
            if (auto colon = out.find(':', start); colon != std::string::npos && colon < at)
                out.replace(colon + 1, at - colon - 1, "***");
        }
    }
    // password=... as a query parameter or a key=value pair
    for (std::size_t pos = 0; (pos = out.find("password=", pos)) != std::string::npos;) {
        bool key_start = pos == 0 || out[pos - 1] == '?' || out[pos - 1] == '&' || out[pos - 1] == ' ';
        pos += 9;
        if (!key_start) continue;
        auto end = out.find_first_of("& ", pos);
        if (end == std::string::npos) end = out.size();
        out.replace(pos, end - pos, "***");
    }
    return out;
}

}  // namespace stem::detail
