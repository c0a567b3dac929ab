// AOTInductor packages (`.pt2`): models compiled ahead of time from
// torch.export, run without Python or TorchScript.
#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model_file.h"
#include "servable.h"
#include "tree_spec.h"

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace torch_serving {

// The key of AOTInductor's package metadata under which
// torch_serving.package() records its description of the inputs and outputs.
inline constexpr char kPackageMetadataKey[] = "torch_serving";

class Package final : public Servable {
 public:
  // Loads the AOTInductor package in `file` for `device` with `instances`
  // model instances, so that as many calls run at once. Throws
  // ModelLoadError when the file is no such package, or one built for
  // another device, CPU or platform, or one this torch cannot load.
  //
  // The package's compiled code runs its own input checks, which
  // AOTI_RUNTIME_CHECK_INPUTS=1 in the environment turns on (Pipeline sets it).
  //
  // A package's compiled code never leaves the process once loaded:
  // AOTInductor builds it with STB_GNU_UNIQUE symbols, which make the
  // dynamic loader keep it mapped, its weights included, after dlclose. So
  // a package stays loaded for the life of the process, and loading the
  // same file again (unchanged, by the same name, for the same device and
  // instances) returns it instead of mapping another copy. Throws
  // ResourceError when the temporary directory (TMPDIR) it is unpacked
  // into is missing, not writable or too full; what a failed load unpacked
  // is removed.
  static std::shared_ptr<const Package> load(const ModelFile& file, const std::string& name, c10::Device device,
                                             size_t instances);

  ~Package() override;

  Signature signature() const override { return &tensors_; }

  // Nests the flat input tensors into run()'s arguments, as the call spec says.
  std::vector<c10::IValue> arguments_from(std::vector<c10::IValue> inputs) const override;

  // Flattens a result into its flat output tensors, as the call spec says.
  std::vector<c10::IValue> outputs_of(const c10::IValue& result) const override;

 private:
  Package() = default;

  static std::shared_ptr<const Package> unpack(const ModelFile& file, const std::string& name, c10::Device device,
                                               size_t instances);

  // Flattens `args` by the package's call spec and checks the tensors
  // against its description (when torch_serving.package() made it); the
  // compiled code runs on them, and result_of nests its outputs back.
  std::vector<c10::IValue> scheduled_arguments(std::vector<c10::IValue> args) const override;
  c10::IValue result_of(c10::IValue scheduled) const override;
  void check_inputs(const std::vector<at::Tensor>& inputs) const;
  // Runs the compiled code once on the flat inputs.
  std::vector<at::Tensor> execute(std::vector<at::Tensor> inputs) const;

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  c10::Device device_{c10::kCPU};
  std::vector<TreeSpec> arguments_;         // positional, then keyword ones
  std::vector<std::string> argument_names_;  // as errors and metadata name them
  TreeSpec result_;
  // The flat tensors' names, and their specs from torch_serving.package().
  FlatTensors tensors_;
};

}  // namespace torch_serving
