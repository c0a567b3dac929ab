// Scheduling one model's forwards: at most a fixed number run at once (its
// instances), and with dynamic batching the requests that wait are merged
// into one forward along dimension 0 and the outputs split back, so that a
// forward bound by reading its weights reads them once for many requests.
#pragma once

#include <ATen/core/ivalue.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "batch_costs.h"

namespace torch_serving {

// What a model declares in the `torch_serving.json` file of its archive.
struct ServingPolicy {
  int64_t max_batch_size = 0;  // rows (dimension 0) per forward; below 2, no batching
  double max_delay_s = 0;      // how long a batch's first request waits for more once an instance is free; 0: never
  int64_t instance_count = 0;  // forwards that run at once in a worker; 0: the server's default

  bool batching() const { return max_batch_size > 1; }
};

// The most instances a model may declare.
inline constexpr int64_t kMaxInstances = 256;

// How many instances a model gets when its policy declares no count: a
// batching model fewer (its requests then wait in its queue and join its
// next batch) than one that does not batch.
struct InstanceCounts {
  size_t batching = 1;
  size_t other = 1;

  size_t for_policy(const ServingPolicy& policy) const {
    if (policy.instance_count > 0) return size_t(policy.instance_count);
    return policy.batching() ? batching : other;
  }
};

// The name of the extra file in a TorchScript archive that declares the policy.
inline constexpr const char* kPolicyFile = "torch_serving.json";

// Reads `{"max_batch_size": 8, "max_batch_delay_ms": 2, "instance_count": 1}`
// (every key optional). Throws std::invalid_argument saying what is wrong
// with `json`.
ServingPolicy parse_serving_policy(std::string_view json);

// When a request's answer is no longer wanted; Deadline::max() for never.
using Deadline = std::chrono::steady_clock::time_point;

// The time `seconds` after `from`; never for a span beyond what a clock can
// hold (an infinite timeout).
inline Deadline deadline_after(Deadline from, double seconds) {
  if (!(std::isfinite(seconds) && seconds < 1e9)) return Deadline::max();
  return from + std::chrono::duration_cast<Deadline::duration>(std::chrono::duration<double>(std::max(seconds, 0.0)));
}

// Called with a message to log as a warning.
using Warn = std::function<void(const std::string&)>;

// One model's queue in a worker, as Triton's scheduler has one: it runs
// the model's forwards on at most `instances` of them at once, and with
// batching merges the requests that wait into as few forwards as it can.
// Thread-safe.
//
// Requests queue in arrival order, in the threads that carry them (run) or
// without one (submit). When an instance is free, the oldest request queued
// leads it: with batching,
// from then on it waits up to the policy's delay for more requests, and
// takes the queued requests that can be merged with it (see `run`), in
// order, up to `max_batch_size` rows, whichever thread carries them; it
// runs them as one forward and frees the instance for the next oldest
// request. It takes them all unless fewer make a batch that its forwards
// so far show to be cheaper per row (BatchCosts): those left lead or join
// the next forward.
class Scheduler {
 public:
  using Forward = std::function<c10::IValue(std::vector<c10::IValue>)>;
  // Called once with a submitted request's result, or with what ended it.
  using Done = std::function<void(c10::IValue result, std::exception_ptr error)>;

  // `forward` runs the model on complete, checked arguments; `name` is the
  // model's name in warnings. `instances` is at least 1. With
  // `share_plain_outputs`, values in the result that are not tensors are
  // known to be forward's own arguments or constants (see `run`), and each
  // request of a batch gets them as they are; otherwise they make a result
  // that cannot be split.
  Scheduler(ServingPolicy policy, size_t instances, Forward forward, std::string name, Warn warn,
            bool share_plain_outputs);

  // Stops the scheduler's threads (submit).
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Returns forward's result for `args`, or throws what forward threw on
  // them.
  //
  // With batching, `args` join a batch when every tensor in them (also
  // inside lists, tuples and dicts) has at least one dimension and the same
  // length N in dimension 0, and agrees with the batch's first request in
  // structure, dtype, device and every dimension but the first, and every
  // other value is equal; the request's share of each tensor in the result
  // is then its N rows, and of each other value (with
  // `share_plain_outputs`) the value, which depends only on arguments equal
  // across the batch. When a merged forward raises, or returns a value that
  // cannot be split that way, each request of the batch runs alone, so that
  // each gets its own answer.
  //
  // A request still queued at its `deadline` leaves the queue and throws
  // DeadlineError: its caller has answered 504, and its forward never runs.
  c10::IValue run(std::vector<c10::IValue> args, Deadline deadline = Deadline::max());

