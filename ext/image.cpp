// JPEG (TurboJPEG), PNG (libpng) and WebP (libwebp) decoding into tensors.
#include "image.h"

#include <ATen/ATen.h>
#include <png.h>
#include <turbojpeg.h>
#include <webp/decode.h>

#include <array>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "json_tensor.h"

namespace torch_serving::image {
namespace {

// Each mode and its protocol name.
struct ModeName {
  std::string_view name;
  Mode mode;
};

constexpr std::array<ModeName, 4> kModes{{
    {"RGB", Mode::kRGB},
    {"GRAY", Mode::kGray},
    {"RGBA", Mode::kRGBA},
    {"UNCHANGED", Mode::kUnchanged},
}};

using namespace std::string_view_literals;
using json::fail;

enum class Format { kJpeg, kPng, kWebp };

Format sniff(std::string_view bytes, const JsonPath& at) {
  auto has = [&](std::string_view magic, size_t offset = 0) {
    return bytes.size() >= offset + magic.size() && bytes.substr(offset, magic.size()) == magic;
  };
  if (has("\xFF\xD8\xFF"sv)) return Format::kJpeg;
  if (has("\x89PNG\r\n\x1A\n"sv)) return Format::kPng;
  if (has("RIFF"sv) && has("WEBP"sv, 8)) return Format::kWebp;
  struct Known {
    std::string_view magic;
    size_t offset;
    const char* name;
  };
  for (const Known& known : {Known{"GIF8"sv, 0, "GIF"}, Known{"BM"sv, 0, "BMP"}, Known{"II*\0"sv, 0, "TIFF"},
                             Known{"MM\0*"sv, 0, "TIFF"}, Known{"ftypavif"sv, 4, "AVIF"},
                             Known{"ftypheic"sv, 4, "HEIC"}, Known{"\0\0\0\x0CjP  "sv, 0, "JPEG 2000"}}) {
    if (has(known.magic, known.offset)) {
      fail(at, std::string("unsupported image format ") + known.name + " (expected JPEG, PNG or WebP)");
    }
  }
  std::string start;
  for (size_t i = 0; i < std::min<size_t>(bytes.size(), 8); ++i) {
    char hex[4];
    std::snprintf(hex, sizeof hex, "%s%02X", i ? " " : "", static_cast<unsigned char>(bytes[i]));
    start += hex;
  }
  fail(at, bytes.empty() ? "the image data is empty"
                         : "unrecognised image format: the data starts with " + start + " (expected JPEG, PNG or WebP)");
}

void check_size(const char* format, int64_t width, int64_t height, int64_t max_pixels, const JsonPath& at) {
  if (width <= 0 || height <= 0) {
    fail(at, std::string(format) + " image of " + std::to_string(width) + " x " + std::to_string(height) +
                 " has no pixels");
  }
  if (width * height > max_pixels) {
    fail(at, std::string(format) + " image of " + std::to_string(width) + " x " + std::to_string(height) + " = " +
                 std::to_string(width * height) + " pixels exceeds the limit of " + std::to_string(max_pixels) +
                 " pixels");
  }
}

// Pillow's RGB to "L": ITU-R 601-2 luma with its rounding, so that GRAY
// matches Pillow's convert("L") exactly. `hwc` is [H, W, 3 or 4].
at::Tensor to_gray(const at::Tensor& hwc) {
  const int64_t pixels = hwc.size(0) * hwc.size(1);
  const int64_t stride = hwc.size(2);
  at::Tensor gray = at::empty({hwc.size(0), hwc.size(1), 1}, at::kByte);
  const uint8_t* src = hwc.const_data_ptr<uint8_t>();
  uint8_t* dst = gray.data_ptr<uint8_t>();
  for (int64_t i = 0; i < pixels; ++i, src += stride) {
    dst[i] = uint8_t((src[0] * 19595 + src[1] * 38470 + src[2] * 7471 + 0x8000) >> 16);
  }
  return gray;
}

// ---------------------------------------------------------------------------
// JPEG, and its EXIF orientation.

uint32_t read_u16(std::string_view b, size_t at, bool little) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data() + at);
  return little ? p[0] | p[1] << 8 : p[0] << 8 | p[1];
}

uint32_t read_u32(std::string_view b, size_t at, bool little) {
  return little ? read_u16(b, at, true) | read_u16(b, at + 2, true) << 16
                : read_u16(b, at, false) << 16 | read_u16(b, at + 2, false);
}

// The Orientation tag (1 to 8) of a TIFF structure, as EXIF embeds one; 1
// when absent or malformed.
int tiff_orientation(std::string_view tiff) {
  if (tiff.size() < 8) return 1;
  const bool little = tiff.substr(0, 2) == "II";
  if ((!little && tiff.substr(0, 2) != "MM") || read_u16(tiff, 2, little) != 42) return 1;
  const size_t ifd = read_u32(tiff, 4, little);
  if (ifd + 2 > tiff.size()) return 1;
  const size_t entries = read_u16(tiff, ifd, little);
  for (size_t k = 0; k < entries; ++k) {
    const size_t entry = ifd + 2 + 12 * k;
    if (entry + 12 > tiff.size()) return 1;
    if (read_u16(tiff, entry, little) != 0x0112) continue;
    const uint32_t value = read_u16(tiff, entry + 8, little);  // a SHORT, left-justified
    return read_u16(tiff, entry + 2, little) == 3 && value >= 1 && value <= 8 ? int(value) : 1;
  }
  return 1;
}

