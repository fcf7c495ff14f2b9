// Safetensors files: named float32 tensors plus string metadata, the format of our weight files.
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data section:
//   {"__metadata__": {"key": "value", ...},
//    "Conv1/kernel": {"dtype": "F32", "shape": [3, 3, 3, 32], "data_offsets": [0, 3456]}, ...}
// data_offsets are [begin, end) byte offsets relative to the start of the data section; values are
// little-endian, row-major.
//
// Reading is strict, because a weight file is input from outside: the header is parsed by a small
// JSON parser that accepts only objects, arrays, strings and integers, and every violation (short
// file, oversized header, bad JSON, missing or extra keys, unknown dtype, negative or overflowing
// shape, wrong byte count, offsets outside the data section, overlapping tensors, duplicate names,
// too many tensors or JSON values) is an Error naming the file, the tensor and the problem. Data
// bytes that no tensor covers are an error too (as in the reference implementation): a conforming
// writer never leaves gaps, and a gap is more likely damage than intent.
//
// F32 is read as is; F16, BF16 and F64 are converted to float32 (NamedTensor::dtype keeps the
// file's dtype). Other dtypes are recognized, so that their sizes validate, but reading them fails.
//
// Writing produces F32 tensors, contiguous in the given order, with the header padded by spaces
// to a multiple of 8 bytes so that the data section is aligned. It is atomic: data goes to
// "<path>.tmp.<pid>.<n>" (n counts writes in this process), is fsync'ed and renamed over <path>;
// on any failure the temporary file is removed and an existing <path> stays untouched.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace eigennet {

// Limits that keep a hostile file from exhausting memory before it is rejected.
constexpr uint64_t safetensors_max_header_bytes = 100'000'000;
constexpr size_t safetensors_max_tensors = 100'000;
// JSON values in a header. A tensor's entry takes about 12 (the entry, its dtype, the shape and
// offset arrays and their integers), so the tensor limit fits with room for metadata. Without
// it a header of short values ("[0,0,0,..." or many tiny keys) would cost ~100 bytes of parse
// tree per 2 bytes of header: 5 GB for a 100 MB header. With it the tree stays below ~300 MB.
constexpr size_t safetensors_max_header_values = 16 * safetensors_max_tensors;

struct NamedTensor {
  std::string name;
  Tensor tensor;
  std::string dtype = "F32";  // the dtype stored in the file; the tensor itself is always float32
};

// A tensor to write, by reference (parameters are written without copying them).
struct TensorRef {
  std::string name;
  const Tensor* tensor = nullptr;
};

struct SafetensorsFile {
  std::string path;
  std::map<std::string, std::string> metadata;
  std::vector<NamedTensor> tensors;  // in header order

  // The tensor with this name, or nullptr. A linear search: files hold hundreds of tensors.
  const Tensor* find(const std::string& name) const {
    for (const NamedTensor& t : tensors)
      if (t.name == name) return &t.tensor;
    return nullptr;
  }
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  // The tensor with this name; an Error naming the file and the tensor when absent.
  const Tensor& at(const std::string& name) const {
    const Tensor* t = find(name);
    EIGENNET_CHECK(t != nullptr, "safetensors file '", path, "': no tensor named '", name, "'");
    return *t;
  }
  // The metadata value for key; an Error when absent.
  const std::string& metadata_at(const std::string& key) const {
    auto it = metadata.find(key);
    EIGENNET_CHECK(it != metadata.end(), "safetensors file '", path, "': no metadata key '", key, "'");
    return it->second;
  }
  int64_t total_elements() const {
    int64_t n = 0;
    for (const NamedTensor& t : tensors) n += t.tensor.size();
    return n;
  }
};

namespace detail::safetensors {

// ---- Strict JSON ----------------------------------------------------------------------------

struct JsonValue {
  enum class Kind { object, array, string, integer };
  Kind kind = Kind::integer;
  int64_t integer = 0;
  std::string text;                // string value
  std::vector<JsonValue> items;    // array elements, or object values
  std::vector<std::string> keys;   // object keys, parallel to items

  const JsonValue* find(const std::string& key) const {
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return &items[i];
    return nullptr;
  }
};

inline const char* kind_name(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::object: return "an object";
    case JsonValue::Kind::array: return "an array";
    case JsonValue::Kind::string: return "a string";
    case JsonValue::Kind::integer: return "an integer";
  }
  return "?";
}

