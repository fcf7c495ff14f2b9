// NumPy .npy files (format version 1.0) for float32 arrays: what extract_features writes, so
// features load in Python with numpy.load.
#pragma once

#include <string>

#include "../core/tensor.hpp"
#include "atomic_file.hpp"

namespace eigennet {

// Writes `t` as a little-endian float32 .npy array with t's shape, atomically.
inline void save_npy(const std::string& path, const Tensor& t) {
  // Python tuple syntax: (), (n,), (n, c), ...
  std::string shape = "(";
  for (int i = 0; i < t.rank(); ++i) shape += (i ? ", " : "") + std::to_string(t.dim(i));
  shape += t.rank() == 1 ? ",)" : ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // magic (6) + version (2) + header length (2) + header, padded with spaces and a final
  // newline to a multiple of 64 bytes so the data is aligned.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(header.size() & 0xFF);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(t.data()), static_cast<size_t>(t.size()) * sizeof(float));
  write_file_atomically(path, bytes);
}

}  // namespace eigennet
