// Must not compile: a typed chain step whose argument type cannot take the previous
// step's result (tests/CMakeLists.txt checks the message).
#include <stem/stem.hpp>

#include <string>

struct count_words : stem::task_definition<std::string, int, count_words> {
    static constexpr std::string_view name = "count_words";
};
struct shout : stem::task_definition<std::string, std::string, shout> {
    static constexpr std::string_view name = "shout";
};

boost::asio::awaitable<void> compose(stem::canvas<stem::memory_broker, stem::memory_backend>& cv) {
    std::string text = "a b c";
    auto h = co_await cv.chain(count_words::sig(text), shout::sig());  // int -> std::string: refused
    (void)h;
}