// Error messages quote names from the file: keep them short.
inline std::string quote_name(const std::string& s) {
  constexpr size_t limit = 120;
  return "'" + (s.size() <= limit ? s : s.substr(0, limit) + "...") + "'";
}

// Length of the UTF-8 sequence starting at s[i] (0 when invalid: overlong, surrogate, > U+10FFFF).
inline size_t utf8_sequence_length(const unsigned char* s, size_t size, size_t i) {
  const unsigned char c = s[i];
  if (c < 0x80) return 1;
  size_t n;
  uint32_t code;
  if ((c & 0xE0) == 0xC0) n = 2, code = c & 0x1F;
  else if ((c & 0xF0) == 0xE0) n = 3, code = c & 0x0F;
  else if ((c & 0xF8) == 0xF0) n = 4, code = c & 0x07;
  else return 0;
  if (i + n > size) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((s[i + k] & 0xC0) != 0x80) return 0;
    code = (code << 6) | (s[i + k] & 0x3F);
  }
  static constexpr uint32_t min_code[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < min_code[n] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return n;
}

inline bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_sequence_length(p, s.size(), i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

inline void append_utf8(std::string& out, uint32_t code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | (code >> 6));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    out += static_cast<char>(0xE0 | (code >> 12));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code >> 18));
    out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

// A recursive-descent parser for the JSON subset a safetensors header needs: objects, arrays,
// strings (all escapes, including \uXXXX surrogate pairs) and integers. Floats, true, false and
// null are rejected, as are duplicate object keys, invalid UTF-8 and nesting deeper than 32.
class JsonParser {
 public:
  JsonParser(const char* text, size_t size, std::string context, size_t max_top_level_entries,
             size_t max_values = safetensors_max_header_values)
      : s_(reinterpret_cast<const unsigned char*>(text)), size_(size), context_(std::move(context)),
        max_top_level_entries_(max_top_level_entries), max_values_(max_values) {}

  // Exactly one value, surrounded by optional whitespace (headers are padded with spaces).
  JsonValue parse_document() {
    skip_whitespace();
    JsonValue v = parse_value(0);
    skip_whitespace();
    if (pos_ != size_) error("unexpected data after the JSON value");
    return v;
  }

 private:
  static constexpr int max_depth = 32;

