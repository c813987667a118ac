// stem/adapters: choosing adapters at run time.
// url.hpp — any_broker / any_backend from a URL, and the embedded default. Link stem::sqlite.
//
//   memory://                         a new in-process store (tests, demos)
//   sqlite://.stem/broker.db          a file, relative to the working directory
//   sqlite:///var/lib/app/broker.db   an absolute path
//   sqlite://jobs.db?namespace=app&poll_interval=20ms&visibility_timeout=1m
//   postgresql://user:secret@db.example:5432/app?sslmode=require&namespace=app
//                                     (needs stem::postgres; parameters stem does not know
//                                      go to libpq)
//   redis://[user:secret@]host:6379/0?namespace=app   rediss://… for TLS (STEM_TLS_* variables)
//                                     (needs stem::redis)
//
// Error messages never show a password.
// With no URL configured (API, or STEM_BROKER_URL / STEM_RESULT_BACKEND_URL), stem
// uses sqlite://.stem/broker.db and sqlite://.stem/backend.db.
#pragma once

#include <stem/adapters/memory.hpp>
#include <stem/adapters/sqlite.hpp>
#include <stem/contracts/any_backend.hpp>
#include <stem/contracts/any_broker.hpp>
#include <stem/core/duration.hpp>
#include <stem/detail/redact.hpp>
#if defined(STEM_HAS_POSTGRES)
#include <stem/adapters/postgres.hpp>
#endif
#if defined(STEM_HAS_REDIS)
#include <stem/adapters/redis.hpp>
#endif

#include <cstdlib>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>

#include <boost/url/parse_query.hpp>
#include <fmt/format.h>

namespace stem {

inline constexpr std::string_view default_broker_url = "sqlite://.stem/broker.db";
inline constexpr std::string_view default_backend_url = "sqlite://.stem/backend.db";

/// The broker and backend URLs to use: `STEM_BROKER_URL` and `STEM_RESULT_BACKEND_URL`
/// when set and not empty, else the embedded default.
struct adapter_urls {
    std::string broker{default_broker_url};
    std::string backend{default_backend_url};

