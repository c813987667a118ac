// stem/adapters/redis: the Redis adapters (hiredis for the protocol, Asio for the I/O).
// redis_config.hpp — where a Redis server is and how to log in: from a redis:// or rediss:// URL.
#pragma once

#include <stem/core/error.hpp>
#include <stem/detail/redact.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/url/parse.hpp>
#include <fmt/format.h>

namespace stem::redis {

/// How to reach one Redis server.
struct config {
    std::string host = "127.0.0.1";
    std::uint16_t port = 6379;
    std::string user;      ///< ACL user (empty: AUTH with the password only)
    std::string password;  ///< empty: no AUTH
    int database = 0;      ///< SELECTed after connecting
    bool tls = false;      ///< rediss://
    std::string tls_ca_cert;      ///< PEM file of trusted CAs (STEM_TLS_CA_CERT); empty: the system's
    std::string tls_client_cert;  ///< PEM client certificate (STEM_TLS_CLIENT_CERT)
    std::string tls_client_key;   ///< PEM client key (STEM_TLS_CLIENT_KEY)
    bool tls_allow_insecure = false;  ///< skip server verification (STEM_TLS_ALLOW_INSECURE=1)
    std::chrono::milliseconds connect_timeout{5000};
    std::chrono::milliseconds reconnect_min{50};   ///< first wait after a failure; doubles each time
    std::chrono::milliseconds reconnect_max{2000};  ///< cap of the wait between attempts

    /// `redis[s]://[user[:password]@]host[:port][/db]`, never with the password.
    std::string display() const {
        std::string who = user.empty() && password.empty() ? "" : fmt::format("{}{}@", user, password.empty() ? "" : ":***");
        return fmt::format("{}://{}{}:{}/{}", tls ? "rediss" : "redis", who, host, port, database);
    }

    /// Parses `redis://[user:password@]host:port/db` or `rediss://…` (TLS settings from the
    /// STEM_TLS_* environment variables). Query parameters are refused: the URL factory takes
    /// stem's own before calling this.
    static config from_url(std::string_view url) {
        auto shown = stem::detail::redact_password(url);
        auto bad = [&](std::string_view why) {
            return error(errc::invalid_argument, fmt::format("redis URL '{}': {}", shown, why));
        };
        auto u = boost::urls::parse_uri(url);
        if (!u) throw bad(u.error().message());
        config c;
        if (u->scheme() == "rediss") c.tls = true;
        else if (u->scheme() != "redis") throw bad("expected the scheme redis:// or rediss://");
        if (u->has_query() && !u->query().empty()) throw bad(fmt::format("unknown parameter(s) '{}'", u->query()));
        if (u->has_userinfo()) {
            c.user = u->user();
            if (u->has_password()) c.password = u->password();
            else if (!c.user.empty()) {  // redis://secret@host: a password without a user, as redis-cli reads it
                c.password = std::move(c.user);
                c.user.clear();
            }
        }
        if (!u->encoded_host().empty()) c.host = u->host();
        if (u->has_port()) {
            auto p = u->port_number();
            if (p == 0) throw bad(fmt::format("bad port '{}'", u->port()));
            c.port = p;
        }
        std::string path = u->path();
        if (!path.empty() && path != "/") {
            auto digits = std::string_view(path).substr(1);
            char* end = nullptr;
            std::string d(digits);
            long db = std::strtol(d.c_str(), &end, 10);
            if (d.empty() || *end || db < 0 || db > 1'000'000) throw bad(fmt::format("the path must be a database number, got '{}'", path));
            c.database = int(db);
        }
        if (c.tls) {
            auto env = [](const char* k) -> std::string {
                const char* v = std::getenv(k);
                return v ? v : "";
            };
            c.tls_ca_cert = env("STEM_TLS_CA_CERT");
            c.tls_client_cert = env("STEM_TLS_CLIENT_CERT");
            c.tls_client_key = env("STEM_TLS_CLIENT_KEY");
            auto insecure = env("STEM_TLS_ALLOW_INSECURE");
            c.tls_allow_insecure = insecure == "1" || insecure == "true" || insecure == "yes";
            if (c.tls_client_cert.empty() != c.tls_client_key.empty())
                throw bad("STEM_TLS_CLIENT_CERT and STEM_TLS_CLIENT_KEY must be set together");
        }
        return c;
    }
};

}  // namespace stem::redis
