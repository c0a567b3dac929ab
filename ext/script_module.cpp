// Loading, signature checking and running of TorchScript modules.
#include "script_module.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/csrc/jit/serialization/import.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <string_view>

#include "errors.h"

namespace torch_serving {
namespace {

// Lets torch read a model archive through the descriptor that was checked.
class FdReadAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  FdReadAdapter(int fd, size_t size) : fd_(fd), size_(size) {}

  size_t size() const override { return size_; }

  size_t read(uint64_t pos, void* buf, size_t n, const char* what) const override {
    size_t done = 0;
    while (done < n) {
      ssize_t got = ::pread(fd_, static_cast<char*>(buf) + done, n - done, off_t(pos + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      done += size_t(got);
    }
    return done;
  }

 private:
  int fd_;
  size_t size_;
};

// Widens what JSON cannot tell apart from what forward asks for: an int where
// a float is expected, and the element type of an empty or all-int list.
void coerce(c10::IValue& value, const c10::TypePtr& expected) {
  c10::TypePtr target = strip_optional(expected);
  if (value.isInt() && target->kind() == c10::TypeKind::FloatType) {
    value = static_cast<double>(value.toInt());
    return;
  }
  auto list_type = target->cast<c10::ListType>();
  if (!list_type || !value.isList()) return;
  c10::TypePtr elem = list_type->getElementType();
  auto list = value.toList();
  bool widen = elem->kind() == c10::TypeKind::FloatType && list.elementType()->kind() == c10::TypeKind::IntType;
  if (!list.empty() && !widen) return;
  c10::impl::GenericList typed(elem);
  typed.reserve(list.size());
  for (const c10::IValue& item : list) typed.push_back(widen ? c10::IValue(double(item.toInt())) : item);
  value = std::move(typed);
}

// Moves every tensor in `value`, however deeply nested in lists, tuples and
// dicts, to `device`.
void move_to(c10::IValue& value, c10::Device device) {
  if (value.isTensor()) {
    value = value.toTensor().to(device);
  } else if (value.isList()) {
    auto list = value.toList();
    for (size_t i = 0; i < list.size(); ++i) {
      c10::IValue item = list.get(i);
      move_to(item, device);
      list.set(i, std::move(item));
    }
  } else if (value.isTuple()) {
    std::vector<c10::IValue> items = value.toTupleRef().elements().vec();
    for (auto& item : items) move_to(item, device);
    value = c10::ivalue::Tuple::create(std::move(items));
  } else if (value.isGenericDict()) {
    for (auto& entry : value.toGenericDict()) {
      c10::IValue item = entry.value();
      move_to(item, device);
      entry.setValue(std::move(item));
    }
  }
}

// Whether every value that forward returns, looking through the lists,
// tuples and dicts its graph builds the result with, is a tensor, one of
// forward's own arguments or a constant. In a batch, whose arguments that
// are not tensors are equal, such values are the same for every request.
bool plain_outputs_are_arguments(const torch::jit::Graph& graph) {
  std::function<bool(const torch::jit::Value*)> shared = [&](const torch::jit::Value* value) {
    if (value->type()->kind() == c10::TypeKind::TensorType) return true;  // split by rows instead
    const torch::jit::Node* node = value->node();
    switch (node->kind()) {
      case c10::prim::Param:
      case c10::prim::Constant:
        return true;
      case c10::prim::ListConstruct:
      case c10::prim::TupleConstruct:
      case c10::prim::DictConstruct:
        for (const torch::jit::Value* input : node->inputs()) {
          if (!shared(input)) return false;
        }
        return true;
      default:
        return false;
    }
  };
  for (const torch::jit::Value* output : graph.outputs()) {
    if (!shared(output)) return false;
  }
  return true;
}

// What a zip archive that TorchScript cannot load is instead, and how to make
// a servable file of it; empty when it is none of the files users confuse
// with TorchScript.
std::string what_else_it_is(const std::shared_ptr<caffe2::serialize::ReadAdapterInterface>& reader) {
  bool package = false, pickle = false, constants = false;
  try {
    caffe2::serialize::PyTorchStreamReader archive(reader);
    for (const std::string& record : archive.getAllRecords()) {
      package = package || record.rfind("data/aotinductor/", 0) == 0;
      pickle = pickle || record == "data.pkl";
      constants = constants || record == "constants.pkl";
    }
  } catch (const std::exception&) {
    return "";
  }
  if (package) return "it is an AOTInductor package: name it .pt2";
  if (pickle && !constants) {
    return "it is a torch.save() file (weights or a pickled module), not TorchScript: save the model with "
           "torch.jit.script(model).save(path), or package it as a .pt2 with torch_serving.package(...)";
  }
  return "";
}

}  // namespace

ScriptModule::ScriptModule(torch::jit::Module module, c10::FunctionSchema schema, c10::Device device)
    : module_(std::move(module)), schema_(std::move(schema)), device_(device) {}

std::shared_ptr<const ScriptModule> ScriptModule::load(const ModelFile& file, const std::string& name,
                                               c10::Device device, const InstanceCounts& instances, const Warn& warn) {
  torch::jit::Module module;
  auto reader = std::make_shared<FdReadAdapter>(file.fd(), size_t(file.identity().size));
  torch::jit::ExtraFilesMap extra_files{{kPolicyFile, ""}};
  try {
    module = torch::jit::load(reader, device, extra_files);
  } catch (const std::exception& e) {
    const std::string instead = what_else_it_is(reader);
    throw ModelLoadError(name + " is not a loadable TorchScript module: " +
                         (instead.empty() ? essential_message(message_of(e)) : instead));
  }
  module.eval();
  auto forward = module.find_method("forward");
  if (!forward) throw ModelLoadError(name + " has no forward method");
  c10::FunctionSchema schema = forward->function().getSchema();
  std::shared_ptr<ScriptModule> servable(new ScriptModule(std::move(module), std::move(schema), device));
  const std::string& policy_text = extra_files[kPolicyFile];
  ServingPolicy policy;
  if (!policy_text.empty()) {
    try {
      policy = parse_serving_policy(policy_text);
    } catch (const std::invalid_argument& e) {
      warn("model " + name + " has a malformed " + kPolicyFile + " (" + e.what() +
           "); it is served without batching");
    }
  }
  const ScriptModule* self = servable.get();  // the scheduler lives and dies with it
  const bool share_plain =
      policy.batching() && plain_outputs_are_arguments(*servable->module_.get_method("forward").graph());
  servable->scheduler_ = std::make_unique<Scheduler>(
      policy, instances.for_policy(policy),
      [self](std::vector<c10::IValue> args) { return self->forward(std::move(args)); }, name, warn, share_plain);
  return servable;
}

void ScriptModule::check_and_complete(std::vector<c10::IValue>& args) const {
  // arguments()[0] is `self`.
  const auto& params = schema_.arguments();
  const size_t max_args = params.size() - 1;
  if (args.size() > max_args) {
    throw SignatureError("forward takes at most " + std::to_string(max_args) + " argument(s), received " +
                         std::to_string(args.size()) + "; signature: " + signature_text(schema_));
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const c10::Argument& param = params[i + 1];
    coerce(args[i], param.type());
    if (!args[i].type()->isSubtypeOf(*param.type())) {
      throw SignatureError("argument '" + param.name() + "' (position " + std::to_string(i) + ") of forward expects " +
                           param.type()->repr_str() + ", received " +
                           c10::unshapedType(args[i].type())->repr_str());
    }
  }
  for (size_t i = args.size(); i < max_args; ++i) {
    const c10::Argument& param = params[i + 1];
    if (!param.default_value()) {
      throw SignatureError("missing argument '" + param.name() + "' (position " + std::to_string(i) +
                           ") of forward, which expects " + param.type()->repr_str() +
                           "; received " + std::to_string(args.size()) + " argument(s)");
    }
    args.push_back(*param.default_value());
  }
}

std::vector<c10::IValue> ScriptModule::scheduled_arguments(std::vector<c10::IValue> args) const {
  check_and_complete(args);
  if (device_ != c10::Device(c10::kCPU)) {
    for (auto& arg : args) move_to(arg, device_);
  }
  return args;
}

c10::IValue ScriptModule::forward(std::vector<c10::IValue> args) const {
  return timed_execution([&] {
    c10::InferenceMode inference;
    // On CPU, TorchScript's optimizing executor fuses nothing, yet its plan
    // (type guards under a lock) cost 17 of a tiny model's 40 us per call;
    // the plain plan runs the same operators, so results are bit-identical.
    // CUDA keeps it for its fusers.
    torch::jit::GraphOptimizerEnabledGuard optimizer(device_.is_cuda());
    try {
      return module_.forward(std::move(args));
    } catch (const std::exception& e) {
      fail_execution(e, message_of(e));
    }
  });
}

}  // namespace torch_serving