    static adapter_urls from_env() {
        adapter_urls u;
        if (const char* b = std::getenv("STEM_BROKER_URL"); b && *b) u.broker = b;
        if (const char* r = std::getenv("STEM_RESULT_BACKEND_URL"); r && *r) u.backend = r;
        return u;
    }
};

namespace detail {

struct parsed_url {
    std::string shown;                            ///< the URL without its password, for messages
    std::string scheme;
    std::string rest;                             ///< after "scheme://", before '?'
    std::map<std::string, std::string> params;    ///< decoded query parameters
    std::map<std::string, std::string> raw;       ///< the same parameters as written ("k=v")
};

inline parsed_url split_url(std::string_view url) {
    parsed_url p;
    p.shown = redact_password(url);
    auto sep = url.find("://");
    if (sep == std::string_view::npos || sep == 0)
        throw error(errc::invalid_argument,
                    fmt::format("adapter URL '{}' has no scheme (expected e.g. sqlite://path or memory://)", p.shown));
    p.scheme = std::string(url.substr(0, sep));
    auto body = url.substr(sep + 3);
    auto q = body.find('?');
    p.rest = std::string(body.substr(0, q));
    if (q != std::string_view::npos) {
        auto params = boost::urls::parse_query(body.substr(q + 1));
        if (!params)
            throw error(errc::invalid_argument, fmt::format("adapter URL '{}': malformed query: {}", p.shown, params.error().message()));
        for (auto param : *params) {
            std::string key, value;
            param.key.decode({}, boost::urls::string_token::assign_to(key));
            if (!param.has_value)
                throw error(errc::invalid_argument, fmt::format("adapter URL '{}': parameter '{}' has no value", p.shown, key));
            param.value.decode({}, boost::urls::string_token::assign_to(value));
            p.params[key] = value;
            p.raw[key] = std::string(param.key) + "=" + std::string(param.value);
        }
    }
    return p;
}

/// Reads the query parameters an adapter knows; any other one is an error naming it.
class url_params {
public:
    explicit url_params(const parsed_url& u) : u_(u), url_(u.shown) {}
    void duration(const char* key, std::chrono::milliseconds& out) {
        if (auto* v = take(key)) {
            try {
                out = parse_duration(*v);
            } catch (const std::exception& e) {
                throw error(errc::invalid_argument, fmt::format("adapter URL '{}': {}: {}", url_, key, e.what()));
            }
        }
    }
    void text(const char* key, std::string& out) {
        if (auto* v = take(key)) out = *v;
    }
    void count(const char* key, std::size_t& out) {
        if (auto* v = take(key)) {
            char* end = nullptr;
            auto n = std::strtoull(v->c_str(), &end, 10);
            if (v->empty() || *end || n == 0 || n > 1000)
                throw error(errc::invalid_argument, fmt::format("adapter URL '{}': {}: expected 1-1000, got '{}'", url_, key, *v));
            out = std::size_t(n);
        }
    }
    /// The URL without the parameters taken so far (what a client library receives).
    std::string rest_of_url() const {
        std::string out = u_.scheme + "://" + u_.rest;
        char sep = '?';
        for (auto& [k, piece] : u_.raw)
            if (!used_.contains(k)) {
                out += sep;
                out += piece;
                sep = '&';
            }
        return out;
    }
    void finish() const {
        for (auto& [k, v] : u_.params)
            if (!used_.contains(k))
                throw error(errc::invalid_argument, fmt::format("adapter URL '{}': unknown parameter '{}'", url_, k));
    }

private:
    const std::string* take(const char* key) {
        auto it = u_.params.find(key);
        if (it == u_.params.end()) return nullptr;
        used_.insert(it->first);
        return &it->second;
    }
    const parsed_url& u_;
    std::string_view url_;
    std::set<std::string> used_;
};

inline std::string sqlite_path(const parsed_url& u) {
    if (u.rest.empty()) throw error(errc::invalid_argument, fmt::format("adapter URL '{}': no database file named", u.shown));
    return u.rest;
}

inline bool is_postgres(const parsed_url& u) { return u.scheme == "postgres" || u.scheme == "postgresql"; }
inline bool is_redis(const parsed_url& u) { return u.scheme == "redis" || u.scheme == "rediss"; }

[[noreturn]] inline void unsupported_scheme(const parsed_url& u) {
    if (is_postgres(u))
        throw error(errc::unsupported, fmt::format("adapter URL '{}': this program was built without the PostgreSQL "
                                                   "adapter (link the CMake target stem::postgres)", u.shown));
    if (is_redis(u))
        throw error(errc::unsupported, fmt::format("adapter URL '{}': this program was built without the Redis adapter "
                                                   "(link the CMake target stem::redis)", u.shown));
    throw error(errc::invalid_argument,
                fmt::format("adapter URL '{}': unknown scheme '{}' (known: memory, sqlite, postgres, redis)", u.shown, u.scheme));
}

}  // namespace detail

/// A broker for `url` (see the top of this header). Bad URLs throw stem::error naming the problem.
inline any_broker make_broker(std::string_view url) {
    auto u = detail::split_url(url);
    detail::url_params p(u);
    if (u.scheme == "memory") {
        memory_broker_options o;
        p.duration("visibility_timeout", o.default_visibility_timeout);
        p.finish();
        return any_broker{memory_broker{o}};
    }
    if (u.scheme == "sqlite") {
        sqlite_broker_options o;
        o.path = detail::sqlite_path(u);
        p.text("namespace", o.namespace_);
        p.duration("visibility_timeout", o.default_visibility_timeout);
        p.duration("poll_interval", o.poll_interval);
        p.duration("dead_letter_retention", o.dead_letter_retention);
        p.finish();
        return any_broker{sqlite_broker{o}};
    }
#if defined(STEM_HAS_POSTGRES)
    if (detail::is_postgres(u)) {
        postgres_broker_options o;
        p.text("namespace", o.namespace_);
        p.duration("visibility_timeout", o.default_visibility_timeout);
        p.duration("poll_interval", o.poll_interval);
        p.duration("dead_letter_retention", o.dead_letter_retention);
        p.count("pool_size", o.pool_size);
        o.conninfo = p.rest_of_url();
        return any_broker{postgres_broker{o}};
    }
#endif
#if defined(STEM_HAS_REDIS)
    if (detail::is_redis(u)) {
        redis_broker_options o;
        p.text("namespace", o.namespace_);
        p.duration("visibility_timeout", o.default_visibility_timeout);
        p.duration("dead_letter_retention", o.dead_letter_retention);
        p.duration("broadcast_poll", o.broadcast_poll);
        p.finish();
        o.server = redis::config::from_url(p.rest_of_url());
        return any_broker{redis_broker{o}};
    }
#endif
    detail::unsupported_scheme(u);
}

/// A result backend for `url` (see the top of this header).
inline any_backend make_backend(std::string_view url) {
    auto u = detail::split_url(url);
    detail::url_params p(u);
    if (u.scheme == "memory") {
        memory_backend_options o;
        p.duration("default_ttl", o.default_ttl);
        p.finish();
        return any_backend{memory_backend{o}};
    }
    if (u.scheme == "sqlite") {
        sqlite_backend_options o;
        o.path = detail::sqlite_path(u);
        p.text("namespace", o.namespace_);
        p.duration("default_ttl", o.default_ttl);
        p.duration("poll_interval", o.poll_interval);
        p.duration("cleanup_interval", o.cleanup_interval);
        p.finish();
        return any_backend{sqlite_backend{o}};
    }
#if defined(STEM_HAS_POSTGRES)
    if (detail::is_postgres(u)) {
        postgres_backend_options o;
        p.text("namespace", o.namespace_);
        p.duration("default_ttl", o.default_ttl);
        p.duration("poll_interval", o.poll_interval);
        p.duration("cleanup_interval", o.cleanup_interval);
        p.count("pool_size", o.pool_size);
        o.conninfo = p.rest_of_url();
        return any_backend{postgres_backend{o}};
    }
#endif
#if defined(STEM_HAS_REDIS)
    if (detail::is_redis(u)) {
        redis_backend_options o;
        p.text("namespace", o.namespace_);
        p.duration("default_ttl", o.default_ttl);
        p.finish();
        o.server = redis::config::from_url(p.rest_of_url());
        return any_backend{redis_backend{o}};
    }
#endif
    detail::unsupported_scheme(u);
}

}  // namespace stem