// The EXIF orientation of a JPEG file: its APP1 "Exif" segment's tag.
int jpeg_orientation(std::string_view jpeg) {
  size_t pos = 2;  // after SOI
  while (pos + 4 <= jpeg.size() && static_cast<unsigned char>(jpeg[pos]) == 0xFF) {
    const auto marker = static_cast<unsigned char>(jpeg[pos + 1]);
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) break;  // image data, or the end: no EXIF before it
    const size_t length = read_u16(jpeg, pos + 2, false);
    if (length < 2 || pos + 2 + length > jpeg.size()) break;
    if (marker == 0xE1 && length >= 8 && jpeg.substr(pos + 4, 6) == "Exif\0\0"sv) {
      return tiff_orientation(jpeg.substr(pos + 10, length - 8));
    }
    pos += 2 + length;
  }
  return 1;
}

// Turns an [H, W, C] image as EXIF `orientation` says, as Pillow's
// ImageOps.exif_transpose and torchvision's apply_exif_orientation do.
at::Tensor oriented(const at::Tensor& hwc, int orientation) {
  switch (orientation) {
    case 2: return hwc.flip({1});
    case 3: return hwc.flip({0, 1});
    case 4: return hwc.flip({0});
    case 5: return hwc.permute({1, 0, 2});
    case 6: return hwc.permute({1, 0, 2}).flip({1});
    case 7: return hwc.permute({1, 0, 2}).flip({0, 1});
    case 8: return hwc.permute({1, 0, 2}).flip({0});
    default: return hwc;
  }
}

struct TurboJpeg {
  tjhandle handle = tjInitDecompress();
  ~TurboJpeg() {
    if (handle) tjDestroy(handle);
  }
};

at::Tensor decode_jpeg(std::string_view bytes, Mode mode, int64_t max_pixels, const JsonPath& at) {
  TurboJpeg tj;
  if (!tj.handle) throw std::bad_alloc();
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.handle, data, size, &width, &height, &subsampling, &colorspace) != 0) {
    fail(at, std::string("corrupt JPEG: ") + tjGetErrorStr2(tj.handle));
  }
  check_size("JPEG", width, height, max_pixels, at);
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) fail(at, "CMYK JPEG images are not supported");
  const bool grey = colorspace == TJCS_GRAY;
  int format = TJPF_RGB;
  if (mode == Mode::kRGBA) format = TJPF_RGBA;  // alpha filled with 255
  if (grey && (mode == Mode::kGray || mode == Mode::kUnchanged)) format = TJPF_GRAY;
  at::Tensor hwc = at::empty({height, width, tjPixelSize[format]}, at::kByte);
  // Accurate DCT and (the default) fancy upsampling: what Pillow decodes with.
  if (tjDecompress2(tj.handle, data, size, hwc.data_ptr<uint8_t>(), width, 0, height, format,
                    TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING) != 0) {
    fail(at, std::string("corrupt or truncated JPEG: ") + tjGetErrorStr2(tj.handle));
  }
  if (mode == Mode::kGray && !grey) hwc = to_gray(hwc);
  return oriented(hwc, jpeg_orientation(bytes));
}

// ---------------------------------------------------------------------------
// PNG. libpng reports errors by longjmp, so the calls that may fail run in
// functions whose frames hold nothing with a destructor.

struct PngReader {
  std::string_view data;
  size_t offset = 0;
  char error[200] = "";
  png_structp png = nullptr;
  png_infop info = nullptr;

  ~PngReader() { png_destroy_read_struct(&png, &info, nullptr); }
};

[[noreturn]] void on_png_error(png_structp png, png_const_charp message) {
  auto* reader = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(reader->error, sizeof reader->error, "%s", message);
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}

void read_png_data(png_structp png, png_bytep out, png_size_t count) {
  auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
  if (count > reader->data.size() - reader->offset) png_error(png, "the file is truncated");
  std::memcpy(out, reader->data.data() + reader->offset, count);
  reader->offset += count;
}

struct PngLayout {
  png_uint_32 width = 0;
  png_uint_32 height = 0;
  bool colour = false;  // the stored image has colour (or a palette)
  bool alpha = false;   // the stored image has alpha (or a transparent colour)
};

