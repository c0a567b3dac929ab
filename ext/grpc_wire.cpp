#include "grpc_wire.h"

#include <simdjson.h>

#include <cstring>
#include <vector>

#include "json_path.h"
#include "json_tensor.h"

namespace torch_serving::grpc_wire {
namespace {

// Protobuf's wire types.
constexpr uint32_t kVarint = 0;
constexpr uint32_t kFixed64 = 1;
constexpr uint32_t kLengthDelimited = 2;
constexpr uint32_t kFixed32 = 5;

// Reads one message's fields in order; every read says whether it found a
// well-formed field.
class Reader {
 public:
  explicit Reader(std::string_view message) : at_(message.data()), end_(message.data() + message.size()) {}

  bool done() const { return at_ == end_; }

  bool tag(uint32_t& field, uint32_t& type) {
    uint64_t tag;
    if (!varint(tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX) return false;
    field = uint32_t(tag >> 3);
    type = uint32_t(tag & 7);
    return true;
  }

  bool varint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64 && at_ < end_; shift += 7) {
      const auto byte = uint8_t(*at_++);
      value |= uint64_t(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return true;
    }
    return false;
  }

  bool bytes(std::string_view& out) {
    uint64_t length;
    if (!varint(length) || length > uint64_t(end_ - at_)) return false;
    out = {at_, size_t(length)};
    at_ += length;
    return true;
  }

  // A string field: protobuf refuses one that is not UTF-8.
  bool string(std::string_view& out) { return bytes(out) && simdjson::validate_utf8(out.data(), out.size()); }

  // Passes over a field of wire type `type` that is not read.
  bool skip(uint32_t type) {
    std::string_view ignored;
    uint64_t value;
    switch (type) {
      case kVarint:
        return varint(value);
      case kFixed64:
        return advance(8);
      case kLengthDelimited:
        return bytes(ignored);
      case kFixed32:
        return advance(4);
      default:  // groups, long deprecated, are not in this protocol
        return false;
    }
  }

 private:
  bool advance(size_t n) {
    if (size_t(end_ - at_) < n) return false;
    at_ += n;
    return true;
  }

