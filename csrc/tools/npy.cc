#include "tools/npy.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

namespace edgekit::tools {
namespace {

struct Descr {
  const char* npy;
  const char* dtype;
  size_t size;
};
constexpr Descr kDescr[] = {{"<f4", "f32", 4}, {"<i8", "i64", 8}, {"<i4", "i32", 4},
                            {"|i1", "i8", 1},  {"|u1", "u8", 1}};

void skip_ws(const std::string& s, size_t* i) {
  while (*i < s.size() && (s[*i] == ' ' || s[*i] == '\n')) ++*i;
}

bool quoted(const std::string& s, size_t* i, std::string* out) {
  skip_ws(s, i);
  if (*i >= s.size() || (s[*i] != '\'' && s[*i] != '"')) return false;
  char q = s[(*i)++];
  size_t end = s.find(q, *i);
  if (end == std::string::npos) return false;
  *out = s.substr(*i, end - *i);
  *i = end + 1;
  return true;
}

bool expect(const std::string& s, size_t* i, char c) {
  skip_ws(s, i);
  if (*i < s.size() && s[*i] == c) return ++*i, true;
  return false;
}

// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } in any key order.
Status parse_header(const std::string& h, NpyArray* out, size_t* elem) {
  size_t i = 0;
  bool got_descr = false, got_order = false, got_shape = false;
  if (!expect(h, &i, '{')) return Status::Invalid("npy header is not a dict");
  while (!expect(h, &i, '}')) {
    std::string key;
    if (!quoted(h, &i, &key) || !expect(h, &i, ':')) return Status::Invalid("npy header: malformed dict");
    skip_ws(h, &i);
    if (key == "descr" && !got_descr) {
      std::string d;
      if (!quoted(h, &i, &d)) return Status::Invalid("npy header: descr must be a string");
      const Descr* found = nullptr;
      for (const Descr& x : kDescr)
        if (d == x.npy || (x.size == 1 && d == std::string("<") + (x.npy + 1))) found = &x;
      if (!found) return Status::Invalid("npy dtype '" + d + "' is not supported (float32, int64, int32, int8, uint8)");
      out->dtype = found->dtype;
      *elem = found->size;
      got_descr = true;
    } else if (key == "fortran_order" && !got_order) {
      if (h.compare(i, 5, "False") == 0) i += 5;
      else if (h.compare(i, 4, "True") == 0) return Status::Invalid("npy array is in Fortran order; save it C-contiguous");
      else return Status::Invalid("npy header: fortran_order must be True or False");
      got_order = true;
    } else if (key == "shape" && !got_shape) {
      if (!expect(h, &i, '(')) return Status::Invalid("npy header: shape must be a tuple");
      while (!expect(h, &i, ')')) {
        skip_ws(h, &i);
        size_t start = i;
        int64_t v = 0;
        while (i < h.size() && h[i] >= '0' && h[i] <= '9') {
          if (v > (int64_t{1} << 40)) return Status::Invalid("npy header: dimension too large");
          v = v * 10 + (h[i++] - '0');
        }
        if (i == start) return Status::Invalid("npy header: bad shape");
        out->shape.push_back(v);
        if (out->shape.size() > 32) return Status::Invalid("npy header: too many dimensions");
        if (!expect(h, &i, ',')) {
          if (!expect(h, &i, ')')) return Status::Invalid("npy header: bad shape");
          break;
        }
      }
      got_shape = true;
    } else {
      return Status::Invalid("npy header: unexpected key '" + key + "'");
    }
    if (!expect(h, &i, ',')) {
      if (!expect(h, &i, '}')) return Status::Invalid("npy header: malformed dict");
      break;
    }
  }
  if (!got_descr || !got_order || !got_shape) return Status::Invalid("npy header lacks descr, fortran_order or shape");
  return Status::Ok();
}

}  // namespace

Status read_npy(const std::string& path, NpyArray* out) {
  *out = NpyArray();
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Invalid(path + ": cannot open");
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto fail = [&](const std::string& m) { return Status::Invalid(path + ": " + m); };
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) return fail("not a .npy file");
  int major = b[6];
  size_t hlen, hstart;
  if (major == 1) {
    hlen = b[8] | (b[9] << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) return fail("truncated .npy header");
    hlen = b[8] | (b[9] << 8) | (b[10] << 16) | (static_cast<size_t>(b[11]) << 24);
    hstart = 12;
  } else {
    return fail("unsupported .npy version " + std::to_string(major));
  }
  if (hlen > b.size() - hstart) return fail("truncated .npy header");
  size_t elem = 0;
  Status st = parse_header(std::string(b.begin() + hstart, b.begin() + hstart + hlen), out, &elem);
  if (!st.ok()) return fail(st.message());
  uint64_t n = elem;
  for (int64_t d : out->shape) {
    n *= static_cast<uint64_t>(d);
    if (n > (uint64_t{1} << 40)) return fail("array too large");
  }
  size_t have = b.size() - hstart - hlen;
  if (have != n) return fail("data is " + std::to_string(have) + " bytes, the header implies " + std::to_string(n));
  out->data.assign(b.begin() + hstart + hlen, b.end());
  return Status::Ok();
}

Status write_npy(const std::string& path, const std::string& dtype, const std::vector<int64_t>& shape,
                 const void* data, size_t bytes) {
  const Descr* d = nullptr;
  for (const Descr& x : kDescr)
    if (dtype == x.dtype) d = &x;
  if (!d) return Status::Invalid("cannot write dtype " + dtype + " to .npy");
  std::string shp = "(";
  for (size_t i = 0; i < shape.size(); ++i) shp += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? ", " : "");
  if (shape.size() == 1) shp.resize(shp.size() - 1);
  shp += ")";
  std::string h = std::string("{'descr': '") + d->npy + "', 'fortran_order': False, 'shape': " + shp + ", }";
  // Pad with spaces so the data starts at a multiple of 64 and the header ends in '\n'.
  size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h += '\n';
  std::string tmp = path + ".tmp" + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return Status::Invalid(path + ": cannot write (" + std::strerror(errno) + ")");
  uint16_t hl = static_cast<uint16_t>(h.size());
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(hl & 0xFF),
                           static_cast<unsigned char>(hl >> 8)};
  bool ok = std::fwrite(pre, 1, 10, f) == 10 && std::fwrite(h.data(), 1, h.size(), f) == h.size() &&
            (bytes == 0 || std::fwrite(data, 1, bytes, f) == bytes);
  ok = (std::fflush(f) == 0) && ok;
  ok = (fsync(fileno(f)) == 0) && ok;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::Invalid(path + ": write failed");
  }
  return Status::Ok();
}

}  // namespace edgekit::tools
