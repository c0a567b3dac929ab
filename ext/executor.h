// Runs native calls on a fixed set of threads with a bounded backlog, so
// that a request can stop waiting at its deadline while its call runs on:
// a TorchScript forward cannot be interrupted.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace torch_serving {

// Where Executor::run runs a call.
enum class Placement {
  kPool,          // on one of the threads
  kCallerIfIdle,  // in the calling thread when a thread's slot is free and no call waits, else kPool
  kEventLoop,     // in the calling thread at once, even beyond the slots: an event loop, which never waits
};

class Executor {
 public:
  // Starts `threads` threads; at most `threads + backlog` calls may be
  // running or queued at once.
  Executor(size_t threads, size_t backlog);

  // Finishes the calls already accepted, then stops the threads.
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs `work` on one of the threads and waits up to `timeout` seconds for
  // it. `work` must own everything it uses: after a timeout it runs on
  // without its caller, unless it had not started, when it never runs.
  //
  // With kCallerIfIdle, `work` runs in the calling thread instead when a
  // thread's slot is free and no call waits: it still counts against the
  // limits, but cannot be abandoned at the deadline, so ask for it only for
  // calls known to be short. Handing a call over and waking its caller cost
  // more than a small model's whole forward. With kEventLoop it runs in the
  // calling thread even beyond the slots: for a caller that must not wait,
  // such as the event loop of a worker, with calls known to be short.
  // A kCallerIfIdle call that finds no free slot yields to the threads a
  // few turns before it sleeps, since it is known to be short.
  //
  // Throws BusyError when the limit of pending calls is reached (nothing
  // runs; never with kEventLoop), DeadlineError when the wait times out or the
  // deadline passed before a call in the caller began, and what `work` threw.
  void run(std::function<void()> work, double timeout, Placement placement = Placement::kPool);

  size_t limit() const { return limit_; }

 private:
  struct Task;

  void serve_tasks();

  // Ends a call run in its caller: gives its slot back to the threads.
  void finish_in_caller();

  const size_t threads_count_;
  const size_t limit_;
  std::mutex mutex_;
  std::condition_variable queued_;
  std::deque<std::shared_ptr<Task>> queue_;
  size_t pending_ = 0;  // running and queued
  size_t running_ = 0;  // on the threads or in callers; at most threads_count_ but for kEventLoop calls
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace torch_serving
