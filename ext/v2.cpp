// The Open Inference Protocol codec, the binding of its named inputs to
// forward's arguments, and model metadata.
#include "v2.h"

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <c10/util/accumulate.h>

#include <array>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "errors.h"
#include "json_path.h"
#include "json_tensor.h"
#include "script_module.h"

namespace torch_serving::v2 {
namespace {

using namespace json;
using simdjson::dom::element_type;

constexpr std::array<Datatype, 11> kDatatypes{{
    {"BOOL", at::kBool, 1},
    {"UINT8", at::kByte, 1},
    {"INT8", at::kChar, 1},
    {"INT16", at::kShort, 2},
    {"INT32", at::kInt, 4},
    {"INT64", at::kLong, 8},
    {"FP16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2},
    {"FP32", at::kFloat, 4},
    {"FP64", at::kDouble, 8},
    {"BYTES", at::ScalarType::Undefined, 0},
}};

constexpr std::string_view kDatatypeList = "BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES";

const Datatype& bytes_datatype() { return kDatatypes.back(); }

constexpr char kNoClassification[] = "the classification extension is not supported";

std::string single_quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

// ---------------------------------------------------------------------------
// Requests.

// The binary data after the JSON header, consumed input by input.
struct BinaryCursor {
  std::string_view data;
  size_t offset = 0;

  size_t remaining() const { return data.size() - offset; }
};

uint32_t read_le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // the protocol is little-endian, as are the hosts torch runs on
}

std::vector<std::string> split_bytes(std::string_view data, int64_t numel, const std::string& input) {
  std::vector<std::string> strings;
  strings.reserve(size_t(std::min<int64_t>(numel, int64_t(data.size() / 4))));
  size_t pos = 0;
  while (pos < data.size()) {
    if (data.size() - pos < 4) {
      throw DecodeError("BYTES data of input " + input + " ends inside the length prefix of element " +
                        std::to_string(strings.size()));
    }
    uint32_t length = read_le32(data.data() + pos);
    pos += 4;
    if (length > data.size() - pos) {
      throw DecodeError("BYTES data of input " + input + ": element " + std::to_string(strings.size()) +
                        " declares " + std::to_string(length) + " bytes, but only " +
                        std::to_string(data.size() - pos) + " remain");
    }
    strings.emplace_back(data.substr(pos, length));
    pos += length;
  }
  if (int64_t(strings.size()) != numel) {
    throw DecodeError("BYTES data of input " + input + " holds " + std::to_string(strings.size()) +
                      " element(s), but its shape needs " + std::to_string(numel));
  }
  return strings;
}

// Makes the tensor of a binary input: a view of the body when its address
// suits the element type, a copy otherwise.
at::Tensor binary_tensor(std::string_view data, const Datatype& type, const std::vector<int64_t>& shape,
                         const BodyOwner& owner) {
  auto options = at::TensorOptions().dtype(type.dtype);
  void* address = const_cast<char*>(data.data());
  if (reinterpret_cast<uintptr_t>(address) % type.itemsize == 0) {
    return at::from_blob(address, shape, [owner](void*) {}, options);
  }
  at::Tensor tensor = at::empty(shape, options);
  std::memcpy(tensor.data_ptr(), data.data(), data.size());
  return tensor;
}

std::string decimal(unsigned __int128 v) {
  std::string digits;
  do {
    digits.insert(digits.begin(), char('0' + int(v % 10)));
    v /= 10;
  } while (v);
  return digits;
}

void read_binary_input(Input& input, int64_t size, int64_t numel, BinaryCursor& binary, const BodyOwner& owner) {
  const std::string name = single_quoted(input.name);
  if (uint64_t(size) > binary.remaining()) {
    throw DecodeError("binary_data_size of input " + name + " is " + std::to_string(size) + " bytes, but only " +
                      std::to_string(binary.remaining()) + " bytes of binary data remain in the body");
  }
  std::string_view data = binary.data.substr(binary.offset, size_t(size));
  binary.offset += size_t(size);
  if (input.datatype->is_bytes()) {
    input.strings = split_bytes(data, numel, name);
    return;
  }
  // numel * itemsize cannot overflow: numel is at most INT64_MAX and is
  // compared in unsigned 128-bit arithmetic.
  const unsigned __int128 needed = (unsigned __int128)numel * input.datatype->itemsize;
  if (needed != (unsigned __int128)size) {
    throw DecodeError("binary_data_size of input " + name + " is " + std::to_string(size) + " bytes, but shape " +
                      shape_text(input.shape) + " of " + std::string(input.datatype->name) + " needs " +
                      decimal(needed) + " bytes");
  }
  if (input.datatype->dtype == at::kBool) {
    // A torch bool must hold 0 or 1; any other byte is undefined behaviour.
    const size_t bad = data.find_first_not_of(std::string_view("\0\1", 2));
    if (bad != std::string_view::npos) {
      throw DecodeError("BOOL data of input " + name + " holds byte " +
                        std::to_string(static_cast<unsigned char>(data[bad])) + " at offset " + std::to_string(bad) +
                        " of its binary data; each BOOL element must be the byte 0 or 1");
    }
  }
  input.tensor = binary_tensor(data, *input.datatype, input.shape, owner);
}

// Appends the strings of nested arrays of strings in row-major order.
void collect_strings(element e, std::vector<std::string>& out, const JsonPath& at, size_t depth) {
  if (e.is_string()) {
    out.emplace_back(std::string_view(e.get_string()));
    return;
  }
  if (!e.is_array() || depth > kMaxRank) fail(at, "expected a string or an array of strings, found " + describe(e));
  int64_t i = 0;
  for (element child : e.get_array()) collect_strings(child, out, at.element(i++), depth + 1);
}

void read_json_input(Input& input, element data, int64_t numel, const JsonPath& at) {
  expect_array(data, at);
  int64_t found;
  if (input.datatype->is_bytes()) {
    collect_strings(data, input.strings, at, 0);
    found = int64_t(input.strings.size());
  } else {
    input.tensor = decode_nested(data, input.datatype->dtype, at);
    found = input.tensor.numel();
  }
  if (found != numel) {
    throw DecodeError("input " + single_quoted(input.name) + " has " + std::to_string(found) + " value(s), but shape " +
                      shape_text(input.shape) + " needs " + std::to_string(numel));
  }
  if (!input.datatype->is_bytes()) input.tensor = input.tensor.reshape(input.shape);
}

bool read_bool(element e, const JsonPath& at) {
  bool v;
  if (e.get_bool().get(v) != simdjson::SUCCESS) fail(at, "expected true or false, found " + describe(e));
  return v;
}

std::optional<int64_t> binary_data_size(element parameters, const JsonPath& at) {
  std::optional<int64_t> size;
  for (auto member : expect_object(parameters, at)) {
    if (member.key != "binary_data_size") continue;  // other parameters are hints this server ignores
    int64_t v;
    if (member.value.type() != element_type::INT64 || member.value.get_int64().get(v) != simdjson::SUCCESS ||
        v < 0) {
      fail(at.member(member.key), "expected a non-negative integer, found " + describe(member.value));
    }
    size = v;
  }
  return size;
}

Input read_input(element e, const JsonPath& at, BinaryCursor& binary, const BodyOwner& owner) {
  std::optional<element> name, shape, datatype, parameters, data;
  read_members(e, at,
               {{"name", &name}, {"shape", &shape}, {"datatype", &datatype}, {"parameters", &parameters}, {"data", &data}});
  for (auto [key, field] : {std::pair{"name", &name}, {"shape", &shape}, {"datatype", &datatype}}) {
    if (!*field) fail(at, std::string("missing key \"") + key + "\"");
  }
  Input input;
  input.name = std::string(expect_string(*name, at.member("name")));
  std::string_view type_name = expect_string(*datatype, at.member("datatype"));
  for (const auto& d : kDatatypes) {
    if (d.name == type_name) input.datatype = &d;
  }
  if (!input.datatype) {
    fail(at.member("datatype"),
         "unknown datatype " + quote_text(type_name) + " (expected one of " + std::string(kDatatypeList) + ")");
  }
  int64_t numel;
  input.shape = parse_shape(*shape, at.member("shape"), &numel);
  std::optional<int64_t> size;
  if (parameters) size = binary_data_size(*parameters, at.member("parameters"));
  if (size && data) fail(at, "input " + single_quoted(input.name) + " has both \"data\" and parameters.binary_data_size");
  if (size) {
    read_binary_input(input, *size, numel, binary, owner);
  } else if (data) {
    read_json_input(input, *data, numel, at.member("data"));
  } else {
    fail(at, "input " + single_quoted(input.name) + " has neither \"data\" nor parameters.binary_data_size");
  }
  return input;
}

RequestedOutput read_requested_output(element e, const JsonPath& at) {
  std::optional<element> name, parameters;
  read_members(e, at, {{"name", &name}, {"parameters", &parameters}});
  if (!name) fail(at, "missing key \"name\"");
  RequestedOutput output{std::string(expect_string(*name, at.member("name"))), std::nullopt};
  if (!parameters) return output;
  JsonPath parameters_at = at.member("parameters");
  for (auto member : expect_object(*parameters, parameters_at)) {
    if (member.key == "binary_data") {
      output.binary = read_bool(member.value, parameters_at.member(member.key));
    } else if (member.key == "classification") {
      fail(parameters_at.member(member.key), kNoClassification);
    }
  }
  return output;
}

// Fails at `at`.name when `name` is among `seen`, else adds it: a hash set,
// so that a body of many names costs time linear in them.
void fail_if_name_repeats(std::unordered_set<std::string>& seen, const std::string& name, const JsonPath& at,
                          const char* what) {
  if (!seen.insert(name).second) fail(at.member("name"), std::string("duplicate ") + what + " name " + quote_text(name));
}

// ---------------------------------------------------------------------------
// Binding inputs to forward's arguments.

bool is_dict_of_tensors(const c10::TypePtr& type) {
  auto dict = strip_optional(type)->cast<c10::DictType>();
  return dict && dict->getKeyType()->kind() == c10::TypeKind::StringType &&
         dict->getValueType()->kind() == c10::TypeKind::TensorType;
}

bool is_integral(const Datatype& d) { return !d.is_bytes() && at::isIntegralType(d.dtype, /*includeBool=*/false); }
bool is_numeric(const Datatype& d) { return !d.is_bytes() && d.dtype != at::kBool; }

[[noreturn]] void fail_conversion(const Input& input, const c10::Argument& param, const std::string& why) {
  throw SignatureError("input " + single_quoted(input.name) + " (" + std::string(input.datatype->name) + ", shape " +
                       shape_text(input.shape) + ") cannot be argument " + single_quoted(param.name()) +
                       " of forward, which expects " + param.type()->repr_str() + ": " + why);
}

// The element kinds a primitive argument or list element accepts.
enum class Primitive { kInt, kFloat, kBool, kString, kNone };

Primitive primitive_of(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::IntType: return Primitive::kInt;
    case c10::TypeKind::FloatType: return Primitive::kFloat;
    case c10::TypeKind::BoolType: return Primitive::kBool;
    case c10::TypeKind::StringType: return Primitive::kString;
    default: return Primitive::kNone;
  }
}

// The datatype the protocol uses for values of `kind`.
std::string_view datatype_name(Primitive kind) {
  switch (kind) {
    case Primitive::kInt: return "INT64";
    case Primitive::kFloat: return "FP64";
    case Primitive::kBool: return "BOOL";
    default: return "BYTES";
  }
}

void check_primitive(const Input& input, const c10::Argument& param, Primitive kind) {
  const Datatype& d = *input.datatype;
  bool fits = (kind == Primitive::kInt && is_integral(d)) || (kind == Primitive::kFloat && is_numeric(d)) ||
              (kind == Primitive::kBool && d.dtype == at::kBool && !d.is_bytes()) ||
              (kind == Primitive::kString && d.is_bytes());
  if (!fits) {
    std::string wanted = kind == Primitive::kInt     ? "an integer datatype"
                         : kind == Primitive::kFloat ? "a numeric datatype"
                                                     : std::string(datatype_name(kind));
    fail_conversion(input, param, "give it as " + wanted);
  }
}

// Element `i` of an input as a `kind`, from `flat` (the input's tensor as one
// dimension) or, for BYTES, from its strings.
c10::IValue primitive_at(const Input& input, const at::Tensor& flat, int64_t i, Primitive kind) {
  switch (kind) {
    case Primitive::kInt: return flat[i].item<int64_t>();
    case Primitive::kFloat: return flat[i].item<double>();
    case Primitive::kBool: return flat[i].item<bool>();
    default: return input.strings[size_t(i)];
  }
}

at::Tensor flat_of(const Input& input) {
  return input.datatype->is_bytes() ? at::Tensor() : input.tensor.reshape({-1});
}

c10::IValue to_argument(Input& input, const c10::Argument& param) {
  c10::TypePtr type = strip_optional(param.type());
  const int64_t numel = c10::multiply_integers(input.shape);
  if (Primitive kind = primitive_of(type); kind != Primitive::kNone) {
    check_primitive(input, param, kind);
    if (numel != 1) fail_conversion(input, param, "it must hold exactly one element");
    return primitive_at(input, flat_of(input), 0, kind);
  }
  if (auto list = type->cast<c10::ListType>()) {
    if (Primitive kind = primitive_of(list->getElementType()); kind != Primitive::kNone) {
      check_primitive(input, param, kind);
      at::Tensor flat = flat_of(input);
      c10::impl::GenericList items(list->getElementType());
      items.reserve(size_t(numel));
      for (int64_t i = 0; i < numel; ++i) items.push_back(primitive_at(input, flat, i, kind));
      return items;
    }
  }
  if (input.datatype->is_bytes()) {
    if (type->kind() == c10::TypeKind::TensorType) fail_conversion(input, param, "BYTES cannot be a Tensor");
    c10::impl::GenericList items(c10::StringType::get());
    for (auto& s : input.strings) items.push_back(std::move(s));
    return items;
  }
  // A Tensor argument, or one V2 cannot express, which forward's type check
  // reports by name.
  return input.tensor;
}


std::string argument_names(const std::vector<c10::Argument>& params) {
  std::string names;
  for (size_t i = 1; i < params.size(); ++i) names += (i > 1 ? ", " : "") + params[i].name();
  return names;
}

// ---------------------------------------------------------------------------
// Responses.

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

// Describes a value of `type` named `name`; nothing for a type V2 cannot express.
std::optional<TensorDescription> describe_value(const std::string& name, const c10::TypePtr& type) {
  c10::TypePtr t = strip_optional(type);
  // The schema records no dtype for tensors; FP32 is torch's default one.
  if (t->kind() == c10::TypeKind::TensorType) return TensorDescription{name, "FP32", {-1}};
  if (Primitive kind = primitive_of(t); kind != Primitive::kNone) {
    return TensorDescription{name, datatype_name(kind), {1}};
  }
  if (auto list = t->cast<c10::ListType>(); list && primitive_of(list->getElementType()) != Primitive::kNone) {
    return TensorDescription{name, datatype_name(primitive_of(list->getElementType())), {-1}};
  }
  return std::nullopt;
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

std::optional<size_t> position_in(std::string_view name) {
  size_t mark = name.rfind("__");
  if (mark == std::string_view::npos || mark + 2 == name.size()) return std::nullopt;
  size_t position = 0;
  for (char c : name.substr(mark + 2)) {
    if (c < '0' || c > '9' || position > 1'000'000) return std::nullopt;
    position = position * 10 + size_t(c - '0');
  }
  return position;
}

const Datatype* datatype_of(at::ScalarType dtype) {
  for (const auto& d : kDatatypes) {
    if (d.dtype == dtype && !d.is_bytes()) return &d;
  }
  return nullptr;
}

NamedOutputs named_outputs(const c10::IValue& result) {
  NamedOutputs named;
  auto positional = [&](const auto& items) {
    for (const c10::IValue& item : items) named.emplace_back("OUTPUT__" + std::to_string(named.size()), item);
  };
  if (result.isGenericDict()) {
    for (const auto& entry : result.toGenericDict()) {
      const c10::IValue& key = entry.key();
      if (key.isString()) named.emplace_back(key.toStringRef(), entry.value());
      else if (key.isInt()) named.emplace_back(std::to_string(key.toInt()), entry.value());
      else throw EncodeError("the result is a dict with keys of type " + key.type()->repr_str() + ", which V2 cannot name outputs by");
    }
  } else if (result.isTuple()) {
    positional(result.toTupleRef().elements());
  } else if (result.isList() && result.toList().elementType()->kind() == c10::TypeKind::TensorType) {
    positional(result.toListRef());
  } else {
    named.emplace_back("OUTPUT__0", result);
  }
  return named;
}

ModelDescription describe_forward(const c10::FunctionSchema& schema) {
  ModelDescription model{"pytorch_torchscript", "pytorch_libtorch", {}, {}};
  const auto& params = schema.arguments();
  // A forward taking one Dict[str, Tensor] accepts inputs of any name.
  if (!(params.size() == 2 && is_dict_of_tensors(params[1].type()))) {
    for (size_t k = 1; k < params.size(); ++k) {
      if (auto input = describe_value(params[k].name(), params[k].type())) model.inputs.push_back(std::move(*input));
    }
  }
  const c10::TypePtr returned = schema.returns().size() == 1 ? schema.returns()[0].type() : c10::NoneType::get();
  auto tuple = returned->cast<c10::TupleType>();
  const std::vector<c10::TypePtr> parts = tuple ? tuple->elements().vec() : std::vector<c10::TypePtr>{returned};
  // Listed only when every output can be: dict keys and the length of a list
  // of tensors are known only at run time, and a partial list would hide the
  // outputs that V2 cannot express.
  for (size_t k = 0; k < parts.size(); ++k) {
    auto output = describe_value("OUTPUT__" + std::to_string(k), parts[k]);
    if (!output) {
      model.outputs.clear();
      break;
    }
    model.outputs.push_back(std::move(*output));
  }
  return model;
}

Request decode_request(std::string_view body, int64_t header_length, const BodyOwner& owner, size_t readable) {
  std::string_view json_part = body;
  BinaryCursor binary;
  if (header_length >= 0) {
    if (uint64_t(header_length) > body.size()) {
      throw DecodeError("Inference-Header-Content-Length is " + std::to_string(header_length) +
                        ", past the end of the " + std::to_string(body.size()) + "-byte body");
    }
    json_part = body.substr(0, size_t(header_length));
    binary.data = body.substr(size_t(header_length));
  }
  if (json_part.find_first_not_of(" \t\r\n") == std::string_view::npos) throw DecodeError("request JSON is empty");
  // The binary part and the padding follow the JSON, so `readable` counts from it too.
  ParsedDocument parsed;
  auto error = parsed.parse(json_part, readable);
  element doc = parsed.root();
  if (error == simdjson::UTF8_ERROR) throw DecodeError("request JSON is not valid UTF-8");
  if (error) throw DecodeError(std::string("request JSON is not valid: ") + simdjson::error_message(error));

  const JsonPath root{nullptr, "body", -1};
  std::optional<element> id, model_name, model_version, parameters, inputs, outputs;
  read_members(doc, root,
               {{"id", &id},
                {"model_name", &model_name},
                {"model_version", &model_version},
                {"parameters", &parameters},
                {"inputs", &inputs},
                {"outputs", &outputs}});
  Request request;
  if (id) request.id = std::string(expect_string(*id, root.member("id")));
  if (model_name) request.model_name = std::string(expect_string(*model_name, root.member("model_name")));
  if (model_version) request.model_version = std::string(expect_string(*model_version, root.member("model_version")));
  if (parameters) {
    JsonPath at = root.member("parameters");
    for (auto member : expect_object(*parameters, at)) {
      // Other parameters (priority, timeout, sequences) are hints this server ignores.
      if (member.key == "binary_data_output") request.binary_outputs = read_bool(member.value, at.member(member.key));
      if (member.key == "classification") fail(at.member(member.key), kNoClassification);
    }
  }
  if (!inputs) fail(root, "missing key \"inputs\"");
  JsonPath inputs_at = root.member("inputs");
  int64_t i = 0;
  std::unordered_set<std::string> names;
  for (element e : expect_array(*inputs, inputs_at)) {
    JsonPath at = inputs_at.element(i++);
    request.inputs.push_back(read_input(e, at, binary, owner));
    fail_if_name_repeats(names, request.inputs.back().name, at, "input");
  }
  if (binary.remaining() != 0) {
    throw DecodeError("the body has " + std::to_string(binary.remaining()) +
                      " byte(s) of binary data after the inputs' binary_data_size bytes");
  }
  if (outputs) {
    JsonPath outputs_at = root.member("outputs");
    int64_t k = 0;
    names.clear();
    for (element e : expect_array(*outputs, outputs_at)) {
      JsonPath at = outputs_at.element(k++);
      request.outputs.push_back(read_requested_output(e, at));
      fail_if_name_repeats(names, request.outputs.back().name, at, "output");
    }
  }
  return request;
}

void check_model(const Request& request, const std::string& name) {
  if (request.model_name && *request.model_name != name) {
    throw DecodeError("the body's model_name " + quote_text(*request.model_name) + " is not the model of the URL, " +
                      quote_text(name));
  }
  if (request.model_version && *request.model_version != "1") {
    throw DecodeError("the body's model_version " + quote_text(*request.model_version) + " is not the model's version, \"1\"");
  }
}

std::vector<c10::IValue> bind_inputs(Request& request, const c10::FunctionSchema& schema) {
  const auto& params = schema.arguments();  // params[0] is `self`
  const size_t count = params.size() - 1;
  // As Triton does, a forward taking one Dict[str, Tensor] gets every input
  // as an entry named after it.
  if (count == 1 && is_dict_of_tensors(params[1].type())) {
    c10::Dict<std::string, at::Tensor> dict;
    for (Input& input : request.inputs) {
      if (input.datatype->is_bytes()) fail_conversion(input, params[1], "BYTES cannot be a Tensor");
      dict.insert(input.name, input.tensor);
    }
    return {dict};
  }
  std::vector<std::optional<c10::IValue>> slots(count);
  std::vector<const Input*> given_by(count, nullptr);
  for (Input& input : request.inputs) {
    std::optional<size_t> position;
    for (size_t k = 1; k < params.size(); ++k) {
      if (params[k].name() == input.name) position = k - 1;
    }
    if (!position) position = position_in(input.name);
    if (!position) {
      throw SignatureError("input " + single_quoted(input.name) + " matches no argument of forward; its arguments are " +
                           argument_names(params) + " (or INPUT__0 to INPUT__" + std::to_string(count - 1) +
                           " by position); signature: " + signature_text(schema));
    }
    if (*position >= count) {
      throw SignatureError("input " + single_quoted(input.name) + " names position " + std::to_string(*position) +
                           ", but forward takes " + std::to_string(count) + " argument(s); signature: " +
                           signature_text(schema));
    }
    const c10::Argument& param = params[*position + 1];
    if (given_by[*position]) {
      throw SignatureError("inputs " + single_quoted(given_by[*position]->name) + " and " + single_quoted(input.name) +
                           " both give argument " + single_quoted(param.name()) + " of forward");
    }
    given_by[*position] = &input;
    slots[*position] = to_argument(input, param);
  }
  std::vector<c10::IValue> args;
  args.reserve(count);
  for (size_t k = 0; k < count; ++k) {
    const c10::Argument& param = params[k + 1];
    if (slots[k]) {
      args.push_back(std::move(*slots[k]));
    } else if (param.default_value()) {
      args.push_back(*param.default_value());
    } else {
      throw SignatureError("missing input for argument " + single_quoted(param.name()) + " (position " +
                           std::to_string(k) + ") of forward, which expects " + param.type()->repr_str() +
                           "; signature: " + signature_text(schema));
    }
  }
  return args;
}

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
