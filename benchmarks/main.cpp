// stem-bench — throughput and latency of stem on one thread, one JSON line per measure.
//
//   stem-bench [--broker memory|sqlite|postgres|redis] [--url URL] [--tasks N] [--measure enqueue|drain|latency|chord|all]
//              [--concurrency N] [--prefetch N] [--no-track-started] [--track-started-after MS] [--pool N] [--redis-same-thread]
//
// sqlite: fresh broker.db and backend.db in the directory given by --url (default: a new
// directory under $TMPDIR, removed afterwards); each measure starts from empty files.
// postgres: --url names the server (required); each measure uses tables of a fresh namespace,
// dropped afterwards; --pool sets the connections of the broker and of the backend (default 4 each).
// redis: --url names the server (required, redis://host:port/db); each measure uses keys of
// a fresh namespace. The connections run on the shared Redis I/O thread (the default);
// --redis-same-thread runs them on the bench's own thread (the adapters' `executor` option).
//
// enqueue: typed enqueues per second (one publish per task).
// drain:   N no-op tasks queued beforehand with one enqueue_batch (its rate is printed as
//          "enqueue_bulk"), then run by a worker with results stored; tasks/s.
// latency: one task at a time, enqueue to result in hand; p50/p99 in ms.
// chord:   a chord of --chord-size (default 10,000) no-op children and one callback that
//          receives their results; ms from dispatch to the callback's result in hand.
#include <stem/adapters/postgres.hpp>
#include <stem/adapters/redis.hpp>
#include <stem/adapters/sqlite.hpp>
#include <stem/stem.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <pqxx/pqxx>

namespace asio = boost::asio;
using namespace std::chrono_literals;

struct noop_args {
    int n = 0;
};
BOOST_DESCRIBE_STRUCT(noop_args, (), (n))

struct bench_state {
    std::size_t target = 0;
    std::size_t done = 0;
    std::chrono::steady_clock::time_point finished{};
    std::function<void()> on_target;
};

/// A task that does nothing but count.
struct noop : stem::task_definition<noop_args, int> {
    static constexpr std::string_view name = "bench.noop";
    bench_state* state;
    asio::awaitable<int> operator()(stem::task_context&, noop_args a) {
        if (++state->done == state->target && state->on_target) state->on_target();
        co_return a.n;
    }
};

/// A chord callback: how many results it was given.
struct collect : stem::task_definition<std::vector<int>, std::size_t> {
    static constexpr std::string_view name = "bench.collect";
    asio::awaitable<std::size_t> operator()(stem::task_context&, std::vector<int> xs) { co_return xs.size(); }
};

struct settings {
    std::string broker = "memory";
    std::string url;
    std::size_t tasks = 200'000;
    std::size_t chord_size = 10'000;
    std::string measure = "all";
    std::size_t concurrency = 64;
    std::size_t prefetch = 16;
    bool track_started = true;
    std::size_t track_started_after_ms = 10;  ///< worker_options::track_started_after
    std::size_t pool = 4;
    bool redis_same_thread = false;  ///< redis: connections on the bench's thread, not the shared I/O thread
};

[[noreturn]] void usage_error(const std::string& msg) {
    std::fprintf(stderr, "stem-bench: %s\nusage: stem-bench [--broker memory|sqlite|postgres|redis] [--url URL] [--tasks N] "
                         "[--measure enqueue|drain|latency|chord|all] [--chord-size N] [--concurrency N] [--prefetch N] [--no-track-started] [--track-started-after MS] [--pool N] [--redis-same-thread]\n",
                 msg.c_str());
    std::exit(2);
}

