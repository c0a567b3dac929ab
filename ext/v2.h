// The Open Inference Protocol (KServe V2) with Triton's binary tensor data
// extension: inference requests to forward's arguments, results to the
// response, and model metadata from forward's schema. The rules are those of
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

// The position an input named like `INPUT__3` gives, if any.
std::optional<size_t> position_in(std::string_view name);

// Returns the datatype `dtype` is sent as, or null for one V2 cannot express.
const Datatype* datatype_of(at::ScalarType dtype);

// Keeps the request body alive while tensors made on its memory exist.
using BodyOwner = std::shared_ptr<const void>;

// Decodes an inference request. The first `header_length` bytes of `body`
// are its JSON and the rest the inputs' binary data; a negative
// `header_length` means the whole body is JSON. `readable` is how many
// bytes may be read from body.data(): with simdjson's padding past the
// body, the JSON is parsed in place, else copied.
//
// Binary inputs are views of `body` where their alignment allows, holding
// `owner`, and copies otherwise. Throws DecodeError, naming the JSON path or
// the input and what was expected and found.
Request decode_request(std::string_view body, int64_t header_length, const BodyOwner& owner,
                       size_t readable = 0);

// Throws DecodeError when the request's `model_name` or `model_version`,
// if it gives them, differ from the model `name` of the URL and its one
// version "1".
void check_model(const Request& request, const std::string& name);

// Matches the request's inputs to the arguments of `schema` (a forward
// method's) by name, or by position for names like `INPUT__0`, and returns
// forward's positional arguments with left-out optional ones defaulted.
//
// Throws SignatureError when an input fits no argument, two give the same
// one, a required one is missing, or an input cannot become its argument's
// type.
std::vector<c10::IValue> bind_inputs(Request& request, const c10::FunctionSchema& schema);

// Names the parts of a forward's result: dict entries by key, tuple and
// list-of-tensor elements as OUTPUT__i, anything else (a list of lists too)
// as OUTPUT__0.
NamedOutputs named_outputs(const c10::IValue& result);

// Describes the inputs and outputs of a forward with `schema`. The schema
// records no dtypes or sizes: tensors are listed as FP32 of shape [-1].
ModelDescription describe_forward(const c10::FunctionSchema& schema);

// Writes the inference response for the `outputs` of model `model_name` into
// `out`: its JSON first, then the binary data of the outputs sent as binary.
// Returns the length of the JSON part.
//
// Throws UnknownOutputError for a requested output the result does not have,
// and EncodeError for an output the protocol cannot express.
size_t encode_response(const std::string& model_name, const Request& request, const NamedOutputs& outputs,
                       std::string& out);

// Writes the metadata of model `model_name` into `out`.
void encode_metadata(const std::string& model_name, const ModelDescription& model, std::string& out);

// Writes the configuration of model `model_name` into `out` as Triton's
// model configuration extension answers it: `max_batch_size` (0 for a model
// that does not batch), inputs and outputs with Triton's `TYPE_` datatypes
// and the metadata's shapes as `dims`, and the model's instances as its
// `instance_group`.
void encode_config(const std::string& model_name, const ModelDescription& model, int64_t max_batch_size,
                   size_t instance_count, bool on_gpu, std::string& out);

}  // namespace torch_serving::v2