  [[noreturn]] void error(const std::string& what) const {
    fail(context_, ": invalid JSON header at byte ", pos_, ": ", what);
  }
  bool at_end() const { return pos_ >= size_; }
  unsigned char peek() const { return s_[pos_]; }
  void skip_whitespace() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }
  void expect(char c) {
    if (at_end()) error(std::string("expected '") + c + "' but the header ends");
    if (peek() != static_cast<unsigned char>(c)) error(std::string("expected '") + c + "'");
    ++pos_;
  }

  JsonValue parse_value(int depth) {
    if (at_end()) error("expected a value but the header ends");
    if (++values_ > max_values_) error("more than " + std::to_string(max_values_) + " values (header size limit)");
    const unsigned char c = peek();
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') {
      JsonValue v;
      v.kind = JsonValue::Kind::string;
      v.text = parse_string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_integer();
    if (c == 't' || c == 'f' || c == 'n') error("true, false and null are not allowed in a safetensors header");
    error(std::string("unexpected character '") + static_cast<char>(c) + "'");
  }

  JsonValue parse_object(int depth) {
    if (depth >= max_depth) error("nesting deeper than " + std::to_string(max_depth));
    JsonValue v;
    v.kind = JsonValue::Kind::object;
    std::set<std::string> seen;
    expect('{');
    skip_whitespace();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_whitespace();
      if (at_end() || peek() != '"') error("expected a string key");
      std::string key = parse_string();
      if (!seen.insert(key).second)
        error(depth == 0 ? "duplicate tensor name " + quote_name(key) : "duplicate key " + quote_name(key));
      if (depth == 0 && v.keys.size() >= max_top_level_entries_)
        error("more than " + std::to_string(max_top_level_entries_) + " entries (tensor count limit)");
      skip_whitespace();
      expect(':');
      skip_whitespace();
      v.keys.push_back(std::move(key));
      v.items.push_back(parse_value(depth + 1));
      skip_whitespace();
      if (at_end()) error("unterminated object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      return v;
    }
  }

  JsonValue parse_array(int depth) {
    if (depth >= max_depth) error("nesting deeper than " + std::to_string(max_depth));
    JsonValue v;
    v.kind = JsonValue::Kind::array;
    expect('[');
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_whitespace();
      v.items.push_back(parse_value(depth + 1));
      skip_whitespace();
      if (at_end()) error("unterminated array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return v;
    }
  }

  JsonValue parse_integer() {
    const size_t start = pos_;
    const bool negative = peek() == '-';
    if (negative) ++pos_;
    if (at_end() || peek() < '0' || peek() > '9') error("expected a digit");
    if (peek() == '0' && pos_ + 1 < size_ && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9')
      error("leading zeros are not allowed");
    // Accumulate as a negative number: its range includes INT64_MIN.
    int64_t value = 0;
    while (!at_end() && peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (value < (INT64_MIN + digit) / 10) {
        pos_ = start;
        error("integer out of the 64-bit range");
      }
      value = value * 10 - digit;
      ++pos_;
    }
    if (!at_end() && (peek() == '.' || peek() == 'e' || peek() == 'E'))
      error("only integers are allowed in a safetensors header");
    if (!negative) {
      if (value == INT64_MIN) {
        pos_ = start;
        error("integer out of the 64-bit range");
      }
      value = -value;
    }
    JsonValue v;
    v.kind = JsonValue::Kind::integer;
    v.integer = value;
    return v;
  }

  uint32_t parse_hex4() {
    if (size_ - pos_ < 4) error("truncated \\u escape");
    uint32_t code = 0;
    for (int k = 0; k < 4; ++k) {
      const unsigned char h = s_[pos_++];
      code <<= 4;
      if (h >= '0' && h <= '9') code |= h - '0';
      else if (h >= 'a' && h <= 'f') code |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') code |= h - 'A' + 10;
      else error("invalid hex digit in \\u escape");
    }
    return code;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    for (;;) {
      if (at_end()) error("unterminated string");
      const unsigned char c = peek();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error("unescaped control character in a string");
      if (c == '\\') {
        ++pos_;
        if (at_end()) error("unterminated escape");
        const unsigned char e = s_[pos_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            uint32_t code = parse_hex4();
            if (code >= 0xDC00 && code <= 0xDFFF) error("unpaired low surrogate in \\u escape");
            if (code >= 0xD800 && code <= 0xDBFF) {
              if (size_ - pos_ < 2 || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
                error("high surrogate not followed by a low surrogate");
              pos_ += 2;
              const uint32_t low = parse_hex4();
              if (low < 0xDC00 || low > 0xDFFF) error("high surrogate not followed by a low surrogate");
              code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            }
            append_utf8(out, code);
            break;
          }
          default: --pos_; error("invalid escape");
        }
        continue;
      }
      const size_t n = utf8_sequence_length(s_, size_, pos_);
      if (n == 0) error("invalid UTF-8");
      out.append(reinterpret_cast<const char*>(s_ + pos_), n);
      pos_ += n;
    }
  }

  const unsigned char* s_;
  size_t size_;
  size_t pos_ = 0;
  std::string context_;
  size_t max_top_level_entries_;
  size_t max_values_;
  size_t values_ = 0;
};

inline void append_json_string(std::string& out, const std::string& s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else out += ch;
  }
  out += '"';
}

// ---- Dtypes and byte order ------------------------------------------------------------------

// Bytes per element of a safetensors dtype; 0 when unknown.
inline int dtype_size(const std::string& dtype) {
  static const std::map<std::string, int> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
      {"U16", 2}, {"U8", 1},  {"BOOL", 1}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}
inline bool convertible_to_float(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64";
}