settings parse_args(int argc, char** argv) {
    settings s;
    auto number = [&](std::string_view flag, const char* v, bool zero_ok = false) -> std::size_t {
        char* end = nullptr;
        errno = 0;
        auto n = std::strtoull(v, &end, 10);
        if (errno || !end || *end || *v == '-' || (n == 0 && !zero_ok))
            usage_error(fmt::format("{} needs a {} whole number, got '{}'", flag, zero_ok ? "non-negative" : "positive", v));
        return n;
    };
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", a));
            return argv[++i];
        };
        if (a == "--broker") s.broker = value();
        else if (a == "--url") s.url = value();
        else if (a == "--tasks") s.tasks = number(a, value());
        else if (a == "--chord-size") s.chord_size = number(a, value());
        else if (a == "--measure") s.measure = value();
        else if (a == "--concurrency") s.concurrency = number(a, value());
        else if (a == "--prefetch") s.prefetch = number(a, value());
        else if (a == "--no-track-started") s.track_started = false;
        else if (a == "--track-started-after") s.track_started_after_ms = number(a, value(), true);
        else if (a == "--redis-same-thread") s.redis_same_thread = true;
        else if (a == "--pool") s.pool = number(a, value());
        else if (a == "--help" || a == "-h") usage_error("help");
        else usage_error(fmt::format("unknown flag '{}'", a));
    }
    if (s.measure != "enqueue" && s.measure != "drain" && s.measure != "latency" && s.measure != "chord" && s.measure != "all")
        usage_error(fmt::format("unknown measure '{}'", s.measure));
    if (s.broker != "memory" && s.broker != "sqlite" && s.broker != "postgres" && s.broker != "redis")
        usage_error(fmt::format("unknown broker '{}' (available: memory, sqlite, postgres, redis)", s.broker));
    if (s.broker == "postgres" && s.url.empty()) usage_error("--broker postgres needs --url postgresql://...");
    if (s.broker == "redis" && s.url.empty()) usage_error("--broker redis needs --url redis://...");
    return s;
}

boost::json::object settings_json(const settings& s) {
    boost::json::object o{{"tasks", s.tasks}, {"concurrency", s.concurrency}, {"prefetch", s.prefetch},
                          {"track_started", s.track_started}, {"results_stored", true}, {"threads", 1}};
    if (s.track_started) o["track_started_after_ms"] = s.track_started_after_ms;
    if (s.broker == "postgres") o["pool"] = s.pool;
    if (s.broker == "redis") o["connections_on"] = s.redis_same_thread ? "bench thread" : "redis I/O thread";
    return o;
}

void print_line(const settings& s, std::string_view measure, double value, std::string_view unit,
                boost::json::object extra = {}) {
    boost::json::object o{{"system", "stem"}, {"broker", s.broker}, {"measure", measure}, {"value", value}, {"unit", unit}};
    for (auto& kv : extra) o[kv.key()] = kv.value();
    o["settings"] = settings_json(s);
    std::printf("%s\n", boost::json::serialize(o).c_str());
    std::fflush(stdout);
}

void run_on(asio::io_context& io, std::function<asio::awaitable<void>()> body) {
    std::exception_ptr failure;
    asio::co_spawn(io, body(), [&](std::exception_ptr ep) {
        failure = ep;
        io.stop();  // a failed measure leaves its worker running, and connections keep the loop busy
    });
    io.restart();
    io.run();
    if (failure) std::rethrow_exception(failure);
}

int measure_number = 0;  // names each measure's fresh store

/// Fresh SQLite files for one measure, removed when it ends.
struct sqlite_files {
    std::filesystem::path dir;
    bool own_base;  // the per-process folder under the temp directory (no --url)
    explicit sqlite_files(const settings& s) : own_base(s.url.empty()) {
        auto base = s.url.empty() ? std::filesystem::temp_directory_path() / fmt::format("stem-bench-{}", ::getpid())
                                  : std::filesystem::path(s.url);
        dir = base / fmt::format("run-{}", ++measure_number);
        std::filesystem::remove_all(dir);
        std::filesystem::create_directories(dir);
    }
    ~sqlite_files() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
        if (own_base) std::filesystem::remove(dir.parent_path(), ec);  // fails, harmlessly, while not empty
    }
};

stem::app_options bench_options(const settings& s) {
    stem::app_options o;
    o.worker.install_signal_handlers = false;
    o.worker.concurrency = s.concurrency;
    o.worker.prefetch_multiplier = s.prefetch;
    o.worker.track_started = s.track_started;
    o.worker.track_started_after = std::chrono::milliseconds(s.track_started_after_ms);
    o.worker.heartbeat_interval = 60s;
    o.signals_from_env = false;
    return o;
}

