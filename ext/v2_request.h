// Decoding Open Inference Protocol inference requests: the JSON header and
// the binary data after it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "v2.h"

namespace torch_serving::v2 {

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

}  // namespace torch_serving::v2
