// stem/detail: internals, never included by users directly.
// posted_handler.hpp — a caller's completion handler, type-erased, answered on its own
// executor (posted, never run inline), keeping that executor's work alive meanwhile.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

namespace stem::detail {

template <class... Args>
struct posted_handler {
    virtual ~posted_handler() = default;
    /// Posts the handler with `args` to its executor; later calls do nothing.
    virtual void complete(Args... args) = 0;
    /// The executor it runs on.
    virtual boost::asio::any_io_executor executor() const = 0;
    /// Runs the handler with `args` at once; the caller runs in its executor (one post
    /// completes many handlers of one executor). Later calls do nothing.
    virtual void invoke(Args... args) = 0;
    /// Answered already.
    bool done() const noexcept { return done_; }

protected:
    bool done_ = false;
};

template <class Handler, class... Args>
class posted_handler_impl final : public posted_handler<Args...> {
public:
    explicit posted_handler_impl(Handler h)
        : h_(std::move(h)),
          work_(boost::asio::prefer(boost::asio::get_associated_executor(h_), boost::asio::execution::outstanding_work.tracked)) {}

    /// The handler's cancellation slot (to assign a cancellation function).
    auto cancellation_slot() const { return boost::asio::get_associated_cancellation_slot(h_); }

    void complete(Args... args) override {
        if (this->done_) return;
        this->done_ = true;
        if (auto slot = boost::asio::get_associated_cancellation_slot(h_); slot.is_connected()) slot.clear();
        // Posted through an untracked copy: the tracked one travels with the handler, so this
        // thread holds nothing of the caller's execution context once the handler may run
        // (the caller may then finish and destroy it).
        auto ex = boost::asio::prefer(work_, boost::asio::execution::outstanding_work.untracked);
        boost::asio::post(ex, [h = std::move(h_), work = std::move(work_), ... a = std::move(args)]() mutable {
            std::move(h)(std::move(a)...);
        });
    }

    boost::asio::any_io_executor executor() const override {
        return boost::asio::prefer(work_, boost::asio::execution::outstanding_work.untracked);
    }

    void invoke(Args... args) override {
        if (this->done_) return;
        this->done_ = true;
        if (auto slot = boost::asio::get_associated_cancellation_slot(h_); slot.is_connected()) slot.clear();
        auto work = std::move(work_);  // the caller's context stays alive until the handler ran
        std::move(h_)(std::move(args)...);
    }

private:
    Handler h_;
    std::decay_t<decltype(boost::asio::prefer(std::declval<boost::asio::associated_executor_t<Handler>>(),
                                              boost::asio::execution::outstanding_work.tracked))>
        work_;
};

/// Wraps `h` for `posted_handler<Args...>`.
template <class... Args, class Handler>
std::unique_ptr<posted_handler_impl<Handler, Args...>> make_posted_handler(Handler h) {
    return std::make_unique<posted_handler_impl<Handler, Args...>>(std::move(h));
}

}  // namespace stem::detail