template <class Broker, class Backend>
auto make_app(asio::io_context& io, const settings& s, bench_state& st, Broker b, Backend r) {
    return std::make_unique<stem::app<Broker, Backend, stem::tasks<noop, collect>>>(io, std::move(b), std::move(r),
                                                                           stem::tasks{noop{{}, &st}, collect{}}, bench_options(s));
}

/// Drops what namespace `ns` made in the PostgreSQL database at `url` (its tables and
/// migration records): each measure makes its own, and a database used for many runs would
/// otherwise collect thousands of tables.
void drop_postgres_namespace(const std::string& url, const std::string& ns) {
    try {
        pqxx::connection c(url);
        pqxx::work w(c);
        auto tables = w.exec(fmt::format("SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = current_schema() "
                                         "AND left(tablename, {}) = {}",
                                         ns.size() + 1, w.quote(ns + "_")));
        for (const auto& row : tables) w.exec("DROP TABLE IF EXISTS " + row[0].as<std::string>() + " CASCADE");
        w.exec(fmt::format("DELETE FROM stem_migrations WHERE component IN ({}, {})", w.quote("broker:" + ns),
                           w.quote("backend:" + ns)));
        w.commit();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "stem-bench: could not drop the tables of namespace %s: %s\n", ns.c_str(), e.what());
    }
}

/// Runs `measure(app)` on a fresh app for the chosen broker.
template <class Measure>
void with_app(asio::io_context& io, const settings& s, bench_state& st, Measure measure) {
    if (s.broker == "postgres") {
        stem::postgres_broker_options bo;
        bo.conninfo = s.url;
        bo.pool_size = s.pool;
        bo.namespace_ = fmt::format("bench_{}_{}", ::getpid(), ++measure_number);
        stem::postgres_backend_options ro;
        ro.conninfo = s.url;
        ro.pool_size = bo.pool_size;
        ro.namespace_ = bo.namespace_;
        {
            auto app = make_app(io, s, st, stem::postgres_broker{bo}, stem::postgres_backend{ro});
            measure(*app);
        }
        drop_postgres_namespace(s.url, bo.namespace_);
        return;
    }
    if (s.broker == "redis") {
        stem::redis_broker_options bo;
        bo.server = stem::redis::config::from_url(s.url);
        bo.namespace_ = fmt::format("bench_{}_{}", ::getpid(), ++measure_number);
        if (s.redis_same_thread) bo.executor = io.get_executor();  // connections on the bench's own thread
        stem::redis_backend_options ro;
        ro.server = bo.server;
        ro.namespace_ = bo.namespace_;
        ro.executor = bo.executor;
        auto app = make_app(io, s, st, stem::redis_broker{bo}, stem::redis_backend{ro});
        measure(*app);
        return;
    }
    if (s.broker == "sqlite") {
        sqlite_files files(s);
        stem::sqlite_broker_options bo;
        bo.path = (files.dir / "broker.db").string();
        stem::sqlite_backend_options ro;
        ro.path = (files.dir / "backend.db").string();
        auto app = make_app(io, s, st, stem::sqlite_broker{bo}, stem::sqlite_backend{ro});
        measure(*app);
        return;
    }
    auto app = make_app(io, s, st, stem::memory_broker{}, stem::memory_backend{});
    measure(*app);
}

double seconds_since(std::chrono::steady_clock::time_point t0, std::chrono::steady_clock::time_point t1) {
    return std::chrono::duration<double>(t1 - t0).count();
}

void measure_enqueue(const settings& s) {
    asio::io_context io;
    bench_state st;
    with_app(io, s, st, [&](auto& a) {
    auto* app = &a;
    run_on(io, [&]() -> asio::awaitable<void> {
        noop_args args{1};
        auto t0 = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < s.tasks; ++i) co_await app->template enqueue<noop>(args);
        auto t1 = std::chrono::steady_clock::now();
        print_line(s, "enqueue", double(s.tasks) / seconds_since(t0, t1), "tasks/s");
    });
    });
}

