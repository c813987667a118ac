// embedded — stem's embedded default: a producer process and a worker process sharing
// two SQLite files (no server). With no URL configured, both use
// sqlite://.stem/broker.db and sqlite://.stem/backend.db in the working directory;
// STEM_BROKER_URL / STEM_RESULT_BACKEND_URL choose others.
//
//   embedded worker     run a worker until SIGTERM or SIGINT (warm shutdown)
//   embedded produce    enqueue word counts, a delayed task and a failing one; print final states
//   embedded            both: start `embedded worker` as a second process, produce, stop the worker
#include <stem/adapters/url.hpp>
#include <stem/stem.hpp>

#include <cctype>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

extern char** environ;

using namespace std::chrono_literals;
namespace asio = boost::asio;

struct count_args {
    std::string text;
};
struct count_result {
    int words = 0;
    int letters = 0;
    long worker_pid = 0;
};
BOOST_DESCRIBE_STRUCT(count_args, (), (text))
BOOST_DESCRIBE_STRUCT(count_result, (), (words, letters, worker_pid))

/// Counts words and letters; reports which process ran it.
struct count_words : stem::task_definition<count_args, count_result> {
    static constexpr std::string_view name = "text.count_words";
    asio::awaitable<count_result> operator()(stem::task_context&, count_args a) {
        count_result r;
        bool in_word = false;
        for (char c : a.text) {
            bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
            r.letters += letter;
            if (letter && !in_word) ++r.words;
            in_word = letter;
        }
        r.worker_pid = long(::getpid());
        co_return r;
    }
};

struct upload_args {
    std::string file;
};
BOOST_DESCRIBE_STRUCT(upload_args, (), (file))

/// Always fails (the storage service is "down"): retried twice, 100 ms apart, then dead-lettered.
struct upload : stem::task_definition<upload_args> {
    static constexpr std::string_view name = "files.upload";
    static constexpr stem::task_options options{
        .max_retries = 2,
        .retry = stem::retry_policy{.backoff = false, .default_delay = 100ms, .backoff_max = 1s, .jitter = false}};
    asio::awaitable<void> operator()(stem::task_context& ctx, upload_args a) {
        throw std::runtime_error(fmt::format("storage unavailable for {} (attempt {})", a.file, ctx.attempt() + 1));
        co_return;
    }
};

using registry = stem::tasks<count_words, upload>;

auto make_app(asio::io_context& io, bool signals) {
    auto urls = stem::adapter_urls::from_env();
    stem::app_options o;
    o.worker.install_signal_handlers = signals;
    o.worker.concurrency = 8;
    return std::make_unique<stem::app<stem::any_broker, stem::any_backend, registry>>(
        io, stem::make_broker(urls.broker), stem::make_backend(urls.backend), registry{count_words{}, upload{}}, o);
}

int run_worker() {
    asio::io_context io;
    auto app = make_app(io, true);
    app->signals().task_succeeded.connect([](const stem::task_event& e) {
        fmt::print("[worker {}] {} {} succeeded\n", ::getpid(), e.env.name, e.env.id);
        std::fflush(stdout);
    });
    app->signals().task_failed.connect([](const stem::task_event& e) {
        fmt::print("[worker {}] {} {} failed: {}\n", ::getpid(), e.env.name, e.env.id, e.error ? e.error->message : "");
        std::fflush(stdout);
    });
    fmt::print("[worker {}] consuming from {}\n", ::getpid(), stem::adapter_urls::from_env().broker);
    std::fflush(stdout);
    app->start();
    io.run();  // returns after SIGTERM/SIGINT: the worker finishes what it holds first
    fmt::print("[worker {}] stopped\n", ::getpid());
    return 0;
}

int run_producer() {
    asio::io_context io;
    auto app = make_app(io, false);
    int exit_code = 1;
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        std::vector<std::string> texts{"the quick brown fox", "jumps over the lazy dog", "stem runs on sqlite"};
        std::vector<stem::task_handle<count_result>> counts;
        for (auto& t : texts) {
            count_args a{t};
            counts.push_back(co_await app->enqueue<count_words>(a));
        }
        count_args later_args{"scheduled for later"};
        stem::enqueue_options later;
        later.countdown = 500ms;
        auto t0 = stem::clock::now();
        auto delayed = co_await app->enqueue<count_words>(later_args, later);
        upload_args up{"report.pdf"};
        auto failing = co_await app->enqueue<upload>(up);
        fmt::print("[producer {}] enqueued {} tasks on {}\n", ::getpid(), counts.size() + 2, stem::adapter_urls::from_env().broker);
        std::fflush(stdout);

        bool ok = true;
        for (std::size_t i = 0; i < counts.size(); ++i) {
            auto r = co_await counts[i].wait(30s);
            ok = ok && r.succeeded() && r.value->worker_pid != long(::getpid());
            if (r.succeeded())
                fmt::print("  {}  {:<9}  \"{}\": {} words, {} letters (ran in process {})\n", r.id, r.state_name(), texts[i],
                           r.value->words, r.value->letters, r.value->worker_pid);
            else
                fmt::print("  {}  {}\n", r.id, r.state_name());
        }
        auto rd = co_await delayed.wait(30s);
        auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(stem::clock::now() - t0);
        fmt::print("  {}  {:<9}  delayed 500 ms, result after {} ms\n", rd.id, rd.state_name(), waited.count());
        ok = ok && rd.succeeded() && waited >= 500ms;
        auto rf = co_await failing.wait(30s);
        fmt::print("  {}  {:<9}  error: {}\n", rf.id, rf.state_name(), rf.error ? rf.error->message : "(none)");
        auto id = failing.id();
        auto dead = co_await app->get_broker().get_dead_letter(id);
        if (dead) fmt::print("  dead letter: {} reason: {}\n", dead->env.name, dead->reason);
        ok = ok && rf.failed() && dead.has_value();
        exit_code = ok ? 0 : 1;
    }, [&](std::exception_ptr ep) {
        if (!ep) return;
        try { std::rethrow_exception(ep); } catch (const std::exception& e) { fmt::print(stderr, "embedded: {}\n", e.what()); }
    });
    io.run();
    if (exit_code != 0) fmt::print(stderr, "embedded: the tasks did not end as expected\n");
    return exit_code;
}

int run_both(const char* self) {  // self: argv[0], shown by ps
    pid_t worker = 0;
    const char* args[] = {self, "worker", nullptr};
    if (int rc = ::posix_spawn(&worker, "/proc/self/exe", nullptr, nullptr, const_cast<char**>(args), environ); rc != 0) {
        fmt::print(stderr, "embedded: cannot start the worker process: {}\n", std::strerror(rc));
        return 1;
    }
    int produced = run_producer();
    ::kill(worker, SIGTERM);
    int status = 0;
    ::waitpid(worker, &status, 0);
    bool worker_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!worker_ok) fmt::print(stderr, "embedded: the worker process did not stop cleanly\n");
    return produced == 0 && worker_ok ? 0 : 1;
}

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    try {
        if (mode == "worker") return run_worker();
        if (mode == "produce") return run_producer();
        if (mode.empty()) return run_both(argv[0]);
    } catch (const std::exception& e) {
        fmt::print(stderr, "embedded: {}\n", e.what());
        return 1;
    }
    fmt::print(stderr, "usage: embedded [worker|produce]\n");
    return 2;
}
