// What the server needs of a loaded model, whatever kind of file it came
// from: a TorchScript module (script_module.h) or an AOTInductor package
// (package.h).
#pragma once

#include <ATen/core/function_schema.h>
#include <ATen/core/ivalue.h>
#include <c10/core/ScalarType.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "scheduler.h"

namespace torch_serving {

// What a package made by torch_serving.package() says about one of its
// flat input or output tensors.
struct TensorSpec {
  std::string name;  // inputs only
  at::ScalarType dtype;
  std::vector<int64_t> shape;  // -1 where dynamic
  // Per dimension: the symbol of a dynamic one (equal symbols must be equal
  // sizes), empty for a static one; and the dynamic one's range.
  std::vector<std::string> symbols;
  std::vector<int64_t> min;
  std::vector<std::optional<int64_t>> max;
};

// A model that takes and gives flat, named tensors (an AOTInductor
// package), with their dtypes and shapes when recorded.
struct FlatTensors {
  std::vector<std::string> input_names;   // in call order
  std::vector<std::string> output_names;  // in result order
  std::vector<TensorSpec> input_specs;    // empty when not recorded (a plain package)
  std::vector<TensorSpec> output_specs;
};

// What a model takes and gives, for a protocol to bind requests to: a
// TorchScript forward's schema (`self` first), or flat tensors.
using Signature = std::variant<const c10::FunctionSchema*, const FlatTensors*>;

class Servable {
 public:
  virtual ~Servable() = default;

  // Runs the model on the positional arguments of a /serve request and
  // returns its result. Throws SignatureError when `args` do not fit the
  // model (naming the argument), ResourceError when it runs out of memory,
  // ExecutionError when it raises otherwise, and DeadlineError when
  // `deadline` passes before one of its instances takes the call.
  c10::IValue run(std::vector<c10::IValue> args, Deadline deadline = Deadline::max()) const;

  // Queues a forward on `args` as run() does, without waiting for it
  // (Scheduler::submit): `done` gets run()'s result or its error, from the
  // thread that ran the forward. Throws what run() throws of the arguments
  // themselves (SignatureError) at once.
  void submit(std::vector<c10::IValue> args, Deadline deadline, Scheduler::Done done) const;

  // What the model takes and gives, for a protocol to bind requests to.
  virtual Signature signature() const = 0;

  // run()'s arguments from one value per input of the signature, in its
  // order: a package's flat tensors nested as its call spec says; forward's
  // arguments as they are.
  virtual std::vector<c10::IValue> arguments_from(std::vector<c10::IValue> inputs) const { return inputs; }

  // The parts of run()'s result, one per output of a flat signature (a
  // package's flat tensors); a forward's result whole.
  virtual std::vector<c10::IValue> outputs_of(const c10::IValue& result) const { return {result}; }

  // The rows a batch may hold; 0 when the model does not batch.
  int64_t max_batch_size() const { return scheduler_->policy().batching() ? scheduler_->policy().max_batch_size : 0; }

  // How many forwards of the model run at once, and the most that have.
  size_t instances() const { return scheduler_->instances(); }
  size_t peak_running() const { return scheduler_->peak_running(); }
  // With batching, a forward's estimated seconds by rows (Scheduler::forward_costs).
  std::vector<std::pair<int64_t, double>> forward_costs() const { return scheduler_->forward_costs(); }

  // Whether a call may run in its caller's thread: the model has run, has
  // typically taken under a millisecond, and does not batch (a batch waits
  // for other requests).
  bool is_quick() const;

  // Whether a call may wait for its forward in its caller's thread
  // (Placement::kQueuedCaller): the model batches, has run, and its
  // forwards typically take under 100 ms, how late a request in a forward
  // under way at its deadline may then be answered.
  bool may_wait_in_caller() const;

  // Whether a worker's event loop must no longer answer this model's
  // requests itself: one of them once ran long there (see
  // Admission::note_event_loop_call). Set once, for the model's lifetime.
  bool kept_off_event_loop() const { return kept_off_event_loop_.load(std::memory_order_relaxed); }
  // Sets it; returns whether it was not set before.
  bool keep_off_event_loop() const { return !kept_off_event_loop_.exchange(true, std::memory_order_relaxed); }

  // Calls of run() and model executions since the load: with batching,
  // fewer executions than requests.
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t executions() const { return executions_.load(std::memory_order_relaxed); }

  // Counts this model's executions in `total` too: a count that outlives
  // the model (ModelCache::execution_totals). Set before the model is shared.
  void count_executions_in(std::shared_ptr<std::atomic<uint64_t>> total) const { total_executions_ = std::move(total); }

 protected:
  // run()'s arguments, checked (SignatureError when they do not fit) and
  // made what the scheduler's forward takes.
  virtual std::vector<c10::IValue> scheduled_arguments(std::vector<c10::IValue> args) const = 0;
  // run()'s result from what the scheduler's forward returned.
  virtual c10::IValue result_of(c10::IValue scheduled) const { return scheduled; }

  // Set once by the loader, before the model is shared: runs `forward`
  // through a scheduler with `policy` on `instances` instances.
  std::unique_ptr<Scheduler> scheduler_;

  // Stops the scheduler, waiting for a forward its own threads run: a
  // subclass calls it first thing in its destructor, since the forward of
  // a request answered at its deadline (Scheduler::submit) may still run
  // on what the subclass is about to destroy, with no one holding the model.
  void stop_scheduling() { scheduler_.reset(); }

  // Runs `execute` once, counting it and timing it for is_quick() and
  // may_wait_in_caller().
  template <class Execute>
  auto timed_execution(Execute&& execute) const {
    executions_.fetch_add(1, std::memory_order_relaxed);
    if (total_executions_) total_executions_->fetch_add(1, std::memory_order_relaxed);
    const auto started = std::chrono::steady_clock::now();
    auto result = execute();
    record_execution_time(std::chrono::steady_clock::now() - started);
    return result;
  }

 private:
  void record_execution_time(std::chrono::steady_clock::duration took) const;
  // Whether the model has run, and its executions typically take under `ns`.
  bool typically_under(int64_t ns) const;

  // A moving average of an execution's wall time; negative until one ran.
  mutable std::atomic<int64_t> typical_execution_ns_{-1};
  mutable std::atomic<uint64_t> requests_{0};
  mutable std::atomic<uint64_t> executions_{0};
  mutable std::atomic<bool> kept_off_event_loop_{false};
  mutable std::shared_ptr<std::atomic<uint64_t>> total_executions_;
};

// Drops `model`. Its last reference waits, as the model is destroyed, for a
// forward still running for a request answered at its deadline
// (stop_scheduling): that one is dropped on a thread of its own, so that a
// caller that must never wait (a worker's event loop) does not.
void release_without_waiting(std::shared_ptr<const Servable> model);

// The message of `e` without the C++ backtrace that torch's own errors
// carry.
std::string message_of(const std::exception& e);

// Keeps the line of a torch error message that says what went wrong: the
// last one of a TorchScript traceback, the first one otherwise.
std::string essential_message(const std::string& what);

// Throws what a model raising `e` (whose message is `what`) while running
// means: ResourceError for an allocation failure, ExecutionError otherwise.
[[noreturn]] void fail_execution(const std::exception& e, const std::string& what);

}  // namespace torch_serving
