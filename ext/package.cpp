// Loading, checking and running AOTInductor packages.
#include "package.h"

#include <ATen/cpu/Utils.h>
#include <c10/core/InferenceMode.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <regex>
#include <tuple>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "errors.h"
#include "json_tensor.h"

namespace torch_serving {
namespace {

using simdjson::dom::element;

const std::string kTorchVersion = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                                  "." + std::to_string(TORCH_VERSION_PATCH);

// The name AOTInductor gives the one model of a package it compiles.
constexpr char kModelName[] = "model";

// AOTIModelPackageLoader's constructor unpacks into shared temporary
// directories and registers runners in global state; loads of packages are
// rare, so they take turns (and so does the record of those loaded).
std::mutex& loader_construction() {
  static std::mutex mutex;
  return mutex;
}

// The CPU features an AOTI_CPU_ISA word (as torch's pick_vec_isa() names
// the vector ISA a package was compiled for) needs; nothing to check for
// one that only says which architecture, which AOTI_MACHINE already did.
std::vector<std::string> features_of(const std::string& isa_word) {
  if (isa_word == "AVX2") return {"avx2", "fma3"};
  if (isa_word == "AVX512") return {"avx512_f", "avx512_bw", "avx512_dq", "avx512_vl", "fma3"};
  if (isa_word == "AVX512_VNNI") return {"avx512_vnni"};
  if (isa_word == "AMX_TILE") return {"amx_tile", "amx_bf16", "amx_int8"};
  return {};
}

// Refuses a package compiled for another machine: another platform, CPU
// architecture, device type, or vector instructions this CPU lacks (whose
// code would die of an illegal instruction).
void check_target(const std::unordered_map<std::string, std::string>& metadata, const std::string& name,
                  c10::Device device) {
  auto value = [&](const char* key) {
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  const std::string device_key = value("AOTI_DEVICE_KEY");
  const std::string ours = c10::DeviceTypeName(device.type(), /*lower_case=*/true);
  if (!device_key.empty() && device_key != ours) {
    throw ModelLoadError(name + " was compiled for " + device_key + ", but this server runs models on " + ours);
  }
  utsname host{};
  ::uname(&host);
  const std::string platform = value("AOTI_PLATFORM"), machine = value("AOTI_MACHINE");
  if (!platform.empty() && platform != "linux") {
    throw ModelLoadError(name + " was compiled for the platform " + platform + ", but this server runs on linux");
  }
  if (!machine.empty() && machine != host.machine) {
    throw ModelLoadError(name + " was compiled for " + machine + " CPUs, but this server runs on " + host.machine);
  }
  if (device.is_cpu()) {
    const auto capabilities = at::cpu::get_cpu_capabilities();
    std::istringstream words(value("AOTI_CPU_ISA"));
    for (std::string word; words >> word;) {
      for (const std::string& feature : features_of(word)) {
        auto it = capabilities.find(feature);
        if (it == capabilities.end() || !it->second.isBool() || !it->second.toBool()) {
          throw ModelLoadError(name + " was compiled for CPUs with " + value("AOTI_CPU_ISA") + ", but this CPU lacks " +
                               feature + "; compile it on (or for) a CPU like this server's");
        }
      }
    }
  }
}

[[noreturn]] void fail_metadata(const std::string& name, const std::string& why) {
  throw ModelLoadError(name + " has malformed " + kPackageMetadataKey + " metadata: " + why);
}

int64_t read_int(element e, const std::string& name, const char* what) {
  int64_t v = 0;
  if (e.get_int64().get(v)) fail_metadata(name, std::string(what) + " is not an integer");
  return v;
}

std::string read_text(element e, const std::string& name, const char* what) {
  std::string_view v;
  if (e.get_string().get(v)) fail_metadata(name, std::string(what) + " is not a string");
  return std::string(v);
}

// Reads `{"name": .., "dtype": "float32", "dims": [4, {"symbol": "s0",
// "min": 1, "max": 64}]}`: a static dimension as its size, a dynamic one as
// its symbol and range (a null max for none). Outputs have no name: theirs
// come from the call spec.
TensorSpec read_tensor_spec(element e, const std::string& name) {
  TensorSpec spec;
  if (element given; !e["name"].get(given)) spec.name = read_text(given, name, "a tensor's name");
  auto dtype = json::dtype_named(read_text(e["dtype"], name, "a tensor's dtype"));
  if (!dtype) fail_metadata(name, "tensor " + spec.name + " has an unknown dtype");
  spec.dtype = *dtype;
  simdjson::dom::array dims;
  if (e["dims"].get_array().get(dims)) fail_metadata(name, "tensor " + spec.name + " has no dims");
  for (element dim : dims) {
    if (dim.is_object()) {
      spec.shape.push_back(-1);
      spec.symbols.push_back(read_text(dim["symbol"], name, "a dimension's symbol"));
      spec.min.push_back(read_int(dim["min"], name, "a dimension's min"));
      element max = dim["max"];
      spec.max.push_back(max.is_null() ? std::nullopt : std::optional<int64_t>(read_int(max, name, "a dimension's max")));
    } else {
      spec.shape.push_back(read_int(dim, name, "a dimension"));
      spec.symbols.emplace_back();
      spec.min.push_back(spec.shape.back());
      spec.max.push_back(spec.shape.back());
    }
  }
  return spec;
}

struct Description {
  std::string torch_version;  // of the torch that made the package; empty if unknown
  std::vector<std::string> arguments;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

Description read_description(const std::string& text, const std::string& name) {
  simdjson::dom::parser parser;
  element doc;
  if (parser.parse(text).get(doc) || !doc.is_object()) fail_metadata(name, "it is not a JSON object");
  Description description;
  simdjson::dom::array arguments, inputs, outputs;
  if (doc["arguments"].get_array().get(arguments) || doc["inputs"].get_array().get(inputs) ||
      doc["outputs"].get_array().get(outputs)) {
    fail_metadata(name, "it lacks arguments, inputs or outputs");
  }
  if (element version; !doc["torch"].get(version)) description.torch_version = read_text(version, name, "torch");
  for (element e : arguments) description.arguments.push_back(read_text(e, name, "an argument's name"));
  for (element e : inputs) description.inputs.push_back(read_tensor_spec(e, name));
  for (element e : outputs) description.outputs.push_back(read_tensor_spec(e, name));
  return description;
}

std::string dims_text(const TensorSpec& spec) {
  std::string text = "[";
  for (size_t d = 0; d < spec.shape.size(); ++d) {
    if (d) text += ", ";
    text += spec.symbols[d].empty() ? std::to_string(spec.shape[d]) : spec.symbols[d];
  }
  return text + "]";
}

std::string dtype_text(at::ScalarType dtype) {
  auto name = json::dtype_name(dtype);
  return name ? std::string(*name) : std::string(c10::toString(dtype));
}

std::string position_name(const char* prefix, size_t i) { return prefix + std::to_string(i); }

// `text` with every absolute path cut to its last component: the loader's
// messages name the files it unpacked, and no answer may reveal the
// server's file system.
std::string without_paths(const std::string& text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const bool starts_path = text[i] == '/' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '(');
    if (!starts_path) {
      out += text[i++];
      continue;
    }
    size_t end = text.find_first_of(" ,;)", i);
    if (end == std::string::npos) end = text.size();
    const std::string path = text.substr(i, end - i);
    out += path.substr(path.find_last_of('/') + 1);
    i = end;
  }
  return out;
}


// The temporary directory AOTInductor unpacks packages into (TMPDIR), or
// ResourceError naming what is wrong with it: a package that cannot be
// unpacked there is the server's fault, not the file's.
std::filesystem::path unpacking_directory(const std::string& name, int64_t package_bytes) {
  std::error_code error;
  const std::filesystem::path directory = std::filesystem::temp_directory_path(error);
  if (error || access(directory.c_str(), W_OK | X_OK) != 0) {
    throw ResourceError(name + " cannot be unpacked: the server's temporary directory (TMPDIR) is missing or not "
                               "writable");
  }
  struct statvfs space {};
  if (statvfs(directory.c_str(), &space) == 0) {
    const auto free_bytes = int64_t(space.f_bavail) * int64_t(space.f_frsize);
    if (free_bytes < package_bytes) {
      constexpr int64_t kMiB = 1 << 20;
      throw ResourceError(name + " cannot be unpacked: the server's temporary directory (TMPDIR) has " +
                          std::to_string(free_bytes / kMiB) + " MiB free, the package takes " +
                          std::to_string((package_bytes + kMiB - 1) / kMiB) + " MiB");
    }
  }
  return directory;
}

// The entries of `directory` that AOTInductor made (aotinductor_*).
std::vector<std::filesystem::path> unpacked_entries(const std::filesystem::path& directory) {
  std::vector<std::filesystem::path> entries;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
    if (entry.path().filename().string().rfind("aotinductor_", 0) == 0) entries.push_back(entry.path());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

// Removes what a failed load left unpacked: entries not in `before` (loads take turns).
void remove_unpacked_since(const std::filesystem::path& directory, const std::vector<std::filesystem::path>& before) {
  for (const auto& entry : unpacked_entries(directory)) {
    if (!std::binary_search(before.begin(), before.end(), entry)) {
      std::error_code ignored;
      std::filesystem::remove_all(entry, ignored);
    }
  }
}

// What makes two loads the same: the file (device, inode, size, change
// times), the name it is served by, the device and the instances.
using LoadKey = std::tuple<dev_t, ino_t, off_t, int64_t, int64_t, std::string, std::string, size_t>;

// Packages loaded by this process, which never unload (see Package::load).
// Allocated once and never destroyed: destroying loaders while the process
// exits would run after torch's own statics are gone.
std::map<LoadKey, std::shared_ptr<const Package>>& loaded_packages() {
  static auto* packages = new std::map<LoadKey, std::shared_ptr<const Package>>();
  return *packages;
}

int64_t nanoseconds(const timespec& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; }

// AOTInductor's input checks name dtypes by their enum codes
// ("unmatched dtype, expected: 6(at::kFloat), but got: 7"); this names them as
// requests do ("expected float32, received float64").
std::string with_dtype_names(const std::string& text) {
  static const std::regex mismatch(R"(unmatched dtype, expected: (\d+)(\(at::k\w+\))?, but got: (\d+))");
  std::smatch match;
  if (!std::regex_search(text, match, mismatch)) return text;
  auto name = [](const std::string& code) {
    const int value = std::stoi(code);
    return value < int(at::ScalarType::NumOptions) ? dtype_text(at::ScalarType(value)) : code;
  };
  return match.prefix().str() + "unmatched dtype, expected " + name(match[1].str()) + ", received " +
         name(match[3].str()) + match.suffix().str();
}

}  // namespace

// Only a load that fails after unpacking destroys a package, under the
// loaders' lock (load).
Package::~Package() { stop_scheduling(); }

std::shared_ptr<const Package> Package::load(const ModelFile& file, const std::string& name, c10::Device device,
                                             size_t instances) {
  struct stat st {};
  if (fstat(file.fd(), &st) != 0) {
    throw ResourceError("the server could not read model file " + name + ": " + std::strerror(errno));
  }
  const LoadKey key{st.st_dev,  st.st_ino, st.st_size, nanoseconds(st.st_mtim), nanoseconds(st.st_ctim),
                    name,       device.str(), instances};
  std::lock_guard<std::mutex> lock(loader_construction());
  auto& packages = loaded_packages();
  if (auto it = packages.find(key); it != packages.end()) return it->second;
  const std::filesystem::path directory = unpacking_directory(name, st.st_size);
  const auto before = unpacked_entries(directory);
  try {
    auto package = unpack(file, name, device, instances);
    packages.emplace(key, package);
    return package;
  } catch (...) {
    remove_unpacked_since(directory, before);
    throw;
  }
}

std::shared_ptr<const Package> Package::unpack(const ModelFile& file, const std::string& name, c10::Device device,
                                               size_t instances) {
  // The loader opens files by path; this one is the descriptor that was
  // checked, so what loads is what was confined to the model root.
  const std::string path = "/proc/self/fd/" + std::to_string(file.fd());
  std::unordered_map<std::string, std::string> metadata;
  try {
    metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, kModelName);
  } catch (const std::exception& e) {
    const std::string why = without_paths(essential_message(e.what()));
    if (why.rfind("Failed to initialize zip archive", 0) == 0) {
      throw ModelLoadError(name + " is not a readable .pt2 archive (" + why + "); is it cut short?");
    }
    throw ModelLoadError(name +
                         " is not an AOTInductor package (a torch.export.save archive needs Python to run); "
                         "package the model with torch_serving.package(model, example_args, dynamic_shapes, path) "
                         "or torch._inductor.aoti_compile_and_package(torch.export.export(...))");
  }
  check_target(metadata, name, device);
  std::shared_ptr<Package> package(new Package());
  package->device_ = device;
  Description description;
  if (auto it = metadata.find(kPackageMetadataKey); it != metadata.end()) {
    description = read_description(it->second, name);
  }
  // A package from torch_serving.package() says which torch made it.
  const std::string made_by = description.torch_version.empty() || description.torch_version == kTorchVersion
                                  ? ""
                                  : " (it was made by torch " + description.torch_version + ")";
  try {
    package->loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        path, kModelName, /*run_single_threaded=*/false, std::max<size_t>(instances, 1),
        device.has_index() ? device.index() : c10::DeviceIndex(-1));
  } catch (const std::exception& e) {
    throw ModelLoadError(name + " cannot be loaded by torch " + kTorchVersion + made_by + ": " +
                         without_paths(essential_message(message_of(e))));
  }
  const std::vector<std::string> call_spec = package->loader_->get_call_spec();
  TreeSpec call, result;
  try {
    if (call_spec.size() != 2) throw std::invalid_argument("it has no call spec");
    call = TreeSpec::parse(call_spec[0]);
    result = TreeSpec::parse(call_spec[1]);
  } catch (const std::invalid_argument& e) {
    throw ModelLoadError(name + " cannot be served: " + e.what());
  }
  // The call spec is (args, kwargs); keyword arguments follow the
  // positional ones, named by their keys.
  if (call.kind != TreeSpec::Kind::kTuple || call.children.size() != 2 ||
      call.children[1].kind != TreeSpec::Kind::kDict) {
    throw ModelLoadError(name + " cannot be served: its call spec is not (args, kwargs)");
  }
  package->arguments_ = call.children[0].children;
  const TreeSpec& kwargs = call.children[1];
  package->arguments_.insert(package->arguments_.end(), kwargs.children.begin(), kwargs.children.end());
  package->result_ = std::move(result);