inline bool host_is_little_endian() {
  const uint32_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

inline uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline float float_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// IEEE binary16 -> binary32, exact for every value (subnormals, infinities, NaN payloads).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);  // mantissa * 2^-24
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return float_from_bits(sign | 0x7F800000u | (mantissa << 13));
  return float_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Converts count little-endian elements of dtype (F32, F16, BF16 or F64) at src to float32 at dst.
inline void convert_to_float(float* dst, const unsigned char* src, int64_t count, const std::string& dtype) {
  if (dtype == "F32") {
    for (int64_t i = 0; i < count; ++i, src += 4)
      dst[i] = float_from_bits(static_cast<uint32_t>(src[0]) | static_cast<uint32_t>(src[1]) << 8 |
                               static_cast<uint32_t>(src[2]) << 16 | static_cast<uint32_t>(src[3]) << 24);
  } else if (dtype == "F16") {
    for (int64_t i = 0; i < count; ++i, src += 2) dst[i] = half_to_float(static_cast<uint16_t>(src[0] | src[1] << 8));
  } else if (dtype == "BF16") {
    for (int64_t i = 0; i < count; ++i, src += 2)
      dst[i] = float_from_bits(static_cast<uint32_t>(src[0] | src[1] << 8) << 16);
  } else if (dtype == "F64") {
    for (int64_t i = 0; i < count; ++i, src += 8) {
      const uint64_t bits = read_u64_le(src);
      double d;
      std::memcpy(&d, &bits, sizeof d);
      dst[i] = static_cast<float>(d);
    }
  } else {
    fail("convert_to_float: unsupported dtype ", dtype);
  }
}

// ---- Header validation ----------------------------------------------------------------------

struct Entry {
  std::string name;
  std::string dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<Entry> entries;  // header order
};

inline std::vector<int64_t> integers(const JsonValue& v, const std::string& where, const std::string& key) {
  if (v.kind != JsonValue::Kind::array) fail(where, ": '", key, "' must be an array of integers, got ", kind_name(v.kind));
  std::vector<int64_t> out;
  for (const JsonValue& item : v.items) {
    if (item.kind != JsonValue::Kind::integer)
      fail(where, ": '", key, "' must be an array of integers, found ", kind_name(item.kind));
    out.push_back(item.integer);
  }
  return out;
}

inline Entry parse_entry(const std::string& name, const JsonValue& v, const std::string& file) {
  const std::string where = file + ": tensor " + quote_name(name);
  if (v.kind != JsonValue::Kind::object) fail(where, ": entry must be an object, got ", kind_name(v.kind));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.find(key)) fail(where, ": missing key '", key, "'");
  for (const std::string& key : v.keys)
    if (key != "dtype" && key != "shape" && key != "data_offsets") fail(where, ": unexpected key ", quote_name(key));
  Entry e;
  e.name = name;
  const JsonValue& dtype = *v.find("dtype");
  if (dtype.kind != JsonValue::Kind::string) fail(where, ": 'dtype' must be a string, got ", kind_name(dtype.kind));
  e.dtype = dtype.text;
  const int element_size = dtype_size(e.dtype);
  if (element_size == 0) fail(where, ": unknown dtype ", quote_name(e.dtype));

  const std::vector<int64_t> dims = integers(*v.find("shape"), where, "shape");
  if (dims.size() > static_cast<size_t>(Shape::max_rank))
    fail(where, ": rank ", dims.size(), " exceeds eigennet's maximum of ", Shape::max_rank);
  uint64_t elements = 1;
  bool overflow = false;
  for (const int64_t d : dims) {
    if (d < 0) fail(where, ": negative dimension ", d, " in shape");
    const auto ud = static_cast<uint64_t>(d);
    if (ud != 0 && elements > static_cast<uint64_t>(INT64_MAX) / ud) overflow = true;
    else elements *= ud;
  }
  // An overflowing product of non-zero dimensions is still zero when some dimension is zero.
  if (std::find(dims.begin(), dims.end(), 0) != dims.end()) overflow = false, elements = 0;
  if (overflow || elements > static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(element_size))
    fail(where, ": element count of the shape overflows");
  for (const int64_t d : dims) e.shape.push_back(d);
  const uint64_t bytes = elements * static_cast<uint64_t>(element_size);

  const std::vector<int64_t> offsets = integers(*v.find("data_offsets"), where, "data_offsets");
  if (offsets.size() != 2) fail(where, ": 'data_offsets' must hold 2 integers, got ", offsets.size());
  if (offsets[0] < 0 || offsets[1] < 0) fail(where, ": negative data_offsets [", offsets[0], ", ", offsets[1], "]");
  e.begin = static_cast<uint64_t>(offsets[0]);
  e.end = static_cast<uint64_t>(offsets[1]);
  if (e.end < e.begin) fail(where, ": data_offsets end ", e.end, " is before begin ", e.begin);
  if (e.end - e.begin != bytes)
    fail(where, ": data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin, " bytes but dtype ", e.dtype,
         " and shape ", e.shape, " need ", bytes, " bytes");
  return e;
}

