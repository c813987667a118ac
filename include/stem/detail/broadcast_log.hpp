// stem/detail: internals, never included by users directly.
// broadcast_log.hpp — in-process broadcast channels: every consumer name reads each envelope once.
#pragma once

#include <stem/contracts/broker.hpp>
#include <stem/detail/chunked_deque.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace stem::detail {

/// Channels of envelopes kept in memory. A consumer name starts reading at the
/// end of a channel the first time it asks; a consumer further behind than
/// `max_backlog` misses the oldest envelopes. Not thread-safe: the owner locks.
class broadcast_log {
public:
    explicit broadcast_log(std::size_t max_backlog) : max_backlog_(max_backlog) {}

    void append(const std::string& channel, envelope e) {
        auto& ch = channels_[channel];
        ch.log.push_back(std::move(e));
        while (ch.log.size() > max_backlog_) {
            ch.log.pop_front();
            ++ch.base;
        }
    }

    /// Appends to `out` (up to `max` in all) what `sub.consumer` has not read on `sub.broadcasts`.
    void read(const subscription& sub, std::size_t max, std::vector<delivery>& out) {
        for (auto& name : sub.broadcasts) {
            auto& ch = channels_[name];
            auto [cur, inserted] = ch.cursors.emplace(sub.consumer, ch.base + ch.log.size());
            cur->second = std::max(cur->second, ch.base);  // fell behind the backlog limit
            while (cur->second < ch.base + ch.log.size() && out.size() < max) {
                delivery d;
                d.env = ch.log[cur->second - ch.base];
                d.queue = name;
                d.broadcast = true;
                out.push_back(std::move(d));
                ++cur->second;
            }
            // Drop what every known subscriber has read.
            std::uint64_t low = ch.base + ch.log.size();
            for (auto& [c, pos] : ch.cursors) low = std::min(low, pos);
            while (ch.base < low) {
                ch.log.pop_front();
                ++ch.base;
            }
        }
    }

private:
    struct channel {
        chunked_deque<envelope> log;
        std::uint64_t base = 0;  // sequence number of log.front()
        std::map<std::string, std::uint64_t> cursors;
    };
    std::size_t max_backlog_;
    std::map<std::string, channel, std::less<>> channels_;
};

}  // namespace stem::detail
