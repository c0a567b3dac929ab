// The Open Inference Protocol's datatypes: each name, the dtype it becomes
// and its size in binary data.
#include "v2.h"

#include <array>
#include <string>

#include "json_tensor.h"

namespace torch_serving::v2 {
namespace {

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

}  // namespace

const Datatype& bytes_datatype() { return kDatatypes.back(); }

std::string datatype_names() { return json::names_of(kDatatypes); }

const Datatype* find_datatype(std::string_view name) {
  for (const auto& d : kDatatypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

const Datatype* datatype_of(at::ScalarType dtype) {
  for (const auto& d : kDatatypes) {
    if (d.dtype == dtype && !d.is_bytes()) return &d;
  }
  return nullptr;
}

std::string_view datatype_name(Primitive kind) {
  switch (kind) {
    case Primitive::kInt: return "INT64";
    case Primitive::kFloat: return "FP64";
    case Primitive::kBool: return "BOOL";
    default: return "BYTES";
  }
}

}  // namespace torch_serving::v2
