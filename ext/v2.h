// The Open Inference Protocol (KServe V2) with Triton's binary tensor data
// extension: its types and datatypes (v2_datatypes.cpp), shared by its
// request decoder (v2_request.h), the binding of inputs to a model's
// arguments and of results to outputs (v2_binding.h), and its responses,
// metadata and configuration (v2_response.h). The rules are those of
// docs/v2.md.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/function_schema.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "schema.h"

namespace torch_serving::v2 {

// An element type of the protocol: its name, the dtype it becomes (Undefined
// for BYTES) and its size in binary data (0 for BYTES).
struct Datatype {
  std::string_view name;
  at::ScalarType dtype;
  size_t itemsize;

  bool is_bytes() const { return itemsize == 0; }
};

// One input tensor of a request.
struct Input {
  std::string name;
  const Datatype* datatype = nullptr;
  std::vector<int64_t> shape;
  at::Tensor tensor;                 // for every datatype but BYTES
  std::vector<std::string> strings;  // for BYTES, row-major
};

// One output the client asked for, and in which form.
struct RequestedOutput {
  std::string name;
  std::optional<bool> binary;  // unset: the request's default
};

struct Request {
  std::optional<std::string> id;
  // KServe's clients repeat the URL's model name and version in the body.
  std::optional<std::string> model_name;
  std::optional<std::string> model_version;
  std::vector<Input> inputs;
  std::vector<RequestedOutput> outputs;  // empty: every output
  bool binary_outputs = false;           // the request's `binary_data_output`
};

// How metadata and configuration describe one input or output.
struct TensorDescription {
  std::string name;
  std::string_view datatype;  // a name of the protocol's datatypes
  std::vector<int64_t> shape;  // -1 for a size known only at run time
};

// A model's inputs and outputs, as far as V2 can express them.
struct ModelDescription {
  std::string_view platform;         // as model metadata names it
  std::string_view config_platform;  // as Triton's model configuration names it
  std::vector<TensorDescription> inputs;
  std::vector<TensorDescription> outputs;
};

// A result's parts as V2 outputs, with their names.
using NamedOutputs = std::vector<std::pair<std::string, c10::IValue>>;

// Returns the datatype `dtype` is sent as, or null for one V2 cannot express.
const Datatype* datatype_of(at::ScalarType dtype);

// Returns the datatype named `name`, or null.
const Datatype* find_datatype(std::string_view name);

// BYTES, the datatype of strings.
const Datatype& bytes_datatype();

// Every datatype's name, comma-separated, for error messages.
std::string datatype_names();

// The datatype the protocol uses for values of `kind`.
std::string_view datatype_name(Primitive kind);

inline std::string single_quoted(std::string_view name) { return "'" + std::string(name) + "'"; }

}  // namespace torch_serving::v2
