// Decoding Open Inference Protocol inference requests.
#include "v2_request.h"

#include <ATen/ATen.h>

#include <cstring>
#include <unordered_set>

#include "errors.h"
#include "json_path.h"
#include "json_tensor.h"

namespace torch_serving::v2 {
namespace {

using namespace json;
using simdjson::dom::element_type;

constexpr char kNoClassification[] = "the classification extension is not supported";

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
  input.datatype = find_datatype(type_name);
  if (!input.datatype) {
    fail(at.member("datatype"), "unknown datatype " + quote_text(type_name) + " (expected one of " + datatype_names() + ")");
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

}  // namespace

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

}  // namespace torch_serving::v2
