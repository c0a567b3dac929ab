// The /serve wire codec: request bytes to forward's arguments, and a result
// IValue to JSON bytes. The rules are those of docs/protocol.md.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>
#include <string_view>
#include <vector>

namespace torch_serving {

// Decodes a request body into the positional arguments of `forward`.
// `readable` is how many bytes may be read from body.data(): with
// simdjson's padding past the body, it is parsed in place, else copied.
//
// Throws DecodeError, whose message names the JSON path of the offending
// element and says what was expected and what was found.
std::vector<c10::IValue> decode_request(std::string_view body, size_t readable = 0);

// Appends the protocol's JSON encoding of `value` to `out`.
//
// Throws EncodeError when `value` holds something the protocol cannot
// express; the message names the type and where it sits in the result.
void encode_result(const c10::IValue& value, std::string& out);

// Replaces the contents of `out` with the full success envelope
// `{"code":200,...,"result":...}`.
void encode_success(const c10::IValue& value, std::string& out);

}  // namespace torch_serving
