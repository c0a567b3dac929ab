// Writing Open Inference Protocol answers.
#include "v2_response.h"

#include <ATen/ATen.h>

#include <unordered_map>

#include "errors.h"
#include "json_path.h"
#include "json_tensor.h"

namespace torch_serving::v2 {
namespace {

using namespace json;

// An output as the protocol sends it.
struct OutputTensor {
  const Datatype* datatype;
  std::vector<int64_t> shape;
  at::Tensor tensor;                 // contiguous on the CPU; unset for BYTES
  std::vector<std::string> strings;  // for BYTES
};

[[noreturn]] void fail_output(const std::string& name, const std::string& why) {
  throw EncodeError("output " + single_quoted(name) + " " + why);
}

OutputTensor primitive_output(const c10::IValue& v) {
  if (v.isString()) return {&bytes_datatype(), {1}, {}, {v.toStringRef()}};
  at::ScalarType dtype = v.isInt() ? at::kLong : v.isDouble() ? at::kDouble : at::kBool;
  return {datatype_of(dtype), {1}, at::full({1}, v.toScalar(), at::TensorOptions().dtype(dtype)), {}};
}

bool is_primitive(const c10::IValue& v) { return v.isString() || v.isInt() || v.isDouble() || v.isBool(); }

bool is_primitive_list(const c10::IValue& v) {
  return v.isList() && primitive_of(v.toList().elementType()) != Primitive::kNone;
}

OutputTensor to_output(const std::string& name, const c10::IValue& v) {
  if (v.isTensor()) {
    at::Tensor t = v.toTensor();
    const Datatype* datatype = datatype_of(t.scalar_type());
    if (!datatype) fail_output(name, "has dtype " + std::string(c10::toString(t.scalar_type())) + ", which V2 cannot express");
    if (t.layout() != at::kStrided) t = t.to_dense();
    t = t.to(at::kCPU).resolve_conj().resolve_neg().contiguous();
    return {datatype, t.sizes().vec(), t, {}};
  }
  if (is_primitive(v)) return primitive_output(v);
  if (is_primitive_list(v)) {
    auto list = v.toList();
    c10::TypePtr elem = list.elementType();
    const int64_t n = int64_t(list.size());
    if (elem->kind() == c10::TypeKind::StringType) {
      OutputTensor out{&bytes_datatype(), {n}, {}, {}};
      for (size_t i = 0; i < list.size(); ++i) out.strings.push_back(list.get(i).toStringRef());
      return out;
    }
    at::ScalarType dtype = elem->kind() == c10::TypeKind::IntType     ? at::kLong
                           : elem->kind() == c10::TypeKind::FloatType ? at::kDouble
                                                                      : at::kBool;
    at::Tensor t = at::empty({n}, at::TensorOptions().dtype(dtype));
    for (int64_t i = 0; i < n; ++i) {
      const c10::IValue item = list.get(size_t(i));
      if (dtype == at::kLong) t.data_ptr<int64_t>()[i] = item.toInt();
      else if (dtype == at::kDouble) t.data_ptr<double>()[i] = item.toDouble();
      else t.data_ptr<bool>()[i] = item.toBool();
    }
    return {datatype_of(dtype), {n}, t, {}};
  }
  fail_output(name, "is a " + v.type()->repr_str() + ", which V2 cannot express as a tensor");
}

// Appends `,"shape":[...]` style dimensions as a JSON array.
void write_shape(const std::vector<int64_t>& shape, std::string& out) {
  out += '[';
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ',';
    write_number(shape[i], out);
  }
  out += ']';
}

// Appends one output's JSON entry; binary data goes to `binary`.
void write_output(const std::string& name, const OutputTensor& output, bool binary_form, std::string& out,
                  std::string& binary) {
  const std::string label = "output " + single_quoted(name);
  const JsonPath at{nullptr, label, -1};
  out += R"({"name":)";
  write_string(name, out, at.member("name"));
  out += R"(,"datatype":")";
  out += output.datatype->name;
  out += R"(","shape":)";
  write_shape(output.shape, out);
  if (binary_form) {
    const size_t start = binary.size();
    if (output.datatype->is_bytes()) {
      for (const std::string& s : output.strings) {
        uint32_t length = uint32_t(s.size());
        binary.append(reinterpret_cast<const char*>(&length), 4);
        binary += s;
      }
    } else {
      binary.append(static_cast<const char*>(output.tensor.const_data_ptr()), output.tensor.nbytes());
    }
    out += R"(,"parameters":{"binary_data_size":)";
    write_number(int64_t(binary.size() - start), out);
    out += "}}";
    return;
  }
  out += R"(,"data":[)";
  if (output.datatype->is_bytes()) {
    for (size_t i = 0; i < output.strings.size(); ++i) {
      if (i) out += ',';
      write_string(output.strings[i], out, at.member("data").element(int64_t(i)));
    }
  } else {
    write_values(output.tensor, out);
  }
  out += "]}";
}

