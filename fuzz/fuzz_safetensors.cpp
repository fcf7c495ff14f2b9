// libFuzzer harness: arbitrary bytes -> parse_safetensors (the in-memory reader; read_safetensors
// shares its header parser and validation).
//
// Rejecting the input with eigennet::Error is the expected outcome for almost every input.
// Anything else is a finding: a crash or sanitizer report, another exception type (it escapes
// and aborts), a hang, an allocation beyond -malloc_limit_mb, or an accepted file that breaks
// the reader's own guarantees (checked below, violations abort).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <eigennet/io/safetensors.hpp>

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: accepted file violates: %s\n", what);
  std::abort();
}

// What a successfully parsed file promises its users.
void check_accepted(const eigennet::SafetensorsFile& file, size_t input_size) {
  namespace st = eigennet::detail::safetensors;
  uint64_t file_bytes = 0;
  for (const eigennet::NamedTensor& t : file.tensors) {
    if (t.name == "__metadata__") violated("a tensor named __metadata__");
    if (!eigennet::detail::valid_utf8(t.name)) violated("a tensor name that is not valid UTF-8");
    if (!st::convertible_to_float(t.dtype)) violated("a tensor of a dtype the reader does not convert");
    if (t.tensor.size() != t.tensor.shape().elements()) violated("tensor size differs from its shape");
    file_bytes += static_cast<uint64_t>(t.tensor.size()) * static_cast<uint64_t>(st::dtype_size(t.dtype));
  }
  if (file_bytes > input_size) violated("tensors hold more bytes than the input");
  for (const auto& [key, value] : file.metadata)
    if (!eigennet::detail::valid_utf8(key) || !eigennet::detail::valid_utf8(value)) violated("metadata that is not valid UTF-8");
  if (file.tensors.size() > eigennet::safetensors_max_tensors) violated("more tensors than the limit");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const eigennet::SafetensorsFile file = eigennet::parse_safetensors(data, size, "fuzz-input");
    check_accepted(file, size);
  } catch (const eigennet::Error& e) {
    if (std::string(e.what()).find("fuzz-input") == std::string::npos) violated("an Error that does not name the file");
  }
  return 0;
}
