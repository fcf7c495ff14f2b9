// Json: the library's one JSON value, for writing reports (metrics, training summaries, configs)
// and for reading JSON back (checkpoint settings and history, safetensors headers). Objects keep
// insertion order, so files read in the order they were built.
//
//   Json report = metrics_to_json(metrics);       // or Json::object()
//   report["train_seconds"] = 812.5;
//   report["config"]["learning_rate"] = 1e-3f;    // nested objects are created on first use
//   save_json("runs/metrics.json", report);
//   Json back = Json::parse(text, "metrics.json");
//
// Writing numbers: integers are written exactly; doubles in the shortest form that reads back to
// the same double; floats in the shortest form that reads back to the same float (0.1f is written
// 0.1). NaN and infinities have no JSON form and are written as null. Strings are escaped (quotes,
// backslashes, control characters); invalid UTF-8 bytes become U+FFFD so the output stays valid.
//
// Reading is strict (RFC 8259): one value with optional surrounding whitespace, no trailing
// commas, no duplicate object keys, valid UTF-8 only, nesting at most 32 deep, a bounded number
// of values (JsonParseOptions) so that hostile input cannot exhaust memory. Integers that fit in
// 64 bits are integers; other numbers are doubles. Every error names the source, the byte offset
// and the problem.
#pragma once

#include <charconv>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <set>
#include <vector>

#include "../core/error.hpp"
#include "atomic_file.hpp"

namespace eigennet {

namespace detail {

// Shortest decimal form of a finite double (or float, with Float = float) that reads back exactly.
template <typename Float>
std::string shortest_decimal(Float value) {
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
#else
  char buffer[64];
  const int first_precision = std::is_same_v<Float, float> ? 6 : 15;
  const int last_precision = std::is_same_v<Float, float> ? 9 : 17;
  for (int precision = first_precision; precision <= last_precision; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, static_cast<double>(value));
    if (static_cast<Float>(std::strtod(buffer, nullptr)) == value) break;
  }
  return buffer;
#endif
}

// Length of the valid UTF-8 sequence starting at text[i], or 0 when it is not valid (overlong
// forms, surrogates and code points past U+10FFFF are rejected, as RFC 3629 requires).
inline size_t utf8_sequence_length(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (size_t k = 2; k < length; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return length;
}

}  // namespace detail

// `text` as a quoted JSON string.
inline std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t length = detail::utf8_sequence_length(text, i);
      if (length == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(text.substr(i, length));
        i += length;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(c));
          out += escape;
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
  return out;
}

