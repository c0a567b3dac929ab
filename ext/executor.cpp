// The native thread pool behind deadlines.
#include "executor.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>

#include "errors.h"

namespace torch_serving {

struct Executor::Task {
  // Whether the caller still awaits the call. Only one of the caller (at its
  // deadline) and the thread (once the call is over) moves it from kAwaited,
  // so exactly one of them knows whether an abandoned call is held.
  enum State { kAwaited, kAbandoned, kEnded };

  std::function<void()> work;
  std::mutex mutex;
  std::condition_variable finished;
  // Set under `mutex`, so that a waiter cannot miss it, and atomic, so that
  // the yielding caller may read it without the lock.
  std::atomic<bool> done{false};
  std::atomic<State> state{kAwaited};
  std::exception_ptr error;
};

namespace {
constexpr int kYieldTurns = 50;
}

Executor::Executor(size_t threads, std::shared_ptr<CallCount> count)
    : threads_count_(threads), count_(std::move(count)) {
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { serve_tasks(); });
}

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  queued_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void Executor::run(std::function<void()> work, double timeout, Placement placement) {
  if (placement != Placement::kPool) {
    bool idle = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle = placement == Placement::kEventLoop || (running_ < threads_count_ && queue_.empty());
      if (idle) ++running_;
    }
    if (idle) {
      if (!(timeout > 0)) {
        finish_in_caller();
        throw DeadlineError("the deadline passed before the call began");
      }
      const auto started = std::chrono::steady_clock::now();
      try {
        work();
      } catch (...) {
        finish_in_caller();
        throw;
      }
      finish_in_caller();
      if (placement == Placement::kQueuedCaller &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count() > timeout) {
        throw DeadlineError(kRanPastDeadline);
      }
      return;
    }
  }
  auto task = std::make_shared<Task>();
  task->work = std::move(work);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(task);
  }
  queued_.notify_one();
  // Small calls finish within a few scheduler turns: yielding to the pool
  // thread for them is cheaper than sleeping and being woken. Others (a
  // batch's requests, which wait for each other) would only take turns
  // from the threads doing work.
  for (int turn = 0; placement == Placement::kCallerIfIdle && turn < kYieldTurns; ++turn) {
    if (task->done.load(std::memory_order_acquire)) break;
    std::this_thread::yield();
  }
  std::unique_lock<std::mutex> lock(task->mutex);
  auto is_done = [&] { return task->done.load(std::memory_order_acquire); };
  // A deadline beyond what wait_for can represent means no deadline.
  if (std::isfinite(timeout) && timeout < 1e9) {
    auto limit = std::chrono::duration<double>(std::max(timeout, 0.0));
    if (!task->finished.wait_for(lock, limit, is_done)) {
      // Held before it is marked, so that the thread cannot release it first.
      if (count_) count_->hold();
      auto awaited = Task::kAwaited;
      if (task->state.compare_exchange_strong(awaited, Task::kAbandoned, std::memory_order_acq_rel)) {
        throw DeadlineError(kRanPastDeadline);
      }
      // It ended as the wait timed out: its answer stands.
      if (count_) count_->leave();
      task->finished.wait(lock, is_done);
    }
  } else {
    task->finished.wait(lock, is_done);
  }
  if (task->error) std::rethrow_exception(task->error);
}

void Executor::finish_in_caller() {
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --running_;
    queued = !queue_.empty();
  }
  // A queued call may take the slot this one held. Waking a thread for
  // nothing would cost more than running in the caller saved.
  if (queued) queued_.notify_one();
}

void Executor::serve_tasks() {
  for (;;) {
    std::shared_ptr<Task> task;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Calls run in their callers hold slots too: a thread waits for a free
      // one (kEventLoop calls may hold more than there are).
      queued_.wait(lock, [&] { return stopping_ || (!queue_.empty() && running_ < threads_count_); });
      if (queue_.empty()) return;  // stopping, with nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    try {
      // Its caller answered 504 while it queued: the answer is no longer wanted.
      if (task->state.load(std::memory_order_acquire) != Task::kAbandoned) task->work();
    } catch (...) {
      task->error = std::current_exception();
    }
    // Drop what the call held (its body, its model) now, not when the
    // caller lets go of the task.
    task->work = nullptr;
    {
      // Released before the caller wakes, so that it may submit again at once.
      std::lock_guard<std::mutex> lock(mutex_);
      --running_;
    }
    if (task->state.exchange(Task::kEnded, std::memory_order_acq_rel) == Task::kAbandoned && count_) {
      count_->leave();
    }
    {
      std::lock_guard<std::mutex> lock(task->mutex);
      task->done.store(true, std::memory_order_release);
    }
    task->finished.notify_all();
  }
}

}  // namespace torch_serving