// Parses and validates a header whose data section holds data_size bytes. file: "safetensors
// file '<path>'", the prefix of every message.
inline Header parse_header(const char* json, size_t size, uint64_t data_size, const std::string& file) {
  const JsonValue root = JsonParser(json, size, file, safetensors_max_tensors + 1).parse_document();
  if (root.kind != JsonValue::Kind::object) fail(file, ": the header must be a JSON object, got ", kind_name(root.kind));
  Header header;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const std::string& name = root.keys[i];
    const JsonValue& value = root.items[i];
    if (name == "__metadata__") {
      if (value.kind != JsonValue::Kind::object) fail(file, ": __metadata__ must be an object, got ", kind_name(value.kind));
      for (size_t k = 0; k < value.keys.size(); ++k) {
        if (value.items[k].kind != JsonValue::Kind::string)
          fail(file, ": __metadata__ value for key ", quote_name(value.keys[k]), " must be a string, got ",
               kind_name(value.items[k].kind));
        header.metadata[value.keys[k]] = value.items[k].text;
      }
      continue;
    }
    if (header.entries.size() >= safetensors_max_tensors)
      fail(file, ": more than ", safetensors_max_tensors, " tensors (tensor count limit)");
    header.entries.push_back(parse_entry(name, value, file));
  }
  // Offsets inside the data section, no overlaps, no uncovered bytes.
  std::vector<const Entry*> by_offset;
  for (const Entry& e : header.entries) {
    if (e.end > data_size)
      fail(file, ": tensor ", quote_name(e.name), ": data_offsets [", e.begin, ", ", e.end,
           "] lie outside the data section of ", data_size, " bytes");
    if (e.end > e.begin) by_offset.push_back(&e);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry* e : by_offset) {
    if (e->begin < covered)
      fail(file, ": tensors ", quote_name(previous->name), " [", previous->begin, ", ", previous->end, ") and ",
           quote_name(e->name), " [", e->begin, ", ", e->end, ") overlap");
    if (e->begin > covered)
      fail(file, ": data section bytes [", covered, ", ", e->begin, ") before tensor ", quote_name(e->name),
           " are not covered by any tensor");
    covered = e->end;
    previous = e;
  }
  if (covered != data_size)
    fail(file, ": data section bytes [", covered, ", ", data_size, ") at its end are not covered by any tensor");
  return header;
}

// Reads a validated file: read(offset, size, destination) fills bytes of the data section.
template <typename ReadData>
SafetensorsFile load(const Header& header, const std::string& path, const std::string& file, ReadData&& read) {
  SafetensorsFile out;
  out.path = path;
  out.metadata = header.metadata;
  out.tensors.reserve(header.entries.size());
  std::vector<unsigned char> staging;
  for (const Entry& e : header.entries) {
    if (!convertible_to_float(e.dtype))
      fail(file, ": tensor ", quote_name(e.name), ": dtype ", e.dtype,
           " is not supported (eigennet reads F32, and converts F16, BF16 and F64 to float32)");
    NamedTensor t;
    t.name = e.name;
    t.dtype = e.dtype;
    t.tensor = Tensor(e.shape);
    const uint64_t bytes = e.end - e.begin;
    if (bytes > 0) {
      if (e.dtype == "F32" && host_is_little_endian()) {
        read(e.begin, bytes, reinterpret_cast<unsigned char*>(t.tensor.data()));
      } else {
        staging.resize(static_cast<size_t>(bytes));
        read(e.begin, bytes, staging.data());
        convert_to_float(t.tensor.data(), staging.data(), t.tensor.size(), e.dtype);
      }
    }
    out.tensors.push_back(std::move(t));
  }
  return out;
}

inline std::string file_label(const std::string& path) { return "safetensors file '" + path + "'"; }

