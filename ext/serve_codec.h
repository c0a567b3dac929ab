// The /serve wire codec: request bytes to forward's arguments, and a result
// IValue to JSON bytes. The rules are those of docs/protocol.md.
#pragma once

#include <ATen/core/ivalue.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace torch_serving {

// Pillow's default limit on the pixels of one image (MAX_IMAGE_PIXELS).
constexpr int64_t kDefaultMaxImagePixels = 89'478'485;

// Decodes a request body into the positional arguments of `forward`.
// `readable` is how many bytes may be read from body.data(): with
// simdjson's padding past the body, it is parsed in place, else copied.
// Images of more than `max_image_pixels` pixels are refused from their
// header, before any pixel is decoded.
//
// Throws DecodeError, whose message names the JSON path of the offending
// element and says what was expected and what was found.
std::vector<c10::IValue> decode_arguments(std::string_view body, size_t readable = 0,
                                          int64_t max_image_pixels = kDefaultMaxImagePixels);

// Appends the protocol's JSON encoding of `value` to `out`.
//
// Throws EncodeError when `value` holds something the protocol cannot
// express; the message names the type and where it sits in the result.
void encode_result(const c10::IValue& value, std::string& out);

// Replaces the contents of `out` with the full success envelope
// `{"code":200,...,"result":...}`.
void encode_success(const c10::IValue& value, std::string& out);

}  // namespace torch_serving