// A double as a JSON number; NaN and infinities (which JSON cannot represent) as null. A whole
// number beyond the 64-bit integers (std::to_chars may write 2.2858260921667761e20 as
// 228582609216677609472) gets a ".0", so that it reads back as a double, not as an integer out of
// range.
inline std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";
  std::string s = detail::shortest_decimal(value);
  if (std::fabs(value) >= 9.2e18 && s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

struct JsonParseOptions;
namespace detail {
class JsonReader;
}

class Json {
 public:
  enum class Type { null, boolean, integer, number, string, array, object };

  Json() = default;
  Json(std::nullptr_t) {}
  Json(bool value) : type_(Type::boolean), boolean_(value) {}
  template <typename Integer,
            std::enable_if_t<std::is_integral_v<Integer> && !std::is_same_v<Integer, bool>, int> = 0>
  Json(Integer value) {
    if constexpr (std::is_unsigned_v<Integer> && sizeof(Integer) >= sizeof(int64_t)) {
      if (value > static_cast<uint64_t>(INT64_MAX)) {  // too large for int64: keep it as a double
        type_ = Type::number;
        number_ = static_cast<double>(value);
        return;
      }
    }
    type_ = Type::integer;
    integer_ = static_cast<int64_t>(value);
  }
  Json(double value) : type_(Type::number), number_(value) {}
  // Stored as the double nearest to the float's shortest decimal form, so 0.1f is written 0.1.
  Json(float value) : type_(Type::number) {
    number_ = std::isfinite(value) ? std::strtod(detail::shortest_decimal(value).c_str(), nullptr)
                                   : static_cast<double>(value);
  }
  Json(const char* value) : type_(Type::string), string_(value) {}
  Json(std::string value) : type_(Type::string), string_(std::move(value)) {}
  Json(std::string_view value) : type_(Type::string), string_(value) {}
  // Any vector of things convertible to Json becomes an array.
  template <typename Element>
  Json(const std::vector<Element>& values) : type_(Type::array) {
    elements_.reserve(values.size());
    for (const auto& v : values) elements_.emplace_back(v);
  }

  static Json array(std::initializer_list<Json> values = {}) {
    Json j;
    j.type_ = Type::array;
    j.elements_.assign(values.begin(), values.end());
    return j;
  }
  static Json object() {
    Json j;
    j.type_ = Type::object;
    return j;
  }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::null; }
  bool is_object() const { return type_ == Type::object; }
  bool is_array() const { return type_ == Type::array; }
  // Elements of an array or members of an object.
  size_t size() const { return elements_.size(); }

  // Object member, created (as null) when missing; a null value becomes an empty object first.
  // Like a std::vector element, the reference is invalidated when this object gains a member.
  Json& operator[](std::string_view key) {
    if (type_ == Type::null) type_ = Type::object;
    EIGENNET_CHECK(type_ == Type::object, "Json: cannot look up key '", key, "' in a non-object value");
    for (size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] == key) return elements_[i];
    keys_.emplace_back(key);
    elements_.emplace_back();
    return elements_.back();
  }
  // Object member or nullptr.
  const Json* find(std::string_view key) const {
    if (type_ != Type::object) return nullptr;
    for (size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] == key) return &elements_[i];
    return nullptr;
  }
  // Array element.
  const Json& at(size_t index) const {
    EIGENNET_CHECK(type_ == Type::array && index < elements_.size(), "Json: no array element ", index);
    return elements_[index];
  }
  // Appends to an array (a null value becomes an empty array first).
  Json& push_back(Json value) {
    if (type_ == Type::null) type_ = Type::array;
    EIGENNET_CHECK(type_ == Type::array, "Json: push_back on a non-array value");
    elements_.push_back(std::move(value));
    return elements_.back();
  }

  // Object member names (parallel to the members) and array elements or member values.
  const std::vector<std::string>& keys() const { return keys_; }
  const std::vector<Json>& elements() const { return elements_; }
  bool is_string() const { return type_ == Type::string; }
  bool is_integer() const { return type_ == Type::integer; }
  bool is_number() const { return type_ == Type::integer || type_ == Type::number; }
  // "an object", "a string", ... for error messages.
  const char* type_name() const {
    switch (type_) {
      case Type::null: return "null";
      case Type::boolean: return "a boolean";
      case Type::integer: return "an integer";
      case Type::number: return "a number";
      case Type::string: return "a string";
      case Type::array: return "an array";
      case Type::object: return "an object";
    }
    return "?";
  }

  // Parses JSON text (see the top of this file); `source` names it in error messages.
  static Json parse(std::string_view text, const std::string& source, const JsonParseOptions& options);
  static Json parse(std::string_view text, const std::string& source = "JSON text");

  // Scalar accessors (for tests and callers that read back what they built).
  double as_double() const {
    if (type_ == Type::integer) return static_cast<double>(integer_);
    EIGENNET_CHECK(type_ == Type::number, "Json: value is not a number");
    return number_;
  }
  int64_t as_integer() const {
    EIGENNET_CHECK(type_ == Type::integer, "Json: value is not an integer");
    return integer_;
  }
  const std::string& as_string() const {
    EIGENNET_CHECK(type_ == Type::string, "Json: value is not a string");
    return string_;
  }
  bool as_bool() const {
    EIGENNET_CHECK(type_ == Type::boolean, "Json: value is not a boolean");
    return boolean_;
  }

  // JSON text. indent >= 0: one member per line, arrays of scalars (vectors, matrix rows) on one
  // line; indent < 0: compact, no whitespace at all.
  std::string dump(int indent = 2) const {
    std::string out;
    write(out, indent, 0);
    return out;
  }

 private:
  friend class detail::JsonReader;  // appends parsed members without a lookup per key

  bool is_scalar() const { return type_ != Type::array && type_ != Type::object; }

  void write(std::string& out, int indent, int depth) const {
    switch (type_) {
      case Type::null: out += "null"; return;
      case Type::boolean: out += boolean_ ? "true" : "false"; return;
      case Type::integer: out += std::to_string(integer_); return;
      case Type::number: out += json_number(number_); return;
      case Type::string: out += json_quote(string_); return;
      case Type::array: write_array(out, indent, depth); return;
      case Type::object: write_object(out, indent, depth); return;
    }
  }

  void write_array(std::string& out, int indent, int depth) const {
    if (elements_.empty()) {
      out += "[]";
      return;
    }
    bool all_scalars = true;
    for (const Json& e : elements_) all_scalars = all_scalars && e.is_scalar();
    const bool multiline = indent >= 0 && !all_scalars;
    out += '[';
    for (size_t i = 0; i < elements_.size(); ++i) {
      if (i) out += indent >= 0 && !multiline ? ", " : ",";
      if (multiline) newline(out, indent, depth + 1);
      elements_[i].write(out, indent, depth + 1);
    }
    if (multiline) newline(out, indent, depth);
    out += ']';
  }

  void write_object(std::string& out, int indent, int depth) const {
    if (elements_.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    for (size_t i = 0; i < elements_.size(); ++i) {
      if (i) out += ',';
      if (indent >= 0) newline(out, indent, depth + 1);
      out += json_quote(keys_[i]);
      out += indent >= 0 ? ": " : ":";
      elements_[i].write(out, indent, depth + 1);
    }
    if (indent >= 0) newline(out, indent, depth);
    out += '}';
  }

  static void newline(std::string& out, int indent, int depth) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(depth), ' ');
  }

  Type type_ = Type::null;
  bool boolean_ = false;
  int64_t integer_ = 0;
  double number_ = 0.0;
  std::string string_;
  std::vector<std::string> keys_;  // object member names, parallel to elements_
  std::vector<Json> elements_;     // array elements or object member values
};