// Checks the 8-byte prefix; returns the header length.
inline uint64_t check_prefix(const unsigned char* prefix, uint64_t file_size, const std::string& file) {
  const uint64_t header_size = read_u64_le(prefix);
  if (header_size > safetensors_max_header_bytes)
    fail(file, ": header length ", header_size, " exceeds the limit of ", safetensors_max_header_bytes, " bytes");
  if (header_size > file_size - 8)
    fail(file, ": header length ", header_size, " exceeds the ", file_size - 8, " bytes that follow it in the file");
  return header_size;
}

// Closes a file descriptor on scope exit.
struct FileDescriptor {
  int fd = -1;
  explicit FileDescriptor(int f) : fd(f) {}
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
};

inline void read_exactly(int fd, unsigned char* dst, uint64_t size, uint64_t offset, const std::string& file) {
  while (size > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, 1u << 30));
    const ssize_t n = ::pread(fd, dst, chunk, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(file, ": read failed at byte ", offset, ": ", std::strerror(errno));
    if (n == 0) fail(file, ": unexpected end of file at byte ", offset, " (was the file truncated while reading?)");
    dst += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

inline void write_exactly(int fd, const void* data, size_t size, const std::string& what) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, 1u << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(what, ": write failed: ", n < 0 ? std::strerror(errno) : "no progress");
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace detail::safetensors

// Parses a complete safetensors file held in memory. source names it in error messages.
inline SafetensorsFile parse_safetensors(const void* bytes, size_t size, const std::string& source = "<memory>") {
  namespace st = detail::safetensors;
  const std::string file = st::file_label(source);
  const auto* p = static_cast<const unsigned char*>(bytes);
  if (size < 8) fail(file, ": the file is ", size, " bytes, shorter than the 8-byte header length");
  const uint64_t header_size = st::check_prefix(p, size, file);
  const uint64_t data_size = size - 8 - header_size;
  const st::Header header = st::parse_header(reinterpret_cast<const char*>(p + 8), header_size, data_size, file);
  const unsigned char* data = p + 8 + header_size;
  return st::load(header, source, file, [&](uint64_t offset, uint64_t n, unsigned char* dst) {
    std::memcpy(dst, data + offset, static_cast<size_t>(n));
  });
}

// Reads a safetensors file from disk.
inline SafetensorsFile read_safetensors(const std::string& path) {
  namespace st = detail::safetensors;
  const std::string file = st::file_label(path);
  st::FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) fail(file, ": cannot open: ", std::strerror(errno));
  struct stat info {};
  if (::fstat(fd.fd, &info) != 0) fail(file, ": cannot stat: ", std::strerror(errno));
  if (!S_ISREG(info.st_mode)) fail(file, ": not a regular file");
  const auto size = static_cast<uint64_t>(info.st_size);
  if (size < 8) fail(file, ": the file is ", size, " bytes, shorter than the 8-byte header length");
  unsigned char prefix[8];
  st::read_exactly(fd.fd, prefix, 8, 0, file);
  const uint64_t header_size = st::check_prefix(prefix, size, file);
  std::string json(static_cast<size_t>(header_size), '\0');
  st::read_exactly(fd.fd, reinterpret_cast<unsigned char*>(json.data()), header_size, 8, file);
  const st::Header header = st::parse_header(json.data(), json.size(), size - 8 - header_size, file);
  const uint64_t data_start = 8 + header_size;
  return st::load(header, path, file, [&](uint64_t offset, uint64_t n, unsigned char* dst) {
    st::read_exactly(fd.fd, dst, n, data_start + offset, file);
  });
}

