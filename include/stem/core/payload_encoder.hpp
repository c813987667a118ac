// stem/core: vocabulary shared by every room, with no I/O.
// payload_encoder.hpp — transforms applied to encoded arguments and results (encryption,
// compression...), looked up by an id that travels with the envelope and the status.
#pragma once

#include <stem/core/error.hpp>
#include <stem/detail/text.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace stem {

/// One reversible transform of payload bytes. `encode` receives JSON text and
/// may return any bytes; `decode` must give the JSON text back.
struct payload_encoder {
    std::string id;
    std::function<std::string(std::string_view)> encode;
    std::function<std::string(std::string_view)> decode;
};

/// Encoder ids known to a process. "json" (the identity) is always present;
/// "base64" is provided as a ready-made text-safe transform.
class payload_encoder_registry {
public:
    payload_encoder_registry() {
        add({"base64", [](std::string_view s) { return detail::base64_encode(s); },
             [](std::string_view s) {
                 auto out = detail::base64_decode(s);
                 if (!out) throw error(errc::decode_failed, "payload is not valid base64");
                 return std::move(*out);
             }});
    }

    /// Registers `e`; replacing "json" is refused, any other id may be replaced.
    void add(payload_encoder e) {
        if (e.id.empty() || e.id == "json")
            throw error(errc::invalid_argument, fmt::format("payload encoder id '{}' is reserved or empty", e.id));
        if (!e.encode || !e.decode)
            throw error(errc::invalid_argument, fmt::format("payload encoder '{}' needs both encode and decode", e.id));
        auto id = e.id;
        encoders_[id] = std::make_shared<const payload_encoder>(std::move(e));
    }

    bool contains(std::string_view id) const { return id == "json" || encoders_.contains(std::string(id)); }

    /// JSON text → wire bytes under encoder `id`.
    std::string encode(std::string_view id, std::string json_text) const {
        if (id == "json") return json_text;
        return find(id).encode(json_text);
    }
    /// Wire bytes → JSON text under encoder `id`.
    std::string decode(std::string_view id, std::string wire) const {
        if (id == "json") return wire;
        return find(id).decode(wire);
    }

    /// Encoder used for arguments / results when a task does not say otherwise.
    std::string default_args_encoder = "json";
    std::string default_result_encoder = "json";

private:
    const payload_encoder& find(std::string_view id) const {
        auto it = encoders_.find(std::string(id));
        if (it == encoders_.end())
            throw error(errc::unknown_encoder, fmt::format("no payload encoder registered under id '{}'", id));
        return *it->second;
    }
    std::map<std::string, std::shared_ptr<const payload_encoder>> encoders_;
};

}  // namespace stem
