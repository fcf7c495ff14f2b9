// Safetensors I/O: bit-exact round trips, strict validation of every kind of damage, atomic
// writes, the shared ImageNet weight files, and interchange with numpy.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>

using namespace eigennet;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test case, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("eigennet_test_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A file from a header text and a data section, with a correct length prefix.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string float_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int b = 0; b < 4; ++b) out += static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  return out;
}

uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}
float from_bits(uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(), static_cast<size_t>(a.size()) * sizeof(float)) == 0);
}

// The Error message from reading `bytes` stored as a file, after checking that parsing the same
// bytes in memory fails with the same message. Empty when both succeed.
std::string read_error(const TempDir& dir, const std::string& bytes, const std::string& name = "damaged.safetensors") {
  const std::string path = dir.file(name);
  write_bytes(path, bytes);
  std::string from_disk, from_memory;
  try {
    read_safetensors(path);
  } catch (const Error& e) {
    from_disk = e.what();
  }
  try {
    parse_safetensors(bytes.data(), bytes.size(), path);
  } catch (const Error& e) {
    from_memory = e.what();
  }
  CHECK(from_disk == from_memory);
  return from_disk;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A small valid file: two tensors and metadata.
std::string small_valid_file() {
  return make_file(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[1,3],"data_offsets":[8,20]}})",
      float_bytes({1.0f, -2.0f, 3.5f, 0.25f, -0.0f}));
}

Tensor filled(const Shape& shape, float start, float step) {
  Tensor t(shape);
  for (int64_t i = 0; i < t.size(); ++i) t[i] = start + step * static_cast<float>(i);
  return t;
}

}  // namespace

TEST_CASE("safetensors round trip is bit-exact, including special values and empty tensors") {
  TempDir dir;
  const float inf = std::numeric_limits<float>::infinity();
  Tensor special(Shape{3, 4}, {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
                                from_bits(0x7F800001u) /* signaling NaN */, from_bits(0x7FC12345u) /* NaN payload */,
                                inf, -inf, from_bits(0x00000001u) /* smallest denormal */,
                                from_bits(0x807FFFFFu) /* largest negative denormal */, -0.0f,
                                std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest(),
                                std::numeric_limits<float>::min()});
  Rng rng(7);
  Tensor random(Shape{2, 3, 4, 5});
  for (int64_t i = 0; i < random.size(); ++i) random[i] = rng.normal();
  Tensor scalar(Shape{}, {42.5f});
  Tensor empty1(Shape{0});
  Tensor empty2(Shape{3, 0, 2});
  Tensor rank6 = filled(Shape{1, 2, 1, 2, 1, 2}, -1.0f, 0.125f);
  const std::vector<TensorRef> written = {{"special", &special}, {"block_1/random", &random}, {"empty", &empty1},
                                          {"scalar", &scalar},   {"empty/3x0x2", &empty2},   {"rank6", &rank6}};
  const std::string path = dir.file("round_trip.safetensors");
  write_safetensors(path, written, {{"writer", "eigennet"}});

  const SafetensorsFile file = read_safetensors(path);
  REQUIRE(file.tensors.size() == written.size());
  for (size_t i = 0; i < written.size(); ++i) {
    CAPTURE(written[i].name);
    CHECK(file.tensors[i].name == written[i].name);  // header order is kept
    CHECK(file.tensors[i].dtype == "F32");
    CHECK(bit_equal(file.tensors[i].tensor, *written[i].tensor));
  }
  CHECK(file.at("scalar").rank() == 0);
  CHECK(file.at("empty/3x0x2").shape() == Shape{3, 0, 2});
  CHECK(file.total_elements() == 12 + 120 + 0 + 1 + 0 + 8);
  CHECK(file.find("missing") == nullptr);
  CHECK_THROWS_WITH_AS(file.at("missing"), doctest::Contains("no tensor named 'missing'"), Error);

  // Layout: header length a multiple of 8 (padded with spaces), data little-endian and contiguous.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(i)]);
  CHECK(n % 8 == 0);
  const std::string header = bytes.substr(8, n);
  CHECK(header.find_last_not_of(' ') == header.find_last_of('}'));
  CHECK(bytes.size() == 8 + n + (12 + 120 + 1 + 8) * 4);
  const std::string first_floats = bytes.substr(8 + n, 8);
  CHECK(first_floats.substr(0, 4) == float_bytes({special[0]}));
  CHECK(first_floats.substr(4, 4) == float_bytes({special[1]}));

  // The same bytes parse identically from memory.
  const SafetensorsFile in_memory = parse_safetensors(bytes.data(), bytes.size(), "copy");
  REQUIRE(in_memory.tensors.size() == written.size());
  for (size_t i = 0; i < written.size(); ++i) CHECK(bit_equal(in_memory.tensors[i].tensor, *written[i].tensor));

  // A file with no tensors and no metadata is valid too.
  write_safetensors(dir.file("nothing.safetensors"), std::vector<TensorRef>{});
  const SafetensorsFile nothing = read_safetensors(dir.file("nothing.safetensors"));
  CHECK(nothing.tensors.empty());
  CHECK(nothing.metadata.empty());
  CHECK(read_bytes(dir.file("nothing.safetensors")).size() == 16);
}

