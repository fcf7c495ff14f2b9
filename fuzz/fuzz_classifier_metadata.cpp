// libFuzzer harness: arbitrary bytes -> parse_safetensors -> load_classifier, i.e. the metadata
// of a model file (architecture, alpha, input size, head, class names) turned into a model.
//
// The seeds are small files with valid classifier metadata and the head's kernels but no base
// weights, so that mutations explore the metadata checks, the head-size checks against the
// file, and the model construction and parameter loading that follow. eigennet::Error is the
// expected outcome; a crash, sanitizer report (e.g. an out-of-range number cast), another
// exception type, a hang or an allocation beyond -malloc_limit_mb is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <eigennet/io/safetensors.hpp>
#include <eigennet/models/classifier_io.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    eigennet::SafetensorsFile file = eigennet::parse_safetensors(data, size, "fuzz-input");
    const eigennet::LoadedClassifier loaded = eigennet::load_classifier(std::move(file));
    if (!loaded.model || loaded.model->classes() != static_cast<int64_t>(loaded.spec.class_names.size())) {
      std::fprintf(stderr, "fuzz_classifier_metadata: loaded model does not match its spec\n");
      std::abort();
    }
  } catch (const eigennet::Error&) {
  }
  return 0;
}
