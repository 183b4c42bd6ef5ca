// Minimal .npy (format 1.0-3.0) reading and writing for ek-run: little-endian f32, i64, i32,
// i8 and u8, C order. The header is parsed strictly (its dict must hold exactly descr,
// fortran_order False and a shape tuple) and the data length must match it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "edgekit/status.h"

namespace edgekit::tools {

struct NpyArray {
  std::string dtype;  // "f32", "i64", "i32", "i8", "u8" (the runtime's names)
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

Status read_npy(const std::string& path, NpyArray* out);
// Written to a temp file beside `path`, then renamed: never a half-written .npy.
Status write_npy(const std::string& path, const std::string& dtype, const std::vector<int64_t>& shape,
                 const void* data, size_t bytes);

}  // namespace edgekit::tools
