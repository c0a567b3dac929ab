// A loaded TorchScript module that checks its inputs against forward's
// schema before running it.
#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <torch/csrc/jit/api/module.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "batching.h"
#include "model_file.h"

namespace torch_serving {

// Returns T for `Optional[T]`, `type` otherwise.
c10::TypePtr strip_optional(const c10::TypePtr& type);

// Renders `schema` the way a Python user wrote it, without `self`, e.g.
// `forward(x: Tensor, factor: float = 2.0) -> Tensor`. Built from names,
// type annotations and our own rendering of defaults: printing a schema
// through libtorch's stream operators crashed for float defaults on a
// torch 2.11 + CUDA build.
std::string signature_text(const c10::FunctionSchema& schema);

class Servable {
 public:
  // Loads the module in `file` onto `device` in eval mode, with the batch
  // policy its `torch_serving.json` extra file declares (a malformed one is
  // reported through `warn` and means no batching).
  //
  // `name` is how errors refer to the model, so that no answer reveals the
  // server's file system. Throws ModelLoadError.
  static std::shared_ptr<const Servable> load(const ModelFile& file, const std::string& name, c10::Device device,
                                              const Warn& warn);

  // Runs forward on `args` under InferenceMode, on CPU without the
  // optimizing graph executor, batched with concurrent calls when the
  // model declares batching.
  //
  // Throws SignatureError when `args` do not fit forward's schema (naming the
  // argument), ResourceError when forward runs out of memory and
  // ExecutionError when it raises otherwise.
  c10::IValue run(std::vector<c10::IValue> args) const;

  // Returns forward's schema.
  const c10::FunctionSchema& schema() const { return schema_; }

  // The rows a batch may hold; 0 when the model does not batch.
  int64_t max_batch_size() const { return batcher_ ? batcher_->policy().max_batch_size : 0; }

  // Whether a call may run in its caller's thread: forward has run, and
  // has typically taken under a millisecond, and the model does not batch
  // (a batch waits for other requests).
  bool is_quick() const;

  // Calls of run() and forward executions since the load: with batching,
  // fewer executions than requests.
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }
  uint64_t executions() const { return executions_.load(std::memory_order_relaxed); }

 private:
  Servable(torch::jit::Module module, c10::FunctionSchema schema, c10::Device device);

  void check_and_complete(std::vector<c10::IValue>& args) const;
  // Runs forward once on complete, checked arguments.
  c10::IValue forward(std::vector<c10::IValue> args) const;

  // Running forward mutates no module state, but Module's API is non-const.
  mutable torch::jit::Module module_;
  c10::FunctionSchema schema_;
  c10::Device device_;
  std::unique_ptr<Batcher> batcher_;
  // A moving average of forward's wall time; negative until it first ran.
  mutable std::atomic<int64_t> typical_forward_ns_{-1};
  mutable std::atomic<uint64_t> requests_{0};
  mutable std::atomic<uint64_t> executions_{0};
};

}  // namespace torch_serving
