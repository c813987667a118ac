// stem/core: vocabulary shared by every room, with no I/O.
// error.hpp — stem::errc, its error category and stem::error.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>

namespace stem {

/// Error conditions raised by stem itself.
enum class errc {
    invalid_envelope = 1,  ///< an envelope could not be decoded (the message names the field)
    invalid_argument,      ///< a value given by the caller is out of range or malformed
    decode_failed,         ///< task arguments or results do not match their type
    encode_failed,         ///< a value could not be encoded
    unknown_encoder,       ///< no payload encoder is registered under an id
    unknown_task,          ///< no handler is registered under a task name
    duplicate_task,        ///< two handlers were registered under one name
    lease_lost,            ///< the delivery's lease expired and was granted to another consumer
    not_found,             ///< the record asked for does not exist
    timeout,               ///< the operation did not finish in time
    cancelled,             ///< the task or operation was cancelled
    shutting_down,         ///< the component is stopping and takes no new work
    unsupported,           ///< the adapter does not provide this capability
    backend_failure,       ///< the store reported an error
};

namespace detail {
class error_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "stem"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
        case errc::invalid_envelope: return "invalid envelope";
        case errc::invalid_argument: return "invalid argument";
        case errc::decode_failed: return "decode failed";
        case errc::encode_failed: return "encode failed";
        case errc::unknown_encoder: return "unknown payload encoder";
        case errc::unknown_task: return "unknown task";
        case errc::duplicate_task: return "duplicate task name";
        case errc::lease_lost: return "lease lost";
        case errc::not_found: return "not found";
        case errc::timeout: return "timed out";
        case errc::cancelled: return "cancelled";
        case errc::shutting_down: return "shutting down";
        case errc::unsupported: return "unsupported by this adapter";
        case errc::backend_failure: return "backend failure";
        }
        return "unknown stem error";
    }
};
}  // namespace detail

/// The category of stem::errc values.
inline const std::error_category& error_category() noexcept {
    static const detail::error_category_impl cat;
    return cat;
}

inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

/// The exception stem throws: a system_error whose what() carries context
/// (task id, queue, field path, URL without password).
class error : public std::system_error {
public:
    error(errc e, const std::string& context) : std::system_error(make_error_code(e), context) {}
    explicit error(errc e) : std::system_error(make_error_code(e)) {}
    errc condition() const noexcept { return static_cast<errc>(code().value()); }
};

}  // namespace stem

template <>
struct std::is_error_code_enum<stem::errc> : std::true_type {};
