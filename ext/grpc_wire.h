// The gRPC inference messages (ModelInferRequest, ModelInferResponse) in
// protobuf's wire format, turned into and out of the REST protocol's binary
// form, which the pipeline answers: one codec behind both transports.
//
// Only the form stock clients send is read here: every input's data in
// raw_input_contents, no parameters, no typed contents, no model version
// other than "1". Any other message (and any malformed one) is left to the
// Python servicer, which reads every form and answers its errors.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "request_body.h"

namespace torch_serving::grpc_wire {

// An inference call in the REST protocol's binary form: the JSON header
// (its first `header_length` bytes), then the inputs' data.
struct RestInferRequest {
  std::string model_name;
  std::shared_ptr<RequestBody> body;
  int64_t header_length = 0;
};

// `message` (a serialized ModelInferRequest) in the REST form, asking for
// every output in binary; none when it is not in the form read here.
std::optional<RestInferRequest> rest_infer_request(std::string_view message);

// The REST protocol's binary answer (`response`, whose first `json_length`
// bytes are its JSON, every output in binary) as a serialized
// ModelInferResponse carrying the outputs in raw_output_contents.
std::string infer_response_message(std::string_view response, size_t json_length);

}  // namespace torch_serving::grpc_wire