  const size_t flat_inputs = call.leaves, flat_outputs = package->result_.leaves;
  if (!description.inputs.empty() &&
      (description.inputs.size() != flat_inputs || description.outputs.size() != flat_outputs ||
       description.arguments.size() != package->arguments_.size())) {
    fail_metadata(name, "it describes another number of arguments, inputs or outputs than the call spec has");
  }
  for (size_t i = 0; i < package->arguments_.size(); ++i) {
    if (!description.arguments.empty()) {
      package->argument_names_.push_back(description.arguments[i]);
    } else if (i >= call.children[0].children.size()) {
      package->argument_names_.push_back(kwargs.keys[i - call.children[0].children.size()]);
    } else {
      package->argument_names_.push_back(std::to_string(i));
    }
  }
  for (size_t i = 0; i < flat_inputs; ++i) {
    package->tensors_.input_names.push_back(description.inputs.empty() ? position_name("INPUT__", i) : description.inputs[i].name);
  }
  const bool keyed = package->result_.kind == TreeSpec::Kind::kDict;
  const std::vector<std::string> paths = package->result_.leaf_paths();
  for (size_t i = 0; i < flat_outputs; ++i) {
    package->tensors_.output_names.push_back(keyed ? paths[i] : position_name("OUTPUT__", i));
  }
  package->tensors_.input_specs = std::move(description.inputs);
  package->tensors_.output_specs = std::move(description.outputs);
  const Package* self = package.get();  // the scheduler lives and dies with it
  package->scheduler_ = std::make_unique<Scheduler>(
      ServingPolicy{}, instances,
      [self](std::vector<c10::IValue> args) { return c10::IValue(self->execute(args[0].toTensorVector())); }, name,
      Warn(), /*share_plain_outputs=*/false);
  return package;
}