// Limits and dialect of Json::parse.
struct JsonParseOptions {
  size_t max_values = 1'000'000;              // values in the document (memory bound)
  size_t max_top_level_members = SIZE_MAX;     // members of the top-level object
  const char* top_level_members = "members";  // what they are called in messages ("tensors")
  const char* limit_reason = "size limit";    // why max_values exists, for messages
  bool integers_only = false;                  // reject fractions, exponents and literals (safetensors)
  const char* document = "JSON";              // what the text is called in messages ("JSON header")
  const char* dialect = "JSON document";      // whose rules integers_only enforces ("safetensors header")
};

namespace detail {

// Appends the UTF-8 encoding of a code point (<= U+10FFFF, not a surrogate).
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

inline bool valid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// Recursive descent over the whole grammar; see Json::parse.
class JsonReader {
 public:
  JsonReader(std::string_view text, const std::string& source, const JsonParseOptions& options)
      : text_(text), source_(source), options_(options) {}

  Json document() {
    skip_whitespace();
    Json v = value(0);
    skip_whitespace();
    if (pos_ != text_.size()) error("unexpected data after the JSON value");
    return v;
  }

 private:
  static constexpr int max_depth = 32;

  [[noreturn]] void error(const std::string& what) const {
    fail(source_, ": invalid ", options_.document, " at byte ", pos_, ": ", what);
  }
  bool at_end() const { return pos_ >= text_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(text_[pos_]); }
  void skip_whitespace() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }
  void expect(char c) {
    if (at_end()) error(std::string("expected '") + c + "' but the text ends");
    if (peek() != static_cast<unsigned char>(c)) error(std::string("expected '") + c + "'");
    ++pos_;
  }
  // Error messages quote keys from the input: keep them short.
  static std::string quoted(const std::string& s) {
    constexpr size_t limit = 120;
    return "'" + (s.size() <= limit ? s : s.substr(0, limit) + "...") + "'";
  }

  Json value(int depth) {
    if (at_end()) error("expected a value but the text ends");
    if (++values_ > options_.max_values)
      error("more than " + std::to_string(options_.max_values) + " values (" + options_.limit_reason + ")");
    const unsigned char c = peek();
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') return Json(string());
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    if (c == 't' || c == 'f' || c == 'n') {
      if (options_.integers_only) error(std::string("true, false and null are not allowed in a ") + options_.dialect);
      for (const char* word : {"true", "false", "null"}) {
        const size_t n = std::strlen(word);
        if (text_.substr(pos_, n) == word) {
          pos_ += n;
          return word[0] == 'n' ? Json() : Json(word[0] == 't');
        }
      }
    }
    error(std::string("unexpected character '") + static_cast<char>(c) + "'");
  }