  const char* at_;
  const char* end_;
};

struct Input {
  std::string_view name;
  std::string_view datatype;
  std::vector<int64_t> shape;
};

// ModelInferRequest.InferInputTensor without parameters or contents.
bool read_input(std::string_view message, Input& input) {
  Reader reader(message);
  uint32_t field, type;
  while (!reader.done()) {
    if (!reader.tag(field, type)) return false;
    uint64_t value;
    std::string_view packed;
    if (field == 1 && type == kLengthDelimited) {
      if (!reader.string(input.name)) return false;
    } else if (field == 2 && type == kLengthDelimited) {
      if (!reader.string(input.datatype)) return false;
    } else if (field == 3 && type == kVarint) {
      if (!reader.varint(value)) return false;
      input.shape.push_back(int64_t(value));
    } else if (field == 3 && type == kLengthDelimited) {
      if (!reader.bytes(packed)) return false;
      for (Reader dims(packed); !dims.done();) {
        if (!dims.varint(value)) return false;
        input.shape.push_back(int64_t(value));
      }
    } else if (field == 4 || field == 5) {
      return false;  // parameters or typed contents: the Python servicer's
    } else if (!reader.skip(type)) {
      return false;
    }
  }
  return true;
}

// ModelInferRequest.InferRequestedOutputTensor's name, when it has no parameters.
bool read_output(std::string_view message, std::string_view& name) {
  Reader reader(message);
  uint32_t field, type;
  while (!reader.done()) {
    if (!reader.tag(field, type)) return false;
    if (field == 1 && type == kLengthDelimited) {
      if (!reader.string(name)) return false;
    } else if (field == 2 || !reader.skip(type)) {
      return false;
    }
  }
  return true;
}

void put_varint(uint64_t value, std::string& out) {
  while (value >= 0x80) {
    out += char(value | 0x80);
    value >>= 7;
  }
  out += char(value);
}

void put_tag(uint32_t field, uint32_t type, std::string& out) { put_varint(uint64_t(field) << 3 | type, out); }

void put_bytes(uint32_t field, std::string_view bytes, std::string& out) {
  put_tag(field, kLengthDelimited, out);
  put_varint(bytes.size(), out);
  out += bytes;
}

std::string_view text(simdjson::dom::element element) { return std::string_view(element.get_string().value()); }

}  // namespace

std::optional<RestInferRequest> rest_infer_request(std::string_view message) {
  RestInferRequest request;
  std::string_view model_version, id;
  std::vector<Input> inputs;
  std::vector<std::string_view> outputs, raw;
  Reader reader(message);
  uint32_t field, type;
  while (!reader.done()) {
    if (!reader.tag(field, type)) return std::nullopt;
    std::string_view value;
    if (type == kLengthDelimited && field >= 1 && field <= 7) {
      const bool read = field <= 3 ? reader.string(value) : reader.bytes(value);
      if (!read) return std::nullopt;
    } else if (!reader.skip(type)) {
      return std::nullopt;
    }
    switch (type == kLengthDelimited ? field : 0) {
      case 1:
        request.model_name = value;
        break;
      case 2:
        model_version = value;
        break;
      case 3:
        id = value;
        break;
      case 4:
        return std::nullopt;  // parameters
      case 5:
        if (!read_input(value, inputs.emplace_back())) return std::nullopt;
        break;
      case 6:
        if (!read_output(value, outputs.emplace_back())) return std::nullopt;
        break;
      case 7:
        raw.push_back(value);
        break;
      default:
        break;
    }
  }
  if (inputs.empty() || raw.size() != inputs.size() || !(model_version.empty() || model_version == "1")) {
    return std::nullopt;
  }
  // The REST request's JSON, as the Python servicer writes it for the forms it reads beside these.
  const JsonPath root;
  std::string json = R"({"inputs":[)";
  size_t data_size = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i) json += ',';
    json += R"({"name":)";
    json::write_string(inputs[i].name, json, root);
    json += R"(,"shape":[)";
    for (size_t d = 0; d < inputs[i].shape.size(); ++d) {
      if (d) json += ',';
      json += std::to_string(inputs[i].shape[d]);
    }
    json += R"(],"datatype":)";
    json::write_string(inputs[i].datatype, json, root);
    json += R"(,"parameters":{"binary_data_size":)";
    json += std::to_string(raw[i].size());
    json += "}}";
    data_size += raw[i].size();
  }
  json += R"(],"parameters":{"binary_data_output":true})";
  if (!id.empty()) {
    json += R"(,"id":)";
    json::write_string(id, json, root);
  }
  if (!outputs.empty()) {
    json += R"(,"outputs":[)";
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (i) json += ',';
      json += R"({"name":)";
      json::write_string(outputs[i], json, root);
      json += R"(,"parameters":{"binary_data":true}})";
    }
    json += ']';
  }
  json += '}';
  request.header_length = int64_t(json.size());
  request.body = std::make_shared<RequestBody>(json.size() + data_size);
  char* at = request.body->data();
  std::memcpy(at, json.data(), json.size());
  at += json.size();
  for (std::string_view chunk : raw) {
    std::memcpy(at, chunk.data(), chunk.size());
    at += chunk.size();
  }
  return request;
}

std::string infer_response_message(std::string_view response, size_t json_length) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element document = parser.parse(response.data(), json_length, /*realloc_if_needed=*/true);
  std::string out;
  put_bytes(1, text(document["model_name"]), out);
  put_bytes(2, text(document["model_version"]), out);
  simdjson::dom::element id;
  if (document["id"].get(id) == simdjson::SUCCESS && !text(id).empty()) put_bytes(3, text(id), out);
  std::string tensor, shape;
  std::vector<std::string_view> data;
  size_t offset = json_length;
  for (simdjson::dom::element output : document["outputs"].get_array()) {
    tensor.clear();
    shape.clear();
    put_bytes(1, text(output["name"]), tensor);
    put_bytes(2, text(output["datatype"]), tensor);
    for (simdjson::dom::element dim : output["shape"].get_array()) put_varint(uint64_t(int64_t(dim)), shape);
    if (!shape.empty()) put_bytes(3, shape, tensor);
    put_bytes(5, tensor, out);
    const auto size = size_t(uint64_t(output["parameters"]["binary_data_size"]));
    data.push_back(response.substr(offset, size));
    offset += size;
  }
  for (std::string_view chunk : data) put_bytes(6, chunk, out);
  return out;
}

}  // namespace torch_serving::grpc_wire