void Package::check_inputs(const std::vector<at::Tensor>& inputs) const {
  if (tensors_.input_specs.empty()) return;  // the compiled code's own checks run
  std::unordered_map<std::string, std::pair<int64_t, std::string>> symbol_sizes;  // size, and whose
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorSpec& spec = tensors_.input_specs[i];
    const at::Tensor& t = inputs[i];
    const std::string label = "input '" + spec.name + "'";
    auto expected = [&] { return " expects " + dtype_text(spec.dtype) + " of shape " + dims_text(spec); };
    auto received = [&] { return ", received " + dtype_text(t.scalar_type()) + " of shape " + json::shape_text(t.sizes().vec()); };
    if (t.scalar_type() != spec.dtype || size_t(t.dim()) != spec.shape.size()) {
      throw SignatureError(label + expected() + received());
    }
    for (size_t d = 0; d < spec.shape.size(); ++d) {
      const int64_t size = t.size(int64_t(d));
      if (spec.symbols[d].empty()) {
        if (size != spec.shape[d]) throw SignatureError(label + expected() + received());
        continue;
      }
      if (size < spec.min[d] || (spec.max[d] && size > *spec.max[d])) {
        throw SignatureError(label + expected() + " with " + spec.symbols[d] + " in [" + std::to_string(spec.min[d]) +
                             ", " + (spec.max[d] ? std::to_string(*spec.max[d]) : "inf") + "]" + received());
      }
      auto [it, first] = symbol_sizes.emplace(spec.symbols[d], std::make_pair(size, spec.name));
      if (!first && it->second.first != size) {
        throw SignatureError(label + expected() + received() + ", but input '" + it->second.second + "' gives " +
                             spec.symbols[d] + " = " + std::to_string(it->second.first));
      }
    }
  }
}

