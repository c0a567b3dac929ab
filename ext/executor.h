// Runs native calls on a fixed set of threads, so that a request can stop
// waiting at its deadline while its call runs on: a TorchScript forward
// cannot be interrupted. How many calls may be under way is not its
// business but the worker's admission's (admission.h), which it keeps
// informed of the calls that outlive their requests.
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
  kQueuedCaller,  // as kCallerIfIdle, for a call that waits in a model's queue, which honours its deadline
  kEventLoop,     // in the calling thread at once, even beyond the slots: an event loop, which never waits
};

// The count of calls a worker holds (its admission). A call abandoned at its
// deadline still takes a thread until it ends, so it holds a place of its
// own from then on, after its request was answered.
class CallCount {
 public:
  virtual ~CallCount() = default;
  // Counts one more call, whatever the limit: it is already running or queued.
  virtual void hold() = 0;
  // Stops counting a call.
  virtual void leave() = 0;
};

class Executor {
 public:
  // Starts `threads` threads. A call its caller abandons is held in `count`
  // (if given) until it ends or, still queued, is dropped.
  explicit Executor(size_t threads, std::shared_ptr<CallCount> count = nullptr);

  // Finishes the calls already accepted, then stops the threads.
  ~Executor();

  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs `work` on one of the threads and waits up to `timeout` seconds for
  // it. `work` must own everything it uses: after a timeout it runs on
  // without its caller, unless it had not started, when it never runs.
  // Calls beyond the threads queue: the caller's admission bounds them.
  //
  // With kCallerIfIdle, `work` runs in the calling thread instead when a
  // thread's slot is free and no call waits: it still takes a slot, but
  // cannot be abandoned at the deadline, so ask for it only for calls known
  // to be short. Handing a call over and waking its caller cost more than a
  // small model's whole forward. With kEventLoop it runs in the calling
  // thread even beyond the slots: for a caller that must not wait, such as
  // the event loop of a worker, with calls known to be short. A
  // kCallerIfIdle call that finds no free slot yields to the threads a few
  // turns before it sleeps, since it is known to be short.
  //
  // kQueuedCaller is for a call that spends its time waiting for a batching
  // model's forward: its queue lets the request go at its deadline, and
  // handing each request of a batch to a thread of its own would double
  // the threads that wake when the batch ends. Only a forward under way
  // cannot be abandoned, so such a call that ends past its deadline throws
  // DeadlineError then, and ask for it only for models whose forwards are
  // short.
  //
  // Throws DeadlineError when the wait times out, the deadline passed
  // before a call in the caller began or, with kQueuedCaller, before it
  // ended, and what `work` threw.
  void run(std::function<void()> work, double timeout, Placement placement = Placement::kPool);

 private:
  struct Task;

  void serve_tasks();

  // Ends a call run in its caller: gives its slot back to the threads.
  void finish_in_caller();

  const size_t threads_count_;
  const std::shared_ptr<CallCount> count_;
  std::mutex mutex_;
  std::condition_variable queued_;
  std::deque<std::shared_ptr<Task>> queue_;
  size_t running_ = 0;  // on the threads or in callers; at most threads_count_ but for kEventLoop calls
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace torch_serving
