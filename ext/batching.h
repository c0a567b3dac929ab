// Dynamic batching: requests for one model that wait while its forward runs
// are merged into one forward along dimension 0, and the outputs are split
// back, so that a forward bound by reading its weights reads them once for
// many requests.
#pragma once

#include <ATen/core/ivalue.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace torch_serving {

// What a model declares in the `torch_serving.json` file of its archive.
struct BatchPolicy {
  int64_t max_batch_size = 0;  // rows (dimension 0) per forward; below 2, no batching
  double max_delay_s = 0;      // how long a batch's first request waits for more once the model is free; 0: never

  bool enabled() const { return max_batch_size > 1; }
};

// The name of the extra file in a TorchScript archive that declares the policy.
inline constexpr const char* kPolicyFile = "torch_serving.json";

// Reads `{"max_batch_size": 8, "max_batch_delay_ms": 2}`. Throws
// std::invalid_argument saying what is wrong with `json`.
BatchPolicy parse_batch_policy(std::string_view json);

// Called with a message to log as a warning.
using Warn = std::function<void(const std::string&)>;

// Merges concurrent calls of one model's forward. Thread-safe.
//
// The first request to find no forward running leads: from when it takes
// the lead, it waits up to the policy's delay for more requests, takes
// those that can be merged with it (see `run`), up to `max_batch_size`
// rows, runs them as one forward, and hands the lead to the oldest request
// still waiting. Requests wait in the threads that run them.
class Batcher {
 public:
  using Forward = std::function<c10::IValue(std::vector<c10::IValue>)>;

  // `forward` runs the model on complete, checked arguments; `name` is the
  // model's name in warnings. With `share_plain_outputs`, values in the
  // result that are not tensors are known to be forward's own arguments
  // or constants (see `run`), and each request of a batch gets them as they
  // are; otherwise they make a result that cannot be split.
  Batcher(BatchPolicy policy, Forward forward, std::string name, Warn warn, bool share_plain_outputs);

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Returns forward's result for `args`, or throws what forward threw on
  // them.
  //
  // `args` join a batch when every tensor in them (also inside lists,
  // tuples and dicts) has at least one dimension and the same length N in
  // dimension 0, and agrees with the batch's first request in structure,
  // dtype, device and every dimension but the first, and every other value
  // is equal; the request's share of each tensor in the result is then its
  // N rows, and of each other value (with `share_plain_outputs`) the value,
  // which depends only on arguments equal across the batch. When
  // a merged forward raises, or returns a value that cannot be split that
  // way, each request of the batch runs alone, so that each gets its own
  // answer.
  c10::IValue run(std::vector<c10::IValue> args);

  const BatchPolicy& policy() const { return policy_; }

 private:
  struct Pending;

  // Runs `batch` and fills in each request's outcome.
  void execute(const std::vector<Pending*>& batch);
  // Runs each request of `batch` alone.
  void execute_alone(const std::vector<Pending*>& batch);
  // Removes from the queue, and returns, the batch its first request leads.
  std::vector<Pending*> take_batch();

  const BatchPolicy policy_;
  const Forward forward_;
  const std::string name_;
  const Warn warn_;
  const bool share_plain_outputs_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Pending*> queue_;  // requests waiting, oldest first
  bool leading_ = false;        // a request is forming or running a batch
  std::atomic<bool> warned_unsplittable_{false};
};

}  // namespace torch_serving