std::vector<c10::IValue> Package::scheduled_arguments(std::vector<c10::IValue> args) const {
  if (args.size() != arguments_.size()) {
    throw SignatureError("the package takes " + std::to_string(arguments_.size()) + " argument(s) (" +
                         json::comma_separated(argument_names_) +
                         "), received " + std::to_string(args.size()));
  }
  std::vector<at::Tensor> inputs;
  for (size_t i = 0; i < args.size(); ++i) arguments_[i].flatten(args[i], "argument '" + argument_names_[i] + "'", inputs);
  check_inputs(inputs);
  for (at::Tensor& t : inputs) t = t.to(device_).contiguous();
  return {c10::List<at::Tensor>(inputs)};
}

c10::IValue Package::result_of(c10::IValue scheduled) const {
  size_t next = 0;
  return result_.unflatten(scheduled.toTensorVector(), &next);
}

std::vector<at::Tensor> Package::execute(std::vector<at::Tensor> inputs) const {
  return timed_execution([&] {
    c10::InferenceMode inference;
    try {
      return loader_->boxed_run(std::move(inputs));
    } catch (const std::exception& e) {
      const std::string what = message_of(e);
      // The compiled code's own input checks say `input_handles[i]: ...`.
      constexpr std::string_view kCheck = "input_handles[";
      if (size_t at = what.find(kCheck); at != std::string::npos) {
        const size_t index = std::stoul(what.substr(at + kCheck.size()));
        const size_t colon = what.find(": ", at);
        throw SignatureError("input '" + (index < tensors_.input_names.size() ? tensors_.input_names[index] : std::to_string(index)) +
                             "': " + with_dtype_names(essential_message(colon == std::string::npos ? what : what.substr(colon + 2))));
      }
      fail_execution(e, what);
    }
  });
}

std::vector<c10::IValue> Package::arguments_from(std::vector<c10::IValue> inputs) const {
  std::vector<at::Tensor> leaves;
  leaves.reserve(inputs.size());
  for (c10::IValue& input : inputs) leaves.push_back(std::move(input).toTensor());
  std::vector<c10::IValue> args;
  size_t next = 0;
  for (const TreeSpec& argument : arguments_) args.push_back(argument.unflatten(leaves, &next));
  return args;
}

std::vector<c10::IValue> Package::outputs_of(const c10::IValue& result) const {
  std::vector<at::Tensor> outputs;
  result_.flatten(result, "the result", outputs);
  return {outputs.begin(), outputs.end()};
}

}  // namespace torch_serving
