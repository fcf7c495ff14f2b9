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
#include "json.hpp"

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

// Error messages quote names from the file: keep them short.
inline std::string quote_name(const std::string& s) {
  constexpr size_t limit = 120;
  return "'" + (s.size() <= limit ? s : s.substr(0, limit) + "...") + "'";
}

// The JSON subset a safetensors header needs: objects, arrays, strings and integers; floats,
// true, false and null are rejected, as are duplicate names, invalid UTF-8, nesting deeper than
// 32 and more values than the header size limit allows.
inline JsonParseOptions header_json_options() {
  JsonParseOptions o;
  o.max_values = safetensors_max_header_values;
  o.max_top_level_members = safetensors_max_tensors + 1;  // + __metadata__
  o.top_level_members = "tensors";
  o.limit_reason = "header size limit";
  o.integers_only = true;
  o.document = "JSON header";
  o.dialect = "safetensors header";
  return o;
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

inline std::vector<int64_t> integers(const Json& v, const std::string& where, const std::string& key) {
  if (!v.is_array()) fail(where, ": '", key, "' must be an array of integers, got ", v.type_name());
  std::vector<int64_t> out;
  for (const Json& item : v.elements()) {
    if (!item.is_integer()) fail(where, ": '", key, "' must be an array of integers, found ", item.type_name());
    out.push_back(item.as_integer());
  }
  return out;
}

inline Entry parse_entry(const std::string& name, const Json& v, const std::string& file) {
  const std::string where = file + ": tensor " + quote_name(name);
  if (!v.is_object()) fail(where, ": entry must be an object, got ", v.type_name());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.find(key)) fail(where, ": missing key '", key, "'");
  for (const std::string& key : v.keys())
    if (key != "dtype" && key != "shape" && key != "data_offsets") fail(where, ": unexpected key ", quote_name(key));
  Entry e;
  e.name = name;
  const Json& dtype = *v.find("dtype");
  if (!dtype.is_string()) fail(where, ": 'dtype' must be a string, got ", dtype.type_name());
  e.dtype = dtype.as_string();
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
  const Json root = Json::parse(std::string_view(json, size), file, header_json_options());
  if (!root.is_object()) fail(file, ": the header must be a JSON object, got ", root.type_name());
  Header header;
  for (size_t i = 0; i < root.keys().size(); ++i) {
    const std::string& name = root.keys()[i];
    const Json& value = root.elements()[i];
    if (name == "__metadata__") {
      if (!value.is_object()) fail(file, ": __metadata__ must be an object, got ", value.type_name());
      for (size_t k = 0; k < value.keys().size(); ++k) {
        const Json& item = value.elements()[k];
        if (!item.is_string())
          fail(file, ": __metadata__ value for key ", quote_name(value.keys()[k]), " must be a string, got ",
               item.type_name());
        header.metadata[value.keys()[k]] = item.as_string();
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
      prefault_for_writing(t.tensor.data(), static_cast<size_t>(t.tensor.size()) * sizeof(float));
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

namespace detail::safetensors {

// Reads and validates the header of an open file; data_start is set to the offset of its data.
inline Header read_header(int fd, const std::string& file, uint64_t& data_start) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) fail(file, ": cannot stat: ", std::strerror(errno));
  if (!S_ISREG(info.st_mode)) fail(file, ": not a regular file");
  const auto size = static_cast<uint64_t>(info.st_size);
  if (size < 8) fail(file, ": the file is ", size, " bytes, shorter than the 8-byte header length");
  unsigned char prefix[8];
  read_exactly(fd, prefix, 8, 0, file);
  const uint64_t header_size = check_prefix(prefix, size, file);
  std::string json(static_cast<size_t>(header_size), '\0');
  read_exactly(fd, reinterpret_cast<unsigned char*>(json.data()), header_size, 8, file);
  data_start = 8 + header_size;
  return parse_header(json.data(), json.size(), size - 8 - header_size, file);
}

}  // namespace detail::safetensors

// Reads a safetensors file from disk.
inline SafetensorsFile read_safetensors(const std::string& path) {
  namespace st = detail::safetensors;
  const std::string file = st::file_label(path);
  st::FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) fail(file, ": cannot open: ", std::strerror(errno));
  uint64_t data_start = 0;
  const st::Header header = st::read_header(fd.fd, file, data_start);
  return st::load(header, path, file, [&](uint64_t offset, uint64_t n, unsigned char* dst) {
    st::read_exactly(fd.fd, dst, n, data_start + offset, file);
  });
}

// The metadata of a safetensors file, without reading its tensors: the header only, checked as
// read_safetensors checks it (so a file whose tensors would not fit in it is refused here too).
inline std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  namespace st = detail::safetensors;
  const std::string file = st::file_label(path);
  st::FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) fail(file, ": cannot open: ", std::strerror(errno));
  uint64_t data_start = 0;
  return st::read_header(fd.fd, file, data_start).metadata;
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
    EIGENNET_CHECK(detail::valid_utf8(t.name), file, ": tensor name ", st::quote_name(t.name), " is not valid UTF-8");
    EIGENNET_CHECK(t.tensor != nullptr, file, ": tensor ", st::quote_name(t.name), " is null");
    EIGENNET_CHECK(names.insert(t.name).second, file, ": duplicate tensor name ", st::quote_name(t.name));
  }
  for (const auto& [key, value] : metadata)
    EIGENNET_CHECK(detail::valid_utf8(key) && detail::valid_utf8(value), file, ": metadata key ", st::quote_name(key),
                   " or its value is not valid UTF-8");

  std::string json = "{";
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) json += ',';
      first = false;
      json += json_quote(key);
      json += ':';
      json += json_quote(value);
    }
    json += '}';
  }
  uint64_t offset = 0;
  for (const TensorRef& t : tensors) {
    if (json.size() > 1) json += ',';
    json += json_quote(t.name);
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