  // Queues `args` as run() does, without a thread of the caller's waiting
  // for them (a worker's event loop, which must never wait): `done` gets
  // what run() would return or throw, called from the thread that ran the
  // forward, which is one of the scheduler's own (one per instance, started
  // by the first submit) or a run() caller whose batch took the request. A
  // request not answered by its `deadline` gets DeadlineError then, from
  // the scheduler's thread that watches deadlines: one still queued leaves
  // the queue and never runs; one whose forward is under way (or about to
  // be, leading its batch) is answered without waiting for it, and the
  // forward's result for it is dropped. `done` must be short and must not
  // call the scheduler: the next forward waits for it.
  void submit(std::vector<c10::IValue> args, Deadline deadline, Done done);

  const ServingPolicy& policy() const { return policy_; }
  size_t instances() const { return instances_; }
  // The most forwards that have run at once.
  size_t peak_running() const;
  // With batching, the estimated seconds of a forward by rows, of each
  // size that has run (see BatchCosts).
  std::vector<std::pair<int64_t, double>> forward_costs() const;

 private:
  struct Pending;

  // Fills in `p`'s tensors and rows from its args.
  void prepare(Pending& p) const;
  // Runs a batch led by `lead`, which holds an instance: waits out the
  // policy's delay, takes the batch, runs it and frees the instance.
  // Returns the submitted requests of the batch, whose `done` the caller
  // calls once it released `lock` (held on entry and on return).
  std::vector<Pending*> lead_batch(Pending* lead, std::unique_lock<std::mutex>& lock);
  // The scheduler's own threads (submit): one per instance leads the
  // batches of submitted requests that hold an instance, and one more ends
  // those whose deadline passes while they are queued, even while every
  // instance runs.
  void lead_submitted();
  void expire_submitted();
  // Ends the submitted requests whose deadline passed by `now`: those still
  // queued leave the queue, each with DeadlineError, into `dropped` (to be
  // finished and freed); of those whose forward is under way or about to
  // be, the `done` is moved into `answered` (to be called with
  // DeadlineError), and the request is freed when its batch ends. Expects
  // mutex_ held.
  void take_expired(Deadline now, std::vector<Pending*>& dropped, std::vector<Done>& answered);
  // Calls each request's `done` (unless called already), and frees it.
  static void finish_submitted(const std::vector<Pending*>& finished);
  // Runs `batch` and fills in each request's outcome; returns how long its
  // forward took when it ran as one forward that answered every request.
  std::optional<double> execute(const std::vector<Pending*>& batch);
  // Runs each request of `batch` alone.
  void execute_alone(const std::vector<Pending*>& batch);
  // Removes `lead` from the queue, and returns it with the requests it
  // takes, of the size `costs_` chooses. Expects mutex_ held.
  std::vector<Pending*> take_batch(Pending* lead);
  // Hands each free instance to the oldest request queued that leads none,
  // waking its thread (or one of the scheduler's, for a submitted one).
  // Expects mutex_ held.
  void hand_out_instances();
  // Rows that `lead` could take now. Expects mutex_ held.
  int64_t rows_within_reach(const Pending* lead) const;

  const ServingPolicy policy_;
  const size_t instances_;
  const Forward forward_;
  const std::string name_;
  const Warn warn_;
  const bool share_plain_outputs_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // a request queued: wakes leaders waiting out the delay
  std::deque<Pending*> queue_;  // requests waiting, oldest first
  size_t leading_ = 0;          // instances held by a request forming or running a batch
  size_t running_ = 0;          // forwards running
  size_t peak_running_ = 0;
  BatchCosts costs_;
  std::atomic<bool> warned_unsplittable_{false};
  // The scheduler's own threads (submit), and what wakes them: a submitted
  // request that leads, or one whose deadline is the earliest; stopping.
  std::condition_variable submitted_changed_;
  std::condition_variable expiry_changed_;
  std::vector<std::thread> threads_;
  std::vector<Pending*> in_forward_;  // submitted requests in a forward under way
  Deadline next_expiry_ = Deadline::max();  // what expire_submitted waits until
  bool stopping_ = false;
};

}  // namespace torch_serving
