// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// detail/protocol.hpp — requests formatted and replies parsed by hiredis; no RESP code here.
#pragma once

#include <stem/core/error.hpp>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <hiredis/hiredis.h>
#include <fmt/format.h>

namespace stem::redis {

namespace detail {

/// A block of the memory a reply tree is built in (see reply_reader); the root reply
/// starts right after the header of the first block.
struct reply_block {
    reply_block* next;
    std::size_t cap, used;
    char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
};
static_assert(sizeof(reply_block) % alignof(redisReply) == 0);

/// Frees the whole tree of `root`.
inline void free_reply(redisReply* root) noexcept {
    for (auto* b = reinterpret_cast<reply_block*>(root) - 1; b;) {
        auto* next = b->next;
        std::free(b);
        b = next;
    }
}

}  // namespace detail

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { detail::free_reply(r); }
};
/// One parsed reply (hiredis's tree, in hiredis's redisReply layout), owned.
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

    /// Room for `bytes` of formatted commands.
    void reserve(std::size_t bytes) { buf_.reserve(bytes); }
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

/// hiredis's incremental reply reader, building its replies with our functions: a reply
/// tree (redisReply nodes, as hiredis's own functions make them) lives in a few blocks
/// freed together, not in one or two allocations per element (a read of 1,000 stream
/// entries made some 14,000).
class reply_reader {
public:
    reply_reader() : r_(redisReaderCreateWithFunctions(&functions)) {
        if (!r_) throw std::bad_alloc();
        r_->privdata = this;
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
    static constexpr std::size_t max_block = 64 * 1024;  ///< under malloc's mmap threshold

    [[noreturn]] void fail() {
        throw error(errc::backend_failure, fmt::format("redis: protocol error: {}", r_->errstr));
    }

    static reply_block* new_block(std::size_t cap) noexcept {
        void* m = std::malloc(sizeof(reply_block) + cap);
        return m ? new (m) reply_block{nullptr, cap, 0} : nullptr;
    }
    static std::size_t aligned(std::size_t n) noexcept { return (n + alignof(redisReply) - 1) & ~(alignof(redisReply) - 1); }
    /// `n` bytes of the tree being built.
    void* allocate(std::size_t n) noexcept {
        n = aligned(n);
        if (last_->used + n > last_->cap) {
            auto* b = new_block(std::max(n, std::min(2 * last_->cap, max_block)));
            if (!b) return nullptr;
            last_->next = b;
            last_ = b;
        }
        void* p = last_->data() + last_->used;
        last_->used += n;
        return p;
    }
    /// A node of `type` for `task`, linked into its parent; a root starts a new tree with room for
    /// about `more` bytes of what follows.
    static redisReply* node(const redisReadTask* task, int type, std::size_t more) noexcept {
        auto& self = *static_cast<reply_reader*>(task->privdata);
        if (!task->parent) {
            auto* b = new_block(std::clamp<std::size_t>(sizeof(redisReply) + aligned(more), 256, max_block));
            if (!b) return nullptr;
            self.last_ = b;
        }
        auto* r = static_cast<redisReply*>(self.allocate(sizeof(redisReply)));
        if (!r) return nullptr;
        std::memset(r, 0, sizeof *r);
        r->type = type;
        if (task->parent) static_cast<redisReply*>(task->parent->obj)->element[task->idx] = r;
        return r;
    }
    static void* create_string(const redisReadTask* task, char* s, std::size_t len) {
        auto* r = node(task, task->type, len + 1);  // string, status or error
        if (!r) return nullptr;
        auto& self = *static_cast<reply_reader*>(task->privdata);
        r->str = static_cast<char*>(self.allocate(len + 1));
        if (!r->str) return abandon(task, r);
        std::memcpy(r->str, s, len);
        r->str[len] = '\0';
        r->len = len;
        return r;
    }
    static void* create_array(const redisReadTask* task, int elements) {
        auto n = std::size_t(std::max(elements, 0));
        auto* r = node(task, REDIS_REPLY_ARRAY, n * 96);  // a guess at the elements' size
        if (!r) return nullptr;
        r->elements = n;
        if (n > 0) {
            auto& self = *static_cast<reply_reader*>(task->privdata);
            r->element = static_cast<redisReply**>(self.allocate(n * sizeof(redisReply*)));
            if (!r->element) return abandon(task, r);
        }
        return r;
    }
    /// Out of memory after the node was made: hiredis keeps only roots it was given, so a
    /// root's tree is freed here (a child belongs to its root, which hiredis frees).
    static void* abandon(const redisReadTask* task, redisReply* r) noexcept {
        if (!task->parent) free_reply(r);
        return nullptr;
    }
    static void* create_integer(const redisReadTask* task, long long v) {
        auto* r = node(task, REDIS_REPLY_INTEGER, 0);
        if (r) r->integer = v;
        return r;
    }
    static void* create_nil(const redisReadTask* task) { return node(task, REDIS_REPLY_NIL, 0); }
    /// hiredis frees only roots (a reply it abandons on an error).
    static void free_object(void* root) { free_reply(static_cast<redisReply*>(root)); }

    static inline redisReplyObjectFunctions functions{create_string, create_array, create_integer, create_nil, free_object};

    redisReader* r_;
    reply_block* last_ = nullptr;  ///< the block the tree being built grows in
};

}  // namespace detail
}  // namespace stem::redis