  Json object(int depth) {
    if (depth >= max_depth) error("nesting deeper than " + std::to_string(max_depth));
    Json v = Json::object();
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
      std::string key = string();
      if (!seen.insert(key).second)
        error(depth == 0 && options_.max_top_level_members != SIZE_MAX
                  ? std::string("duplicate ") + singular(options_.top_level_members) + " name " + quoted(key)
                  : "duplicate key " + quoted(key));
      if (depth == 0 && seen.size() > options_.max_top_level_members)
        error("more than " + std::to_string(options_.max_top_level_members) + " " + options_.top_level_members + " (" +
              singular(options_.top_level_members) + " count limit)");
      skip_whitespace();
      expect(':');
      skip_whitespace();
      Json member = value(depth + 1);
      v.keys_.push_back(std::move(key));
      v.elements_.push_back(std::move(member));
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
  static std::string singular(const char* plural) {
    std::string s = plural;
    if (!s.empty() && s.back() == 's') s.pop_back();
    return s;
  }

  Json array(int depth) {
    if (depth >= max_depth) error("nesting deeper than " + std::to_string(max_depth));
    Json v = Json::array();
    expect('[');
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      skip_whitespace();
      v.push_back(value(depth + 1));
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

  bool digit() const { return !at_end() && peek() >= '0' && peek() <= '9'; }

  Json number() {
    const size_t start = pos_;
    const bool negative = peek() == '-';
    if (negative) ++pos_;
    if (!digit()) error("expected a digit");
    if (peek() == '0' && pos_ + 1 < text_.size() && text_[pos_ + 1] >= '0' && text_[pos_ + 1] <= '9')
      error("leading zeros are not allowed");
    // Accumulate as a negative number: its range includes INT64_MIN.
    int64_t value = 0;
    bool overflow = false;
    while (digit()) {
      const int d = peek() - '0';
      if (value < (INT64_MIN + d) / 10) overflow = true;
      else value = value * 10 - d;
      ++pos_;
    }
    const bool fraction = !at_end() && peek() == '.';
    const bool exponent = !at_end() && (peek() == 'e' || peek() == 'E');
    if (!fraction && !exponent) {
      if (!negative && value == INT64_MIN) overflow = true;
      if (overflow) {
        pos_ = start;
        error("integer out of the 64-bit range");
      }
      return Json(negative ? value : -value);
    }
    if (options_.integers_only) error(std::string("only integers are allowed in a ") + options_.dialect);
    if (fraction) {
      ++pos_;
      if (!digit()) error("expected a digit after the decimal point");
      while (digit()) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digit()) error("expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    // The token is valid JSON, hence valid for strtod (which needs a terminated copy).
    const std::string token(text_.substr(start, pos_ - start));
    const double x = std::strtod(token.c_str(), nullptr);
    if (!std::isfinite(x)) {
      pos_ = start;
      error("number out of the double range");
    }
    return Json(x);
  }

  uint32_t hex4() {
    if (text_.size() - pos_ < 4) error("truncated \\u escape");
    uint32_t code = 0;
    for (int k = 0; k < 4; ++k) {
      const unsigned char h = static_cast<unsigned char>(text_[pos_++]);
      code <<= 4;
      if (h >= '0' && h <= '9') code |= h - '0';
      else if (h >= 'a' && h <= 'f') code |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') code |= h - 'A' + 10;
      else error("invalid hex digit in \\u escape");
    }
    return code;
  }

  std::string string() {
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
        const unsigned char e = static_cast<unsigned char>(text_[pos_++]);
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
            uint32_t code = hex4();
            if (code >= 0xDC00 && code <= 0xDFFF) error("unpaired low surrogate in \\u escape");
            if (code >= 0xD800 && code <= 0xDBFF) {
              if (text_.size() - pos_ < 2 || text_[pos_] != '\\' || text_[pos_ + 1] != 'u')
                error("high surrogate not followed by a low surrogate");
              pos_ += 2;
              const uint32_t low = hex4();
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
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const size_t n = utf8_sequence_length(text_, pos_);
      if (n == 0) error("invalid UTF-8");
      out.append(text_.substr(pos_, n));
      pos_ += n;
    }
  }

  std::string_view text_;
  const std::string& source_;
  const JsonParseOptions& options_;
  size_t pos_ = 0;
  size_t values_ = 0;
};

}  // namespace detail

inline Json Json::parse(std::string_view text, const std::string& source, const JsonParseOptions& options) {
  return detail::JsonReader(text, source, options).document();
}
inline Json Json::parse(std::string_view text, const std::string& source) {
  return parse(text, source, JsonParseOptions{});
}

// Writes `value` (pretty-printed, with a final newline) to `path` atomically. Throws Error naming
// the path when it cannot be written.
inline void save_json(const std::string& path, const Json& value, int indent = 2) {
  write_file_atomically(path, value.dump(indent) + "\n");
}

}  // namespace eigennet