// Appends `[{"name":..,"<type_key>":"<prefix><datatype>","<shape_key>":[..]},..]`.
void write_descriptions(const std::vector<TensorDescription>& tensors, std::string_view type_key,
                        std::string_view type_prefix, std::string_view shape_key, std::string& out) {
  out += '[';
  for (size_t k = 0; k < tensors.size(); ++k) {
    if (k) out += ',';
    out += R"({"name":)";
    write_string(tensors[k].name, out, JsonPath{nullptr, "metadata", -1});
    out += ",\"";
    out += type_key;
    out += "\":\"";
    out += type_prefix;
    // Triton's model configuration names BYTES `TYPE_STRING` (its DataType enum has no TYPE_BYTES).
    out += !type_prefix.empty() && tensors[k].datatype == "BYTES" ? std::string_view("STRING") : tensors[k].datatype;
    out += "\",\"";
    out += shape_key;
    out += "\":";
    write_shape(tensors[k].shape, out);
    out += '}';
  }
  out += ']';
}

}  // namespace

size_t encode_response(const std::string& model_name, const Request& request, const NamedOutputs& named,
                       std::string& out) {
  std::vector<std::pair<const std::pair<std::string, c10::IValue>*, bool>> chosen;  // output, binary form
  if (request.outputs.empty()) {
    for (const auto& entry : named) chosen.emplace_back(&entry, request.binary_outputs);
  } else {
    std::unordered_map<std::string_view, const std::pair<std::string, c10::IValue>*> by_name;
    for (const auto& entry : named) by_name.emplace(entry.first, &entry);
    for (const RequestedOutput& wanted : request.outputs) {
      auto it = by_name.find(wanted.name);
      const std::pair<std::string, c10::IValue>* found = it == by_name.end() ? nullptr : it->second;
      if (!found) {
        std::string names;
        for (const auto& entry : named) names += (names.empty() ? "" : ", ") + entry.first;
        throw UnknownOutputError("requested output " + single_quoted(wanted.name) +
                                 " is not among the model's outputs: " + names);
      }
      chosen.emplace_back(found, wanted.binary.value_or(request.binary_outputs));
    }
  }
  const JsonPath root{nullptr, "response", -1};
  out.assign(R"({"model_name":)");
  write_string(model_name, out, root.member("model_name"));
  out += R"(,"model_version":"1")";
  if (request.id) {
    out += R"(,"id":)";
    write_string(*request.id, out, root.member("id"));
  }
  out += R"(,"outputs":[)";
  std::string binary;
  for (size_t i = 0; i < chosen.size(); ++i) {
    if (i) out += ',';
    const auto& [entry, binary_form] = chosen[i];
    write_output(entry->first, to_output(entry->first, entry->second), binary_form, out, binary);
  }
  out += "]}";
  const size_t json_length = out.size();
  out += binary;
  return json_length;
}

void encode_metadata(const std::string& model_name, const ModelDescription& model, std::string& out) {
  out.assign(R"({"name":)");
  write_string(model_name, out, JsonPath{nullptr, "metadata", -1});
  out += R"(,"versions":["1"],"platform":")";
  out += model.platform;
  out += R"(","inputs":)";
  write_descriptions(model.inputs, "datatype", "", "shape", out);
  out += R"(,"outputs":)";
  write_descriptions(model.outputs, "datatype", "", "shape", out);
  out += '}';
}

void encode_config(const std::string& model_name, const ModelDescription& model, int64_t max_batch_size,
                   size_t instance_count, bool on_gpu, std::string& out) {
  out.assign(R"({"name":)");
  write_string(model_name, out, JsonPath{nullptr, "config", -1});
  out += R"(,"platform":")";
  out += model.config_platform;
  out += R"(","backend":"pytorch","max_batch_size":)";
  write_number(max_batch_size, out);
  out += R"(,"input":)";
  write_descriptions(model.inputs, "data_type", "TYPE_", "dims", out);
  out += R"(,"output":)";
  write_descriptions(model.outputs, "data_type", "TYPE_", "dims", out);
  out += R"(,"instance_group":[{"count":)";
  write_number(int64_t(instance_count), out);
  out += on_gpu ? R"(,"kind":"KIND_GPU"}]})" : R"(,"kind":"KIND_CPU"}]})";
}

}  // namespace torch_serving::v2