// Writes float32 tensors and metadata to path atomically (see the top of this file). Names must
// be non-empty, unique, valid UTF-8 and not "__metadata__".
inline void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  namespace st = detail::safetensors;
  const std::string file = st::file_label(path);
  // The rename would replace a device, FIFO or directory (as root, "/dev/null" would become a file).
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0 && !S_ISREG(existing.st_mode))
    fail(file, ": cannot write: it exists and is not a regular file");
  EIGENNET_CHECK(tensors.size() <= safetensors_max_tensors, file, ": cannot write ", tensors.size(),
                 " tensors, more than the limit of ", safetensors_max_tensors);
  std::set<std::string> names;
  for (const TensorRef& t : tensors) {
    EIGENNET_CHECK(!t.name.empty(), file, ": a tensor name is empty");
    EIGENNET_CHECK(t.name != "__metadata__", file, ": '__metadata__' is reserved and cannot name a tensor");
    EIGENNET_CHECK(st::valid_utf8(t.name), file, ": tensor name ", st::quote_name(t.name), " is not valid UTF-8");
    EIGENNET_CHECK(t.tensor != nullptr, file, ": tensor ", st::quote_name(t.name), " is null");
    EIGENNET_CHECK(names.insert(t.name).second, file, ": duplicate tensor name ", st::quote_name(t.name));
  }
  for (const auto& [key, value] : metadata)
    EIGENNET_CHECK(st::valid_utf8(key) && st::valid_utf8(value), file, ": metadata key ", st::quote_name(key),
                   " or its value is not valid UTF-8");

  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) json += ',';
      first = false;
      st::append_json_string(json, key);
      json += ':';
      st::append_json_string(json, value);
    }
    json += '}';
  }
  uint64_t offset = 0;
  for (const TensorRef& t : tensors) {
    if (json.size() > 1) json += ',';
    st::append_json_string(json, t.name);
    json += ":{\"dtype\":\"F32\",\"shape\":[";
    const Shape& shape = t.tensor->shape();
    for (int i = 0; i < shape.rank(); ++i) json += (i ? "," : "") + std::to_string(shape[i]);
    const uint64_t bytes = static_cast<uint64_t>(t.tensor->size()) * sizeof(float);
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  json += '}';
  // Spaces (valid JSON whitespace) align the data section to 8 bytes.
  json.append((8 - json.size() % 8) % 8, ' ');
  EIGENNET_CHECK(json.size() <= safetensors_max_header_bytes, file, ": the header would be ", json.size(),
                 " bytes, more than the limit of ", safetensors_max_header_bytes);

  unsigned char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(static_cast<uint64_t>(json.size()) >> (8 * i));

  static std::atomic<unsigned long> temp_counter{0};  // threads of one process writing one path never collide
  const std::string temp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(temp_counter++);
  const std::string temp_file = file + " (temporary file '" + temp + "')";  // names the target too
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(file, ": cannot create the temporary file '", temp, "': ", std::strerror(errno));
  try {
    st::write_exactly(fd, prefix, 8, temp_file);
    st::write_exactly(fd, json.data(), json.size(), temp_file);
    std::vector<unsigned char> swapped;
    for (const TensorRef& t : tensors) {
      const size_t bytes = static_cast<size_t>(t.tensor->size()) * sizeof(float);
      if (bytes == 0) continue;
      if (st::host_is_little_endian()) {
        st::write_exactly(fd, t.tensor->data(), bytes, temp_file);
      } else {
        swapped.resize(bytes);
        for (int64_t i = 0; i < t.tensor->size(); ++i) {
          uint32_t bits;
          std::memcpy(&bits, t.tensor->data() + i, 4);
          for (int b = 0; b < 4; ++b) swapped[static_cast<size_t>(i * 4 + b)] = static_cast<unsigned char>(bits >> (8 * b));
        }
        st::write_exactly(fd, swapped.data(), bytes, temp_file);
      }
    }
    if (::fsync(fd) != 0) fail(temp_file, ": fsync failed: ", std::strerror(errno));
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) fail(temp_file, ": close failed: ", std::strerror(errno));
    if (::rename(temp.c_str(), path.c_str()) != 0)
      fail(file, ": cannot rename '", temp, "' to it: ", std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  // Make the rename itself durable. Best effort: some file systems cannot sync a directory.
  const size_t slash = path.find_last_of('/');
  const std::string directory = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    (void)::fsync(dir_fd);
    ::close(dir_fd);
  }
}

inline void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<TensorRef> refs;
  refs.reserve(tensors.size());
  for (const NamedTensor& t : tensors) refs.push_back({t.name, &t.tensor});
  write_safetensors(path, refs, metadata);
}

inline void write_safetensors(const std::string& path, const SafetensorsFile& contents) {
  write_safetensors(path, contents.tensors, contents.metadata);
}

}  // namespace eigennet
