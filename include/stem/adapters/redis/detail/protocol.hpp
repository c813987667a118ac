// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/protocol.hpp — requests formatted and replies parsed by hiredis; no RESP code here.
#pragma once

#include <stem/core/error.hpp>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <hiredis/hiredis.h>
#include <fmt/format.h>

namespace stem::redis {

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
/// One parsed reply (hiredis's tree), owned.
using reply = std::unique_ptr<redisReply, reply_deleter>;

/// Text of a string, status or error reply ("" for others).
inline std::string_view text(const redisReply& r) noexcept {
    if (r.type == REDIS_REPLY_STRING || r.type == REDIS_REPLY_STATUS || r.type == REDIS_REPLY_ERROR)
        return {r.str, r.len};
    return {};
}
inline bool is_error(const redisReply& r) noexcept { return r.type == REDIS_REPLY_ERROR; }
inline bool is_nil(const redisReply& r) noexcept { return r.type == REDIS_REPLY_NIL; }

/// Throws a stem::error (backend_failure) when `r` is an error reply.
inline const redisReply& checked(const redisReply& r, std::string_view what) {
    if (is_error(r)) throw error(errc::backend_failure, fmt::format("redis: {}: {}", what, text(r)));
    return r;
}

/// The integer of an integer reply, or of a string holding digits.
inline std::int64_t integer(const redisReply& r) {
    if (r.type == REDIS_REPLY_INTEGER) return r.integer;
    auto t = text(r);
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc{} || p != t.data() + t.size())
        throw error(errc::backend_failure, fmt::format("redis: expected an integer reply, got '{}'", t));
    return v;
}

/// Element `i` of an array reply.
inline const redisReply& at(const redisReply& r, std::size_t i) {
    if (r.type != REDIS_REPLY_ARRAY || i >= r.elements)
        throw error(errc::backend_failure, "redis: unexpected reply shape");
    return *r.element[i];
}
inline std::size_t size(const redisReply& r) noexcept { return r.type == REDIS_REPLY_ARRAY ? r.elements : 0; }

/// One or more commands, formatted with hiredis and sent together.
class request {
public:
    /// Appends one command; arguments are strings (binary-safe) or integers.
    template <class... Args>
    request& push(const Args&... args) {
        std::string_view parts[sizeof...(Args)];
        std::string owned[sizeof...(Args)];
        std::size_t i = 0;
        ((parts[i] = view(args, owned[i]), ++i), ...);
        return push_range(parts, parts + sizeof...(Args));
    }

    /// Appends one command from a range of string_view-convertible arguments.
    template <class It>
    request& push_range(It first, It last) {
        argv_.clear();
        lens_.clear();
        for (; first != last; ++first) {
            std::string_view a = *first;
            argv_.push_back(a.data());
            lens_.push_back(a.size());
        }
        char* cmd = nullptr;
        int n = redisFormatCommandArgv(&cmd, int(argv_.size()), argv_.data(), lens_.data());
        if (n < 0) throw error(errc::encode_failed, "redis: a command could not be formatted");
        buf_.append(cmd, std::size_t(n));
        std::free(cmd);
        ++commands_;
        return *this;
    }

    std::size_t commands() const noexcept { return commands_; }
    const std::string& payload() const noexcept { return buf_; }
    std::string take_payload() noexcept { return std::move(buf_); }

private:
    static std::string_view view(std::string_view s, std::string&) { return s; }
    static std::string_view view(const std::string& s, std::string&) { return s; }
    static std::string_view view(const char* s, std::string&) { return s; }
    template <class I>
        requires std::is_integral_v<I>
    static std::string_view view(I v, std::string& owned) {
        owned = std::to_string(v);
        return owned;
    }

    std::string buf_;
    std::size_t commands_ = 0;
    std::vector<const char*> argv_;
    std::vector<std::size_t> lens_;
};

namespace detail {

/// hiredis's incremental reply reader.
class reply_reader {
public:
    reply_reader() : r_(redisReaderCreate()) {
        if (!r_) throw std::bad_alloc();
    }
    ~reply_reader() { redisReaderFree(r_); }
    reply_reader(const reply_reader&) = delete;
    reply_reader& operator=(const reply_reader&) = delete;

    void feed(const char* data, std::size_t n) {
        if (redisReaderFeed(r_, data, n) != REDIS_OK) fail();
    }
    /// The next complete reply, or null when more bytes are needed.
    reply next() {
        void* out = nullptr;
        if (redisReaderGetReply(r_, &out) != REDIS_OK) fail();
        return reply(static_cast<redisReply*>(out));
    }

private:
    [[noreturn]] void fail() {
        throw error(errc::backend_failure, fmt::format("redis: protocol error: {}", r_->errstr));
    }
    redisReader* r_;
};

}  // namespace detail
}  // namespace stem::redis
