// Base64 text to bytes, as clients write it: the standard or the URL-safe
// alphabet, with or without padding, with line breaks (MIME) anywhere.
#pragma once

#include <string>
#include <string_view>

#include "json_path.h"

namespace torch_serving {

// Returns the bytes that the base64 `text` encodes. Throws DecodeError
// naming `at` and the offset in `text` of the first character that is not
// base64, or saying why the text ends wrongly.
std::string decode_base64(std::string_view text, const JsonPath& at);

}  // namespace torch_serving
