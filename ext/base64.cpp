// Base64 decoding with the offsets errors need.
#include "base64.h"

#include <array>
#include <cstdint>
#include <cstdio>

#include "json_tensor.h"

namespace torch_serving {
namespace {

constexpr uint8_t kSkip = 0xFE;     // line breaks, which MIME inserts
constexpr uint8_t kInvalid = 0xFF;  // anything else that is not base64

constexpr std::array<uint8_t, 256> make_table() {
  std::array<uint8_t, 256> table{};
  for (auto& v : table) v = kInvalid;
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  for (size_t i = 0; i < kAlphabet.size(); ++i) table[uint8_t(kAlphabet[i])] = uint8_t(i);
  table['+'] = table['-'] = 62;  // standard and URL-safe
  table['/'] = table['_'] = 63;
  table['\r'] = table['\n'] = kSkip;
  return table;
}

constexpr std::array<uint8_t, 256> kTable = make_table();

std::string shown(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7F) return std::string("'") + c + "'";
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", u);
  return buf;
}

}  // namespace

std::string decode_base64(std::string_view text, const JsonPath& at) {
  std::string out;
  out.reserve(text.size() / 4 * 3 + 3);
  uint32_t bits = 0;
  int count = 0;  // sextets in `bits`
  size_t padding_at = std::string_view::npos;
  for (size_t i = 0; i < text.size(); ++i) {
    const uint8_t v = kTable[static_cast<unsigned char>(text[i])];
    if (v == kSkip) continue;
    if (text[i] == '=') {
      if (padding_at == std::string_view::npos) padding_at = i;
      continue;
    }
    if (v == kInvalid || padding_at != std::string_view::npos) {
      json::fail(at, "invalid base64: " + shown(text[i]) + " at offset " + std::to_string(i) +
                         (v == kInvalid ? "" : ", after the padding"));
    }
    bits = (bits << 6) | v;
    if (++count == 4) {
      out += char(bits >> 16);
      out += char(bits >> 8);
      out += char(bits);
      bits = 0;
      count = 0;
    }
  }
  if (count == 1) json::fail(at, "invalid base64: its last group has a single character");
  if (count == 2) out += char(bits >> 4);
  if (count == 3) {
    out += char(bits >> 10);
    out += char(bits >> 2);
  }
  return out;
}

}  // namespace torch_serving