// Reads the header; false on a libpng error.
bool read_png_header(PngReader& reader, PngLayout& layout) {
  if (setjmp(png_jmpbuf(reader.png))) return false;
  png_set_read_fn(reader.png, &reader, read_png_data);
  // Our pixel limit decides, not libpng's default of a million per side.
  png_set_user_limits(reader.png, 0x7fffffff, 0x7fffffff);
  png_read_info(reader.png, reader.info);
  layout.width = png_get_image_width(reader.png, reader.info);
  layout.height = png_get_image_height(reader.png, reader.info);
  const int colour_type = png_get_color_type(reader.png, reader.info);
  layout.colour = colour_type & PNG_COLOR_MASK_COLOR;
  layout.alpha = (colour_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(reader.png, reader.info, PNG_INFO_tRNS);
  return true;
}

// Sets the transformations to `channels` 8-bit samples and reads every row;
// false on a libpng error.
bool read_png_pixels(PngReader& reader, const PngLayout& layout, int channels, png_bytep* rows) {
  if (setjmp(png_jmpbuf(reader.png))) return false;
  png_set_expand(reader.png);  // palettes to RGB, grey below 8 bits to 8, a transparent colour to alpha
  png_set_strip_16(reader.png);  // 16-bit samples keep their high byte, as Pillow's RGB does
  const bool colour_out = channels >= 3;
  if (colour_out && !layout.colour) png_set_gray_to_rgb(reader.png);
  const bool alpha_out = channels == 2 || channels == 4;
  if (layout.alpha && !alpha_out) png_set_strip_alpha(reader.png);
  if (!layout.alpha && alpha_out) png_set_add_alpha(reader.png, 0xFF, PNG_FILLER_AFTER);
  png_set_interlace_handling(reader.png);
  png_read_update_info(reader.png, reader.info);
  if (png_get_rowbytes(reader.png, reader.info) != png_size_t(layout.width) * channels) {
    png_error(reader.png, "unexpected row size after conversion");
  }
  png_read_image(reader.png, rows);
  return true;
}

at::Tensor decode_png(std::string_view bytes, Mode mode, int64_t max_pixels, const JsonPath& at) {
  PngReader reader;
  reader.data = bytes;
  reader.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, on_png_error, on_png_warning);
  if (!reader.png || !(reader.info = png_create_info_struct(reader.png))) throw std::bad_alloc();
  PngLayout layout;
  if (!read_png_header(reader, layout)) fail(at, std::string("corrupt PNG: ") + reader.error);
  check_size("PNG", layout.width, layout.height, max_pixels, at);
  int channels = 3;
  if (mode == Mode::kRGBA) channels = 4;
  if (mode == Mode::kGray && !layout.colour) channels = 1;
  if (mode == Mode::kUnchanged) channels = (layout.colour ? 3 : 1) + (layout.alpha ? 1 : 0);
  at::Tensor hwc = at::empty({int64_t(layout.height), int64_t(layout.width), channels}, at::kByte);
  std::vector<png_bytep> rows(layout.height);
  uint8_t* pixels = hwc.data_ptr<uint8_t>();
  for (png_uint_32 y = 0; y < layout.height; ++y) rows[y] = pixels + size_t(y) * layout.width * channels;
  if (!read_png_pixels(reader, layout, channels, rows.data())) {
    fail(at, std::string("corrupt or truncated PNG: ") + reader.error);
  }
  return mode == Mode::kGray && layout.colour ? to_gray(hwc) : hwc;
}

// ---------------------------------------------------------------------------
// WebP.

at::Tensor decode_webp(std::string_view bytes, Mode mode, int64_t max_pixels, const JsonPath& at) {
  auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(data, bytes.size(), &features) != VP8_STATUS_OK) fail(at, "corrupt WebP: unreadable header");
  check_size("WebP", features.width, features.height, max_pixels, at);
  if (features.has_animation) fail(at, "animated WebP images are not supported");
  const bool rgba = mode == Mode::kRGBA || (mode == Mode::kUnchanged && features.has_alpha);
  const int channels = rgba ? 4 : 3;
  at::Tensor hwc = at::empty({features.height, features.width, channels}, at::kByte);
  uint8_t* out = hwc.data_ptr<uint8_t>();
  const size_t size = size_t(hwc.numel());
  const int stride = features.width * channels;
  const uint8_t* decoded = rgba ? WebPDecodeRGBAInto(data, bytes.size(), out, size, stride)
                                : WebPDecodeRGBInto(data, bytes.size(), out, size, stride);
  if (!decoded) fail(at, "corrupt or truncated WebP");
  return mode == Mode::kGray ? to_gray(hwc) : hwc;
}

}  // namespace

std::string mode_names() { return json::names_of(kModes); }

std::optional<Mode> mode_named(std::string_view name) {
  for (const auto& m : kModes) {
    if (m.name == name) return m.mode;
  }
  return std::nullopt;
}

at::Tensor decode(std::string_view bytes, Mode mode, int64_t max_pixels, const JsonPath& at) {
  at::Tensor hwc;
  switch (sniff(bytes, at)) {
    case Format::kJpeg: hwc = decode_jpeg(bytes, mode, max_pixels, at); break;
    case Format::kPng: hwc = decode_png(bytes, mode, max_pixels, at); break;
    case Format::kWebp: hwc = decode_webp(bytes, mode, max_pixels, at); break;
  }
  // A view, as torchvision returns: copying to contiguous [C, H, W] would
  // cost a strided pass over every pixel, and models take either layout.
  return hwc.permute({2, 0, 1});
}

}  // namespace torch_serving::image
