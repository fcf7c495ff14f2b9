// Json: a small JSON value for writing reports (metrics, training summaries, configs). Objects
// keep insertion order, so files read in the order they were built. It writes; it does not parse.
//
//   Json report = metrics_to_json(metrics);       // or Json::object()
//   report["train_seconds"] = 812.5;
//   report["config"]["learning_rate"] = 1e-3f;    // nested objects are created on first use
//   save_json("runs/metrics.json", report);
//
// Numbers: integers are written exactly; doubles in the shortest form that reads back to the same
// double; floats in the shortest form that reads back to the same float (0.1f is written 0.1).
// NaN and infinities have no JSON form and are written as null. Strings are escaped (quotes,
// backslashes, control characters); invalid UTF-8 bytes become U+FFFD so the output stays valid.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
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

// A double as a JSON number; NaN and infinities (which JSON cannot represent) as null.
inline std::string json_number(double value) {
  if (!std::isfinite(value)) return "null";
  return detail::shortest_decimal(value);
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

// Writes `value` (pretty-printed, with a final newline) to `path` atomically. Throws Error naming
// the path when it cannot be written.
inline void save_json(const std::string& path, const Json& value, int indent = 2) {
  write_file_atomically(path, value.dump(indent) + "\n");
}

}  // namespace eigennet
