#include "packer.h"

#include <cstring>
#include <stdexcept>

namespace edgekit::test {
namespace {

constexpr int kBlock = 64;

// docs/format.md §1.2: plane widths, widest first.
std::vector<int> plane_widths(int bits) {
  switch (bits) {
    case 1: return {1};
    case 2: return {2};
    case 3: return {2, 1};
    case 4: return {4};
    case 5: return {4, 1};
    case 6: return {4, 2};
    case 7: return {4, 2, 1};
    case 8: return {8};
    default: throw std::invalid_argument("bits must be 1..8");
  }
}

// One stream of codes (a dense row or a compacted sparse row) as consecutive 64-code
// blocks, the last zero-padded; each block is its planes, each plane strided-segment (§1.3).
void append_stream(const std::vector<uint8_t>& codes, int bits, std::vector<uint8_t>& out) {
  const std::vector<int> widths = plane_widths(bits);
  const size_t nblk = (codes.size() + kBlock - 1) / kBlock;
  for (size_t b = 0; b < nblk; ++b) {
    int shift = 0;
    for (int p : widths) {
      const int segs = 8 / p;
      const int nbytes = 8 * p;
      for (int i = 0; i < nbytes; ++i) {
        unsigned byte = 0;
        for (int s = 0; s < segs; ++s) {
          const size_t j = b * kBlock + i + static_cast<size_t>(s) * nbytes;
          const unsigned code = j < codes.size() ? codes[j] : 0u;
          byte |= ((code >> shift) & ((1u << p) - 1)) << (s * p);
        }
        out.push_back(static_cast<uint8_t>(byte));
      }
      shift += p;
    }
  }
}

template <class T>
void put(std::vector<uint8_t>& buf, size_t off, T v) {
  std::memcpy(buf.data() + off, &v, sizeof v);  // the targets are little-endian
}

void pad64(std::vector<uint8_t>& buf) {
  while (buf.size() % 64) buf.push_back(0);
}

}  // namespace

int8_t LogicalWeights::weight(int n, int k) const {
  if (!stored(n, k)) return 0;
  const size_t t = per_row ? static_cast<size_t>(n) : 0;
  return codebook[(t << bits) + codes[static_cast<size_t>(n) * K + k]];
}

bool LogicalWeights::affine() const {
  const int ntab = per_row ? N : 1;
  for (int t = 0; t < ntab; ++t)
    for (int c = 0; c < (1 << bits); ++c)
      if (codebook[(static_cast<size_t>(t) << bits) + c] != c - (1 << (bits - 1))) return false;
  return true;
}

std::vector<uint8_t> pack(const LogicalWeights& w) {
  const int nblocks = (w.K + kBlock - 1) / kBlock;
  std::vector<uint8_t> codes, bitmaps, offsets;
  std::vector<uint32_t> row_vblock{0};
  for (int n = 0; n < w.N; ++n) {
    std::vector<uint8_t> row;
    for (int k = 0; k < w.K; ++k)
      if (w.stored(n, k)) row.push_back(w.codes[static_cast<size_t>(n) * w.K + k]);
    if (!w.sparse()) row.resize(static_cast<size_t>(nblocks) * kBlock, 0);
    append_stream(row, w.bits, codes);
    const size_t vblocks = (row.size() + kBlock - 1) / kBlock;
    row_vblock.push_back(row_vblock.back() + static_cast<uint32_t>(vblocks));
    if (w.sparse()) {
      for (int b = 0; b < nblocks; ++b) {
        uint64_t word = 0;
        for (int j = 0; j < kBlock && b * kBlock + j < w.K; ++j)
          if (w.stored(n, b * kBlock + j)) word |= uint64_t{1} << j;
        const size_t at = bitmaps.size();
        bitmaps.resize(at + 8);
        put(bitmaps, at, word);
      }
    }
  }
  if (w.sparse()) {
    offsets.resize(row_vblock.size() * 4);
    for (size_t i = 0; i < row_vblock.size(); ++i) put(offsets, 4 * i, row_vblock[i]);
  }
  const size_t cb_bytes = w.codebook.size();
  const size_t sc_bytes = w.scales.size() * sizeof(float);

  std::vector<uint8_t> out(64, 0);
  std::memcpy(out.data(), "EKPW", 4);
  put<uint16_t>(out, 4, 1);
  out[6] = static_cast<uint8_t>(w.bits);
  uint8_t flags = 0;
  if (w.per_row) flags |= 1u << 0;
  if (w.affine()) flags |= 1u << 1;
  if (w.sparse()) flags |= 1u << 2;
  if (w.nm_m > 0) flags |= 1u << 3;
  out[7] = flags;
  put<uint32_t>(out, 8, static_cast<uint32_t>(w.N));
  put<uint32_t>(out, 12, static_cast<uint32_t>(w.K));
  put<uint32_t>(out, 16, static_cast<uint32_t>(w.group_size));
  out[20] = static_cast<uint8_t>(w.nm_n);
  out[21] = static_cast<uint8_t>(w.nm_m);
  put<uint64_t>(out, 24, codes.size());
  put<uint64_t>(out, 32, bitmaps.size());
  put<uint64_t>(out, 40, offsets.size());
  put<uint64_t>(out, 48, cb_bytes);
  put<uint64_t>(out, 56, sc_bytes);

  auto section = [&out](const void* p, size_t len) {
    pad64(out);
    const size_t at = out.size();
    out.resize(at + len);
    if (len) std::memcpy(out.data() + at, p, len);
  };
  section(codes.data(), codes.size());
  section(bitmaps.data(), bitmaps.size());
  section(offsets.data(), offsets.size());
  section(w.codebook.data(), cb_bytes);
  section(w.scales.data(), sc_bytes);
  return out;
}

bool unpack(const std::vector<uint8_t>& bytes, LogicalWeights* out, std::string* error) {
  auto get = [&bytes](size_t off, auto* v) {
    if (off + sizeof *v > bytes.size()) return false;
    std::memcpy(v, bytes.data() + off, sizeof *v);
    return true;
  };
  uint8_t bits = 0, flags = 0, nm_n = 0, nm_m = 0;
  uint32_t N = 0, K = 0, gs = 0;
  uint64_t sizes[5] = {};
  bool ok = bytes.size() >= 64 && std::memcmp(bytes.data(), "EKPW", 4) == 0 && get(6, &bits) &&
            get(7, &flags) && get(8, &N) && get(12, &K) && get(16, &gs) && get(20, &nm_n) &&
            get(21, &nm_m);
  for (int i = 0; i < 5 && ok; ++i) ok = get(24 + 8 * i, &sizes[i]);
  if (!ok || bits < 1 || bits > 8 || N < 1 || K < 1 || N > (1u << 20) || K > (1u << 20)) {
    *error = "bad header";
    return false;
  }
  size_t off[5], pos = 64;
  for (int i = 0; i < 5; ++i) {
    off[i] = (pos + 63) / 64 * 64;
    pos = off[i] + sizes[i];
  }
  if (pos != bytes.size()) {
    *error = "sections end at " + std::to_string(pos) + ", file has " +
             std::to_string(bytes.size());
    return false;
  }
  LogicalWeights w;
  w.N = static_cast<int>(N), w.K = static_cast<int>(K), w.bits = bits;
  w.per_row = flags & 1u, w.group_size = static_cast<int>(gs);
  w.nm_n = nm_n, w.nm_m = nm_m;
  const bool sparse = flags & 4u;
  const int nblocks = (w.K + kBlock - 1) / kBlock;
  const size_t bb = 8u * bits;
  const std::vector<int> widths = plane_widths(bits);
  // Code j of the block at `blk`: the planes, each strided-segment (§1.3).
  auto code_at = [&](size_t blk, int j) {
    unsigned code = 0, shift = 0, poff = 0;
    for (int p : widths) {
      const unsigned byte = bytes[blk + poff + j % (8 * p)];
      code |= ((byte >> (j / (8 * p) * p)) & ((1u << p) - 1)) << shift;
      shift += p;
      poff += 8 * p;
    }
    return static_cast<uint8_t>(code);
  };
  w.codes.assign(static_cast<size_t>(N) * K, 0);
  if (sparse) w.mask.assign(w.codes.size(), 0);
  for (int n = 0; n < w.N; ++n) {
    uint32_t vb = 0;
    if (sparse && !get(off[2] + 4 * static_cast<size_t>(n), &vb)) ok = false;
    size_t stream = off[0] + vb * bb, next = 0;  // sparse: position in the compacted stream
    for (int k = 0; k < w.K && ok; ++k) {
      const size_t i = static_cast<size_t>(n) * K + k;
      if (!sparse) {
        const size_t blk = off[0] + (static_cast<size_t>(n) * nblocks + k / kBlock) * bb;
        ok = blk + bb <= off[0] + sizes[0];
        if (ok) w.codes[i] = code_at(blk, k % kBlock);
        continue;
      }
      uint64_t word = 0;
      ok = get(off[1] + 8 * (static_cast<size_t>(n) * nblocks + k / kBlock), &word);
      if (!ok || !((word >> (k % kBlock)) & 1)) continue;
      w.mask[i] = 1;
      const size_t blk = stream + next / kBlock * bb;
      ok = blk + bb <= off[0] + sizes[0];
      if (ok) w.codes[i] = code_at(blk, static_cast<int>(next % kBlock));
      ++next;
    }
  }
  if (!ok) {
    *error = "a section is shorter than its contents";
    return false;
  }
  if (sizes[3] != (static_cast<uint64_t>(w.per_row ? N : 1) << bits)) {
    *error = "codebook section has the wrong size";
    return false;
  }
  w.codebook.resize(sizes[3]);
  std::memcpy(w.codebook.data(), bytes.data() + off[3], sizes[3]);
  w.scales.resize(sizes[4] / sizeof(float));
  std::memcpy(w.scales.data(), bytes.data() + off[4], w.scales.size() * sizeof(float));
  *out = std::move(w);
  return true;
}

std::vector<int32_t> oracle_accumulate(const LogicalWeights& w, const int8_t* x, int M,
                                       int32_t x_zp) {
  const int G = w.ngroups();
  const int gs = w.group_size > 0 ? w.group_size : w.K;
  std::vector<int32_t> acc(static_cast<size_t>(M) * w.N * G);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < w.N; ++n)
      for (int g = 0; g < G; ++g) {
        int64_t s = 0;
        for (int k = g * gs; k < w.K && k < (g + 1) * gs; ++k)
          s += static_cast<int64_t>(x[static_cast<size_t>(m) * w.K + k] - x_zp) * w.weight(n, k);
        if (s < INT32_MIN || s > INT32_MAX) throw std::overflow_error("oracle sum exceeds int32");
        acc[(static_cast<size_t>(m) * w.N + n) * G + g] = static_cast<int32_t>(s);
      }
  return acc;
}

}  // namespace edgekit::test