TEST_CASE("safetensors metadata and names round trip through JSON escapes") {
  TempDir dir;
  const std::map<std::string, std::string> metadata = {
      {"alpha", "0.35"},
      {"quote\"and\\backslash", "tab\there, newline\nthere, bell\a, nul-free \x01 control"},
      {"unicode", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"},  // café € 😀
      {"empty", ""},
      {"", "empty key"}};
  Tensor t = filled(Shape{2, 2}, 1.0f, 1.0f);
  const std::string odd_name = "na\"me/with\\escapes\n\xC3\xA9";
  write_safetensors(dir.file("meta.safetensors"), std::vector<TensorRef>{{odd_name, &t}}, metadata);
  const SafetensorsFile file = read_safetensors(dir.file("meta.safetensors"));
  CHECK(file.metadata == metadata);
  CHECK(file.metadata_at("alpha") == "0.35");
  CHECK_THROWS_WITH_AS(file.metadata_at("beta"), doctest::Contains("no metadata key 'beta'"), Error);
  REQUIRE(file.tensors.size() == 1);
  CHECK(file.tensors[0].name == odd_name);
  CHECK(bit_equal(file.tensors[0].tensor, t));

  // \uXXXX escapes as Python's json.dumps writes them, including a surrogate pair.
  const std::string header =
      R"({"__metadata__":{"k\u00e9y":"\ud83d\ude00 \u20ac \/ \b\f\r"},"\u0041b":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  const std::string bytes = make_file(header, float_bytes({3.0f}));
  const SafetensorsFile escaped = parse_safetensors(bytes.data(), bytes.size());
  CHECK(escaped.metadata.at("k\xC3\xA9y") == "\xF0\x9F\x98\x80 \xE2\x82\xAC / \b\f\r");
  CHECK(escaped.at("Ab")[0] == 3.0f);
}

TEST_CASE("safetensors reads F16, BF16 and F64 as float32 and rejects other dtypes by name") {
  TempDir dir;
  // F16: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), 2^-14 (smallest normal), inf, NaN, -0.
  std::string f16;
  for (uint16_t h : {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x7E00, 0x8000}) {
    f16 += static_cast<char>(h & 0xFF);
    f16 += static_cast<char>(h >> 8);
  }
  // BF16: 1, -3.140625.
  const std::string bf16 = std::string("\x80\x3F\x49\xC0", 4);
  // F64: 0.1 and 1e300 (overflows float32 to inf).
  std::string f64;
  for (double d : {0.1, 1e300}) {
    uint64_t bits;
    std::memcpy(&bits, &d, 8);
    for (int b = 0; b < 8; ++b) f64 += static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  const std::string header = R"({"h":{"dtype":"F16","shape":[8],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},)"
                             R"("d":{"dtype":"F64","shape":[2],"data_offsets":[20,36]}})";
  const std::string bytes = make_file(header, f16 + bf16 + f64);
  const std::string path = dir.file("dtypes.safetensors");
  write_bytes(path, bytes);
  const SafetensorsFile file = read_safetensors(path);
  const Tensor& h = file.at("h");
  CHECK(h[0] == 1.0f);
  CHECK(h[1] == -2.0f);
  CHECK(h[2] == 65504.0f);
  CHECK(h[3] == std::ldexp(1.0f, -24));
  CHECK(h[4] == std::ldexp(1.0f, -14));
  CHECK(h[5] == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(h[6]));
  CHECK(bits_of(h[7]) == 0x80000000u);
  CHECK(file.tensors[0].dtype == "F16");
  CHECK(file.at("b")[0] == 1.0f);
  CHECK(file.at("b")[1] == -3.140625f);
  CHECK(file.at("d")[0] == 0.1f);
  CHECK(file.at("d")[1] == std::numeric_limits<float>::infinity());

  const std::string ints = make_file(R"({"steps":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                                     std::string("\1\0\0\0", 4));
  const std::string message = read_error(dir, ints);
  CHECK(contains(message, "'steps'"));
  CHECK(contains(message, "dtype I32 is not supported"));
}

TEST_CASE("safetensors rejects every kind of damaged file with a message naming file, tensor and problem") {
  TempDir dir;
  const std::string path = dir.file("damaged.safetensors");
  const std::string four = float_bytes({1, 2, 3, 4, 5, 6});  // 24 bytes
  struct Case {
    const char* what;
    std::string bytes;
    std::vector<std::string> expected;  // substrings besides the path
  };
  auto entry = [](const std::string& name, const std::string& body) { return "\"" + name + "\":" + body; };
  const std::string ok_w = entry("w", R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})");
  std::string huge_prefix(8, '\0');
  huge_prefix[3] = 0x10;  // 0x10000000 = 268 MB > 100 MB
  std::string long_prefix(8, '\0');
  long_prefix[0] = 100;  // 100 bytes, but the file ends sooner

  const std::vector<Case> cases = {
      {"empty file", "", {"0 bytes, shorter than the 8-byte header length"}},
      {"7 bytes", std::string(7, '\0'), {"7 bytes, shorter than the 8-byte header length"}},
      {"header length beyond the file", long_prefix + "{}", {"header length 100 exceeds the 2 bytes"}},
      {"header length beyond 100 MB", huge_prefix + "{}", {"exceeds the limit of 100000000 bytes"}},
      {"invalid JSON", make_file(R"({"w":{"dtype":"F32",)", ""), {"invalid JSON"}},
      {"JSON float", make_file(R"({"w":{"dtype":"F32","shape":[2.0,3],"data_offsets":[0,24]}})", four),
       {"invalid JSON", "only integers"}},
      {"JSON literal", make_file(R"({"w":null})", ""), {"invalid JSON", "true, false and null"}},
      {"JSON leading zero", make_file(R"({"w":{"dtype":"F32","shape":[02,3],"data_offsets":[0,24]}})", four),
       {"leading zeros"}},
      {"JSON integer overflow",
       make_file(R"({"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,24]}})", four),
       {"out of the 64-bit range"}},
      {"JSON trailing data", make_file("{" + ok_w + "}x", four), {"unexpected data after the JSON value"}},
      {"JSON lone surrogate", make_file(R"({"\udc00":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", ""),
       {"surrogate"}},
      {"JSON invalid UTF-8", make_file("{\"\xC3\x28\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", ""),
       {"invalid UTF-8"}},
      {"JSON deep nesting", make_file(R"({"__metadata__":)" + std::string(40, '[') + std::string(40, ']') + "}", ""),
       {"nesting deeper"}},
      {"header not an object", make_file("[]", ""), {"header must be a JSON object"}},
      {"entry not an object", make_file(R"({"w":[1,2]})", ""), {"'w'", "entry must be an object"}},
      {"metadata not strings", make_file(R"({"__metadata__":{"alpha":1}})", ""), {"'alpha'", "must be a string"}},
      {"missing key", make_file(R"({"w":{"dtype":"F32","shape":[2,3]}})", four), {"'w'", "missing key 'data_offsets'"}},
      {"extra key",
       make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24],"stride":[3,1]}})", four),
       {"'w'", "unexpected key 'stride'"}},
      {"unknown dtype", make_file(R"({"w":{"dtype":"F33","shape":[2,3],"data_offsets":[0,24]}})", four),
       {"'w'", "unknown dtype 'F33'"}},
      {"negative shape", make_file(R"({"w":{"dtype":"F32","shape":[-2,-3],"data_offsets":[0,24]}})", four),
       {"'w'", "negative dimension -2"}},
      {"overflowing shape",
       make_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,24]}})", four),
       {"'w'", "element count of the shape overflows"}},
      {"overflowing byte count",
       make_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,24]}})", four),
       {"'w'", "overflows"}},
      {"rank above 6", make_file(R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,6],"data_offsets":[0,24]}})", four),
       {"'w'", "rank 7 exceeds"}},
      {"shape not integers", make_file(R"({"w":{"dtype":"F32","shape":["2",3],"data_offsets":[0,24]}})", four),
       {"'w'", "'shape' must be an array of integers"}},
      {"three offsets", make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24,48]}})", four),
       {"'w'", "must hold 2 integers"}},
      {"wrong byte count", make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", four),
       {"'w'", "span 20 bytes but dtype F32 and shape [2, 3] need 24 bytes"}},
      {"end before begin", make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[24,0]}})", four),
       {"'w'", "end 0 is before begin 24"}},
      {"offsets outside the data section",
       make_file(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}})", four),
       {"'w'", "lie outside the data section of 24 bytes"}},
      {"overlapping tensors",
       make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                 R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                 four),
       {"'a'", "'b'", "overlap"}},
      {"duplicate names",
       make_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                 R"("w":{"dtype":"F32","shape":[3],"data_offsets":[12,24]}})",
                 four),
       {"duplicate tensor name 'w'"}},
      {"gap between tensors",
       make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                 four),
       {"'b'", "bytes [8, 16)", "not covered by any tensor"}},
      {"trailing uncovered bytes", make_file(R"({"w":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}})", four),
       {"bytes [20, 24)", "not covered by any tensor"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string message = read_error(dir, c.bytes);
    CAPTURE(message);
    CHECK(contains(message, "safetensors file '" + path + "'"));
    for (const std::string& part : c.expected) CHECK(contains(message, part));
  }

  // Tensor count limit: 100,001 empty tensors (parsed in memory only: it takes a while).
  std::string many = "{";
  for (size_t i = 0; i <= safetensors_max_tensors; ++i)
    many += (i ? ",\"t" : "\"t") + std::to_string(i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
  many += "}";
  const std::string too_many = make_file(many, "");
  CHECK_THROWS_WITH_AS(parse_safetensors(too_many.data(), too_many.size(), path),
                       doctest::Contains("more than 100000 tensors (tensor count limit)"), Error);

  // A missing file and a directory.
  CHECK_THROWS_WITH_AS(read_safetensors(dir.file("absent.safetensors")), doctest::Contains("cannot open"), Error);
  CHECK_THROWS_WITH_AS(read_safetensors(dir.path.string()), doctest::Contains("not a regular file"), Error);
}

TEST_CASE("safetensors rejects every truncation of a valid file, and survives byte damage") {
  TempDir dir;
  const std::string valid = small_valid_file();
  const SafetensorsFile whole = parse_safetensors(valid.data(), valid.size());
  REQUIRE(whole.tensors.size() == 2);
  CHECK(whole.at("b")[1] == 0.25f);
  CHECK(bits_of(whole.at("b")[2]) == 0x80000000u);
  for (size_t length = 0; length < valid.size(); ++length) {
    CAPTURE(length);
    const std::string message = read_error(dir, valid.substr(0, length));
    CHECK(contains(message, "damaged.safetensors"));
    // Reading the metadata alone refuses it too: the header says where every tensor ends.
    CHECK_THROWS_WITH_AS(read_safetensors_metadata(dir.file("damaged.safetensors")),
                         doctest::Contains("damaged.safetensors"), Error);
  }
  write_bytes(dir.file("valid.safetensors"), valid);
  CHECK(read_safetensors_metadata(dir.file("valid.safetensors")) == whole.metadata);
  CHECK(whole.metadata.at("format") == "pt");
  // Every byte replaced by a few troublesome values: each result is a clean parse or an Error.
  int parsed = 0, rejected = 0;
  for (size_t i = 0; i < valid.size(); ++i)
    for (const char replacement : {'\0', '\xFF', '"', '{', '}', '9', '-', ' ', '\\', ','}) {
      std::string damaged = valid;
      damaged[i] = replacement;
      try {
        parse_safetensors(damaged.data(), damaged.size());
        ++parsed;
      } catch (const Error&) {
        ++rejected;
      }
    }
  CHECK(rejected > 0);
  CHECK(parsed > 0);  // e.g. damaged float data, or a space for a space
}

TEST_CASE("safetensors write validates names") {
  TempDir dir;
  Tensor t(Shape{2});
  const std::string path = dir.file("names.safetensors");
  CHECK_THROWS_WITH_AS(write_safetensors(path, std::vector<TensorRef>{{"a", &t}, {"a", &t}}),
                       doctest::Contains("duplicate tensor name 'a'"), Error);
  CHECK_THROWS_WITH_AS(write_safetensors(path, std::vector<TensorRef>{{"", &t}}), doctest::Contains("empty"), Error);
  CHECK_THROWS_WITH_AS(write_safetensors(path, std::vector<TensorRef>{{"__metadata__", &t}}),
                       doctest::Contains("reserved"), Error);
  CHECK_THROWS_WITH_AS(write_safetensors(path, std::vector<TensorRef>{{"bad\xFF", &t}}),
                       doctest::Contains("not valid UTF-8"), Error);
  CHECK_THROWS_WITH_AS(write_safetensors(path, std::vector<TensorRef>{{"null", nullptr}}),
                       doctest::Contains("'null' is null"), Error);
  CHECK_FALSE(fs::exists(path));
  CHECK_THROWS_WITH_AS(write_safetensors(dir.file("no/such/dir/x.safetensors"), std::vector<TensorRef>{{"a", &t}}),
                       doctest::Contains("cannot create the temporary file"), Error);
}

TEST_CASE("safetensors writes atomically: a failed write leaves the old file untouched") {
  TempDir dir;
  const fs::path sub = dir.path / "readonly";
  fs::create_directories(sub);
  const std::string path = (sub / "weights.safetensors").string();
  Tensor old_tensor = filled(Shape{4}, 1.0f, 1.0f);
  write_safetensors(path, std::vector<TensorRef>{{"w", &old_tensor}}, {{"version", "old"}});
  const std::string old_bytes = read_bytes(path);
  Tensor new_tensor = filled(Shape{64, 256}, -1.0f, 0.5f);  // 64 KB
  auto no_temp_files = [&] {
    for (const auto& e : fs::directory_iterator(sub))
      if (e.path().filename() != "weights.safetensors") return false;
    return true;
  };

  SUBCASE("overwriting succeeds and leaves no temporary file") {
    write_safetensors(path, std::vector<TensorRef>{{"w", &new_tensor}}, {{"version", "new"}});
    const SafetensorsFile file = read_safetensors(path);
    CHECK(file.metadata.at("version") == "new");
    CHECK(bit_equal(file.at("w"), new_tensor));
    CHECK(no_temp_files());
  }

  SUBCASE("a read-only directory") {
    fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                             fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    // Root ignores directory permissions: run the write in a child that drops to 'nobody'.
    const bool root = ::geteuid() == 0;
    fs::permissions(dir.path, fs::perms::others_exec | fs::perms::others_read, fs::perm_options::add);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      if (root && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
      try {
        write_safetensors(path, std::vector<TensorRef>{{"w", &new_tensor}});
      } catch (const Error& e) {
        ::_exit(contains(e.what(), "cannot create the temporary file") && contains(e.what(), path) ? 0 : 1);
      }
      ::_exit(2);  // the write succeeded
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 3) {
      MESSAGE("skipped: cannot drop root privileges to test a read-only directory");
    } else {
      CHECK(WEXITSTATUS(status) == 0);
      CHECK(read_bytes(path) == old_bytes);
      CHECK(no_temp_files());
    }
    fs::permissions(sub, fs::perms::owner_all, fs::perm_options::add);  // so that TempDir can clean up
  }

  SUBCASE("a write that fails midway (file size limit)") {
    // RLIMIT_FSIZE makes write() fail with EFBIG after 4 KB, as a full disk would.
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    struct rlimit limited = saved;
    limited.rlim_cur = 4096;
    auto previous_handler = ::signal(SIGXFSZ, SIG_IGN);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
    std::string message;
    try {
      write_safetensors(path, std::vector<TensorRef>{{"w", &new_tensor}});
    } catch (const Error& e) {
      message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    ::signal(SIGXFSZ, previous_handler);
    CHECK(contains(message, "write failed"));
    CHECK(read_bytes(path) == old_bytes);
    CHECK(no_temp_files());
  }
}

TEST_CASE("the shared MobileNetV2 weight files load with the documented tensors") {
  const fs::path weights = fs::path(EIGENNET_SHARED_DIR) / "weights";
  if (!fs::exists(weights)) {
    MESSAGE("skipped: " << weights.string() << " is absent");
    return;
  }
  struct Expected {
    const char* file;
    size_t tensors;
    int64_t floats;
    const char* alpha;
    int64_t conv1_filters;
  };
  for (const Expected& e : {Expected{"mobilenetv2_1.0_224_imagenet_notop_bnfolded.safetensors", 104, 2206816, "1.0", 32},
                            Expected{"mobilenetv2_0.35_224_imagenet_notop.safetensors", 260, 410208, "0.35", 16}}) {
    CAPTURE(e.file);
    const SafetensorsFile file = read_safetensors((weights / e.file).string());
    CHECK(file.tensors.size() == e.tensors);
    CHECK(file.total_elements() == e.floats);
    CHECK(file.metadata_at("alpha") == e.alpha);
    CHECK(file.metadata_at("padding") == "tf_same");
    CHECK(file.at("Conv1/kernel").shape() == Shape{3, 3, 3, e.conv1_filters});
    CHECK(file.at("Conv_1/kernel").shape()[3] == 1280);  // the last 1x1 convolution keeps 1280 filters
    int depthwise = 0, pointwise = 0;
    bool finite = true;
    for (const NamedTensor& t : file.tensors) {
      CHECK(t.dtype == "F32");
      for (int64_t i = 0; i < t.tensor.size(); ++i) finite &= std::isfinite(t.tensor[i]);
      const std::string& n = t.name;
      if (n.size() > 17 && n.compare(n.size() - 17, 17, "/depthwise_kernel") == 0) {
        CAPTURE(n);
        CHECK(t.tensor.rank() == 4);
        CHECK(t.tensor.dim(0) == 3);
        CHECK(t.tensor.dim(1) == 3);
        CHECK(t.tensor.dim(3) == 1);
        ++depthwise;
      } else if (n.size() > 7 && n.compare(n.size() - 7, 7, "/kernel") == 0 && n != "Conv1/kernel") {
        CAPTURE(n);
        CHECK(t.tensor.shape()[0] == 1);  // every other convolution is 1x1
        CHECK(t.tensor.shape()[1] == 1);
        ++pointwise;
      }
    }
    CHECK(finite);
    CHECK(depthwise == 17);           // one per inverted residual block
    CHECK(pointwise == 16 + 17 + 1);  // expand (blocks 1-16), project (all 17), Conv_1
  }
  const SafetensorsFile folded =
      read_safetensors((weights / "mobilenetv2_1.0_224_imagenet_notop_bnfolded.safetensors").string());
  CHECK(folded.at("block_3_depthwise/depthwise_kernel").shape() == Shape{3, 3, 144, 1});
  CHECK(folded.at("Conv_1/kernel").shape() == Shape{1, 1, 320, 1280});
  CHECK(folded.at("Conv1/bias").shape() == Shape{32});
  const SafetensorsFile small = read_safetensors((weights / "mobilenetv2_0.35_224_imagenet_notop.safetensors").string());
  const Tensor& variance = small.at("bn_Conv1/moving_variance");
  CHECK(variance.shape() == Shape{16});
  for (int64_t i = 0; i < variance.size(); ++i) CHECK(variance[i] > 0.0f);
  CHECK(small.at("Conv_1_bn/gamma").shape() == Shape{1280});

  // Writing a real file and reading it back is bit-exact.
  TempDir dir;
  write_safetensors(dir.file("copy.safetensors"), folded);
  const SafetensorsFile copy = read_safetensors(dir.file("copy.safetensors"));
  CHECK(copy.metadata == folded.metadata);
  REQUIRE(copy.tensors.size() == folded.tensors.size());
  bool same = true;
  for (size_t i = 0; i < copy.tensors.size(); ++i)
    same &= copy.tensors[i].name == folded.tensors[i].name && bit_equal(copy.tensors[i].tensor, folded.tensors[i].tensor);
  CHECK(same);
}

TEST_CASE("numpy reads files written by eigennet (optional: needs /usr/bin/python3 with numpy)") {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
    MESSAGE("skipped: /usr/bin/python3 with numpy is not available");
    return;
  }
  TempDir dir;
  Rng rng(3);
  Tensor a(Shape{3, 5, 7});
  for (int64_t i = 0; i < a.size(); ++i) a[i] = rng.normal() * 100.0f;
  Tensor tiny(Shape{5}, {from_bits(1), -from_bits(0x00400000u), 1e-30f, -0.0f, 3.0f});  // denormals double exactly
  Tensor empty(Shape{2, 0});
  Tensor scalar(Shape{}, {-7.25f});
  const std::vector<TensorRef> tensors = {
      {"a", &a}, {"tiny", &tiny}, {"empty", &empty}, {"scalar", &scalar}, {"caf\xC3\xA9/\xF0\x9F\x98\x80", &a}};
  const std::string in = dir.file("from_eigennet.safetensors"), out = dir.file("from_numpy.safetensors");
  write_safetensors(in, tensors, {{"writer", "eigennet"}, {"note", "caf\xC3\xA9"}});
  const std::string script = std::string(EIGENNET_FIXTURES_DIR) + "/make_fixtures.py";
  const std::string command = "/usr/bin/python3 '" + script + "' --roundtrip '" + in + "' '" + out + "'";
  REQUIRE(std::system(command.c_str()) == 0);

  const SafetensorsFile back = read_safetensors(out);  // written by numpy, \u-escaped by json.dumps
  CHECK(back.metadata.at("writer") == "eigennet");
  CHECK(back.metadata.at("note") == "caf\xC3\xA9");
  CHECK(back.metadata.at("tensor_count") == "5");
  CHECK(contains(back.metadata.at("checked_by"), "numpy"));
  REQUIRE(back.tensors.size() == tensors.size());
  for (const TensorRef& t : tensors) {
    CAPTURE(t.name);
    const Tensor& doubled = back.at("doubled/" + t.name);
    REQUIRE(doubled.shape() == t.tensor->shape());
    bool exact = true;
    for (int64_t i = 0; i < doubled.size(); ++i) exact &= bits_of(doubled[i]) == bits_of(2.0f * (*t.tensor)[i]);
    CHECK(exact);
  }
}
