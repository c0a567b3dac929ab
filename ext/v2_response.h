// Writing Open Inference Protocol answers: inference responses (JSON, then
// the outputs sent as binary data), model metadata and Triton's model
// configuration.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "v2.h"

namespace torch_serving::v2 {

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