void measure_drain(const settings& s) {
    asio::io_context io;
    bench_state st;
    st.target = s.tasks;
    with_app(io, s, st, [&](auto& a) {
    auto* app = &a;
    run_on(io, [&]() -> asio::awaitable<void> {
        std::vector<noop_args> batch(s.tasks, noop_args{1});
        auto b0 = std::chrono::steady_clock::now();
        co_await app->template enqueue_batch<noop>(batch);
        print_line(s, "enqueue_bulk", double(s.tasks) / seconds_since(b0, std::chrono::steady_clock::now()), "tasks/s");
        auto waiter = std::make_shared<stem::detail::waiter>();
        st.on_target = [&, waiter] {
            asio::post(io, [&, waiter] {
                st.finished = std::chrono::steady_clock::now();
                waiter->notify();
            });
        };
        auto t0 = std::chrono::steady_clock::now();
        app->start();
        co_await waiter->wait_until(std::chrono::steady_clock::now() + 600s);
        if (st.done != s.tasks) throw std::runtime_error("drain did not complete");
        // The last handlers have returned; their results may still be on the way to the
        // store: the clock stops when the store holds all N.
        asio::steady_timer tick(co_await asio::this_coro::executor);
        auto give_up = std::chrono::steady_clock::now() + 30s;
        std::uint64_t done = 0;
        while ((done = co_await app->get_backend().count(stem::task_state::succeeded)) != s.tasks &&
               std::chrono::steady_clock::now() < give_up) {
            tick.expires_after(1ms);
            co_await tick.async_wait(asio::use_awaitable);
        }
        st.finished = std::max(st.finished, std::chrono::steady_clock::now());
        if (done != s.tasks) throw std::runtime_error(fmt::format("only {} results stored of {}", done, s.tasks));
        print_line(s, "drain", double(s.tasks) / seconds_since(t0, st.finished), "tasks/s");
        co_await app->shutdown();
    });
    });
}

void measure_latency(const settings& s) {
    asio::io_context io;
    bench_state st;
    with_app(io, s, st, [&](auto& a) {
    auto* app = &a;
    std::size_t rounds = std::min<std::size_t>(s.tasks, 20'000);
    run_on(io, [&]() -> asio::awaitable<void> {
        app->start();
        std::vector<double> ms;
        ms.reserve(rounds);
        noop_args args{7};
        for (std::size_t i = 0; i < rounds + 100; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            auto h = co_await app->template enqueue<noop>(args);
            auto r = co_await h.wait(10s);
            auto t1 = std::chrono::steady_clock::now();
            if (!r.succeeded() || *r.value != 7) throw std::runtime_error("latency task failed");
            if (i >= 100) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());  // 100 warm-up rounds
        }
        std::sort(ms.begin(), ms.end());
        double p50 = ms[ms.size() / 2], p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
        print_line(s, "latency", p50, "ms", {{"p50_ms", p50}, {"p99_ms", p99}, {"rounds", rounds}});
        co_await app->shutdown();
    });
    });
}

/// A chord of `--chord-size` no-op children: from dispatch to the callback's result.
void measure_chord(const settings& s) {
    asio::io_context io;
    bench_state st;
    with_app(io, s, st, [&](auto& a) {
    auto* app = &a;
    run_on(io, [&]() -> asio::awaitable<void> {
        app->start();
        stem::canvas cv{*app};
        std::vector<stem::typed_signature<noop>> header;
        header.reserve(s.chord_size);
        noop_args args{1};
        for (std::size_t i = 0; i < s.chord_size; ++i) header.push_back(stem::sig<noop>(args));
        auto callback = stem::sig<collect>();
        auto t0 = std::chrono::steady_clock::now();
        auto chord = co_await cv.chord(std::move(header), std::move(callback));
        auto r = co_await chord.wait(600s);
        auto t1 = std::chrono::steady_clock::now();
        if (!r.succeeded() || *r.value != s.chord_size) throw std::runtime_error("the chord did not complete");
        print_line(s, "chord", seconds_since(t0, t1) * 1000, "ms", {{"children", s.chord_size}});
        co_await app->shutdown();
    });
    });
}

int main(int argc, char** argv) {
    auto s = parse_args(argc, argv);
    try {
        if (s.measure == "enqueue" || s.measure == "all") measure_enqueue(s);
        if (s.measure == "drain" || s.measure == "all") measure_drain(s);
        if (s.measure == "latency" || s.measure == "all") measure_latency(s);
        if (s.measure == "chord" || s.measure == "all") measure_chord(s);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "stem-bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
