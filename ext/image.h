// Encoded images (JPEG, PNG, WebP) to uint8 tensors [C, H, W], torchvision's
// layout, with libjpeg-turbo, libpng and libwebp: the libraries Pillow and
// torchvision bundle.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "json_path.h"

namespace torch_serving::image {

// The channels a decoded image has.
enum class Mode {
  kRGB,        // [3, H, W]: grey expanded, alpha dropped
  kGray,       // [1, H, W]: colour converted as Pillow's "L" does
  kRGBA,       // [4, H, W]: alpha 255 where the image has none
  kUnchanged,  // as stored: 1 (grey), 2 (grey and alpha), 3 or 4 channels
};

// Every mode's protocol name, comma-separated, for error messages.
std::string mode_names();

// The mode of a protocol name (`RGB`), or nothing for an unknown name.
std::optional<Mode> mode_named(std::string_view name);

// Decodes the JPEG, PNG or WebP file in `bytes` into a uint8 tensor
// [C, H, W] in `mode` (a view of pixels stored [H, W, C], as torchvision's
// decoders return), with a JPEG's EXIF orientation applied. The size in
// the file's header is checked against `max_pixels` before any pixel is
// decoded. Throws DecodeError naming `at`: an unsupported or unrecognised
// format (naming what was found), a corrupt or truncated file, too many
// pixels.
at::Tensor decode(std::string_view bytes, Mode mode, int64_t max_pixels, const JsonPath& at);

}  // namespace torch_serving::image
