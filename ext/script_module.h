// TorchScript modules, which check their inputs against forward's schema
// before running.
#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model_file.h"
#include "schema.h"
#include "servable.h"

namespace torch_serving {

// A TorchScript module, run through its forward method.
class ScriptModule final : public Servable {
 public:
  // Loads the module in `file` onto `device` in eval mode, with the
  // serving policy its `torch_serving.json` extra file declares (a
  // malformed one is reported through `warn` and means no batching), on
  // the instances `instances` gives for that policy.
  //
  // `name` is how errors refer to the model, so that no answer reveals the
  // server's file system. Throws ModelLoadError.
  static std::shared_ptr<const ScriptModule> load(const ModelFile& file, const std::string& name, c10::Device device,
                                                  const InstanceCounts& instances, const Warn& warn);

  ~ScriptModule() override { stop_scheduling(); }

  Signature signature() const override { return &schema_; }

  // Returns forward's schema.
  const c10::FunctionSchema& schema() const { return schema_; }

 private:
  ScriptModule(torch::jit::Module module, c10::FunctionSchema schema, c10::Device device);

  // Forward runs under InferenceMode, on CPU without the optimizing graph
  // executor, batched with concurrent calls when the model declares
  // batching. Throws SignatureError when `args` do not fit forward's schema
  // (naming the argument).
  std::vector<c10::IValue> scheduled_arguments(std::vector<c10::IValue> args) const override;
  void check_and_complete(std::vector<c10::IValue>& args) const;
  // Runs forward once on complete, checked arguments.
  c10::IValue forward(std::vector<c10::IValue> args) const;

  // Running forward mutates no module state, but Module's API is non-const.
  mutable torch::jit::Module module_;
  c10::FunctionSchema schema_;
  c10::Device device_;
};

}  // namespace torch_serving
