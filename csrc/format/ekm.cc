#include "format/ekm.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <unordered_set>

namespace edgekit::ekm {
namespace {

using runtime::DType;

// Both supported targets (x86-64, aarch64) are little-endian like the file, so fields are
// read with memcpy (which also tolerates unaligned records in a hostile file).
template <typename T>
T rd(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string str(uint64_t v) { return std::to_string(v); }

constexpr OpArity kArity[] = {
    {1, 3, 3, 1, 2, 1, 1u << 2},   {2, 3, 3, 1, 0, 0, 1u << 2},   {3, 3, 3, 1, 8, 1, 1u << 2},
    {4, 3, 3, 1, 5, 0, 1u << 2},   {5, 3, 3, 1, 8, 1, 1u << 2},   {6, 3, 3, 1, 5, 0, 1u << 2},
    {7, 7, 7, 3, 3, 2, 3u << 5},   {8, 7, 7, 3, 0, 0, 3u << 5},   {10, 3, 3, 1, 0, 1, 3u << 1},
    {11, 1, 1, 1, 1, 0, 0},        {12, 2, 2, 1, 0, 0, 0},        {20, 2, 2, 1, 0, 0, 0},
    {21, 2, 2, 1, 0, 0, 0},        {22, 2, 2, 1, 0, 0, 0},        {23, 2, 2, 1, 0, 0, 0},
    {24, 3, 3, 1, 0, 0, 0},        {25, 2, 2, 1, 0, 0, 0},        {30, 1, 1, 1, 0, 0, 0},
    {31, 1, 1, 1, 0, 1, 0},        {32, 1, 1, 1, 0, 0, 0},        {33, 1, 1, 1, 0, 0, 0},
    {34, 1, 1, 1, 0, 0, 0},        {35, 1, 1, 1, 1, 0, 0},        {36, 1, 1, 1, 0, 2, 0},
    {37, 1, 1, 1, 0, 0, 0},        {38, 1, 1, 1, 0, 0, 0},        {39, 1, 1, 1, 0, 0, 0},
    {40, 1, 1, 1, 0, 0, 0},        {41, 1, 1, 1, 0, 0, 0},        {50, 1, 1, 1, -1, 0, 0},
    {51, 1, 1, 1, -1, 0, 0},       {52, 1, -1, 1, 1, 0, 0},       {53, 1, 1, 1, 4, 0, 0},
    {54, 1, 1, 1, 3, 1, 0},        {55, 2, 2, 1, 1, 0, 0},        {56, 1, 1, 1, 0, 0, 0},
    {57, 1, 1, 1, 1, 0, 0},        {58, 2, 2, 1, 0, 0, 0},        {59, 1, 1, 1, 2, 0, 0},
};

const char* kSectionNames[] = {"?", "STRINGS", "TENSORS", "OPERANDS", "INTS",
                               "FLOATS", "OPS", "GRAPHS", "META", "DATA"};
constexpr uint64_t kRecordBytes[] = {0, 1, 64, 4, 8, 4, 48, 48, 1, 1};

struct Section {
  bool present = false;
  uint64_t offset = 0, bytes = 0, count = 0;
};

class Reader {
 public:
  Reader(const uint8_t* buf, size_t len, File* out) : buf_(buf), len_(len), f_(out) {}

  Status run() {
    Status st = header();
    if (st.ok()) st = table();
    if (st.ok()) st = tensors();
    if (st.ok()) st = ops();
    if (st.ok()) st = graphs();
    if (st.ok()) st = meta();
    return st;
  }

 private:
  const uint8_t* buf_;
  size_t len_;
  File* f_;
  Section sec_[10];

  const uint8_t* at(int kind, uint64_t byte) const { return buf_ + sec_[kind].offset + byte; }

  Status header() {
    if (len_ < kHeaderBytes)
      return Status::Invalid("ekm: file is " + str(len_) + " bytes, shorter than the 64-byte header");
    if (std::memcmp(buf_, "EKM1", 4) != 0) return Status::Invalid("ekm: bad magic (not an EKM file)");
    if (reinterpret_cast<uintptr_t>(buf_) % 64 != 0)
      return Status::Invalid("ekm: internal error: buffer is not 64-byte aligned");
    uint16_t major = rd<uint16_t>(buf_ + 4);
    f_->version_minor = rd<uint16_t>(buf_ + 6);
    if (major != kVersionMajor)
      return Status::Invalid("ekm: unsupported version " + str(major) + " (this reader reads version 1)");
    if (rd<uint32_t>(buf_ + 8) != kHeaderBytes) return Status::Invalid("ekm: header_bytes must be 64");
    uint32_t nsec = rd<uint32_t>(buf_ + 12);
    if (nsec < 1 || nsec > kMaxSections)
      return Status::Invalid("ekm: section_count " + str(nsec) + " out of range 1..64");
    if (rd<uint64_t>(buf_ + 16) != kHeaderBytes)
      return Status::Invalid("ekm: section_table_offset must be 64");
    uint64_t fb = rd<uint64_t>(buf_ + 24);
    if (fb != len_)
      return Status::Invalid("ekm: header says " + str(fb) + " bytes but the file has " + str(len_) +
                             (fb > len_ ? " (truncated)" : " (trailing bytes)"));
    f_->file_bytes = fb;
    if (rd<uint32_t>(buf_ + 36) != 0) return Status::Invalid("ekm: header flags must be 0");
    for (int i = 40; i < 64; ++i)
      if (buf_[i] != 0) return Status::Invalid("ekm: reserved header bytes must be 0");
    f_->crc32 = rd<uint32_t>(buf_ + 32);
    uint32_t crc = crc32(buf_ + kHeaderBytes, len_ - kHeaderBytes);
    if (crc != f_->crc32) {
      char msg[96];
      std::snprintf(msg, sizeof msg, "ekm: checksum mismatch (stored 0x%08x, computed 0x%08x)",
                    f_->crc32, crc);
      return Status::Invalid(msg);
    }
    return Status::Ok();
  }

  Status table() {
    uint32_t nsec = rd<uint32_t>(buf_ + 12);
    uint64_t table_end = kHeaderBytes + 32ull * nsec;
    if (table_end > len_) return Status::Invalid("ekm: section table runs past the end of the file");
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // [offset, end) of every section
    for (uint32_t i = 0; i < nsec; ++i) {
      const uint8_t* e = buf_ + kHeaderBytes + 32ull * i;
      uint32_t kind = rd<uint32_t>(e);
      uint64_t off = rd<uint64_t>(e + 8), bytes = rd<uint64_t>(e + 16), count = rd<uint64_t>(e + 24);
      std::string where = "ekm: section " + str(i) + " (kind " + str(kind) + ")";
      if (rd<uint32_t>(e + 4) != 0) return Status::Invalid(where + ": reserved field must be 0");
      if (off % 64 != 0) return Status::Invalid(where + ": offset " + str(off) + " is not a multiple of 64");
      if (off < table_end) return Status::Invalid(where + ": overlaps the header or section table");
      if (off > len_ || bytes > len_ - off)
        return Status::Invalid(where + ": [" + str(off) + ", +" + str(bytes) + ") lies outside the " +
                               str(len_) + "-byte file");
      spans.emplace_back(off, off + bytes);
      if (kind < kStrings || kind > kData) {
        // A newer minor version may add sections; version 1.0 has exactly these kinds.
        if (f_->version_minor == 0) return Status::Invalid(where + ": unknown section kind");
        continue;
      }
      if (sec_[kind].present) return Status::Invalid(std::string("ekm: section ") + kSectionNames[kind] + " appears twice");
      if (count > bytes || count * kRecordBytes[kind] != bytes)
        return Status::Invalid(std::string("ekm: section ") + kSectionNames[kind] + ": " + str(bytes) +
                               " bytes do not hold " + str(count) + " records of " +
                               str(kRecordBytes[kind]) + " bytes");
      sec_[kind] = Section{true, off, bytes, count};
    }
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i)
      if (spans[i].first < spans[i - 1].second)
        return Status::Invalid("ekm: sections at offsets " + str(spans[i - 1].first) + " and " +
                               str(spans[i].first) + " overlap");
    for (int k : {kStrings, kTensors, kOperands, kOps, kGraphs, kMeta, kData})
      if (!sec_[k].present) return Status::Invalid(std::string("ekm: required section ") + kSectionNames[k] + " is missing");
    if (sec_[kTensors].count > (1u << 24) || sec_[kOps].count > (1u << 24) || sec_[kGraphs].count > (1u << 16))
      return Status::Invalid("ekm: too many tensors, ops or graphs");
    return Status::Ok();
  }

  // A string reference: the start of a NUL-terminated UTF-8 string inside STRINGS.
  Status string_at(uint32_t ref, const std::string& what, std::string* out) const {
    const Section& s = sec_[kStrings];
    if (ref >= s.bytes) return Status::Invalid("ekm: " + what + ": string ref " + str(ref) + " outside STRINGS");
    const char* base = reinterpret_cast<const char*>(at(kStrings, 0));
    if (ref > 0 && base[ref - 1] != '\0')
      return Status::Invalid("ekm: " + what + ": string ref " + str(ref) + " points into the middle of a string");
    const void* nul = std::memchr(base + ref, 0, s.bytes - ref);
    if (nul == nullptr) return Status::Invalid("ekm: " + what + ": string at " + str(ref) + " has no NUL");
    size_t n = static_cast<const char*>(nul) - (base + ref);
    if (!valid_utf8(base + ref, n)) return Status::Invalid("ekm: " + what + ": string at " + str(ref) + " is not UTF-8");
    out->assign(base + ref, n);
    return Status::Ok();
  }

  // OPERANDS[first, first + count) as tensor indices; absent (-1) allowed where `optional`.
  Status operands(uint32_t first, uint32_t count, uint32_t optional, const std::string& what,
                  std::vector<int32_t>* out) const {
    if (uint64_t{first} + count > sec_[kOperands].count)
      return Status::Invalid("ekm: " + what + ": operands [" + str(first) + ", +" + str(count) +
                             ") outside OPERANDS (" + str(sec_[kOperands].count) + ")");
    out->resize(count);
    for (uint32_t i = 0; i < count; ++i) {
      int32_t t = rd<int32_t>(at(kOperands, 4ull * (first + i)));
      bool may_be_absent = i < 32 && (optional >> i & 1u);
      if (t == -1 && may_be_absent) {
        (*out)[i] = -1;
        continue;
      }
      if (t < 0 || static_cast<uint64_t>(t) >= f_->tensors.size())
        return Status::Invalid("ekm: " + what + ": operand " + str(i) + " is tensor " + std::to_string(t) +
                               " (file has " + str(f_->tensors.size()) + " tensors)");
      (*out)[i] = t;
    }
    return Status::Ok();
  }

  Status tensors() {
    const Section& s = sec_[kTensors];
    const Section& d = sec_[kData];
    f_->tensors.resize(s.count);
    std::unordered_set<std::string> names;
    for (uint64_t i = 0; i < s.count; ++i) {
      const uint8_t* r = at(kTensors, 64 * i);
      Tensor& t = f_->tensors[i];
      std::string where = "tensor " + str(i);
      Status st = string_at(rd<uint32_t>(r), where + " name", &t.name);
      if (!st.ok()) return st;
      where = "ekm: tensor '" + t.name + "'";
      if (!names.insert(t.name).second) return Status::Invalid(where + ": duplicate name");
      uint8_t dt = r[4], kind = r[5], rank = r[6];
      if (dt < 1 || dt > 6) return Status::Invalid(where + ": unknown dtype " + str(dt));
      if (kind < 1 || kind > 5) return Status::Invalid(where + ": unknown kind " + str(kind));
      if (rank > runtime::kMaxRank) return Status::Invalid(where + ": rank " + str(rank) + " > 6");
      if (r[7] != 0) return Status::Invalid(where + ": reserved byte must be 0");
      t.kind = static_cast<TensorKind>(kind);
      t.info.dtype = static_cast<DType>(dt);
      t.info.rank = rank;
      uint64_t numel = 1;
      for (int k = 0; k < runtime::kMaxRank; ++k) {
        int64_t dim = rd<int64_t>(r + 8 + 8 * k);
        if (k < rank && dim < 1) return Status::Invalid(where + ": dim " + str(k) + " is " + std::to_string(dim));
        if (k >= rank && dim != 0) return Status::Invalid(where + ": dims beyond rank must be 0");
        if (k < rank) {
          if (dim >= (int64_t{1} << 31)) return Status::Invalid(where + ": 2^31 or more elements");
          numel *= static_cast<uint64_t>(dim);
          if (numel >= (uint64_t{1} << 31)) return Status::Invalid(where + ": 2^31 or more elements");
        }
        t.info.dims[k] = dim;
      }
      uint32_t off = rd<uint32_t>(r + 56), nbytes = rd<uint32_t>(r + 60);
      if (t.info.dtype == DType::Packed && (rank != 2 || t.kind != kConst))
        return Status::Invalid(where + ": a packed tensor must be a rank-2 constant");
      if (t.kind != kConst) {
        if (off != 0 || nbytes != 0) return Status::Invalid(where + ": only constants have data");
        continue;
      }
      if (uint64_t{off} + nbytes > d.bytes)
        return Status::Invalid(where + ": data [" + str(off) + ", +" + str(nbytes) + ") outside DATA (" + str(d.bytes) + " bytes)");
      if ((d.offset + off) % 64 != 0) return Status::Invalid(where + ": data is not 64-byte aligned in the file");
      t.data = at(kData, off);
      t.data_bytes = nbytes;
      if (t.info.dtype != DType::Packed) {
        uint64_t want = numel * runtime::dtype_size(t.info.dtype);
        if (nbytes != want) return Status::Invalid(where + ": data_bytes " + str(nbytes) + ", expected " + str(want));
        continue;
      }
      auto pl = std::make_unique<PackedLinear>();
      st = parse_packed_linear(t.data, nbytes, pl.get());
      if (!st.ok()) return Status::Invalid(where + ": " + st.message());
      if (pl->N != t.info.dims[0] || pl->K != t.info.dims[1])
        return Status::Invalid(where + ": packed weight is " + str(pl->N) + "x" + str(pl->K) + " but the tensor is " +
                               str(t.info.dims[0]) + "x" + str(t.info.dims[1]));
      t.packed = pl.get();
      f_->packed.push_back(std::move(pl));
    }
    return Status::Ok();
  }

  Status ops() {
    const Section& s = sec_[kOps];
    f_->ops.resize(s.count);
    for (uint64_t i = 0; i < s.count; ++i) {
      const uint8_t* r = at(kOps, 48 * i);
      Op& op = f_->ops[i];
      op.code = rd<int32_t>(r);
      Status st = string_at(rd<uint32_t>(r + 4), "op " + str(i) + " name", &op.name);
      if (!st.ok()) return st;
      const OpArity* a = find_arity(op.code);
      std::string where = "ekm: op " + str(i) + " (" + op.name + ")";
      if (a == nullptr) return Status::Invalid(where + ": unknown op code " + std::to_string(op.code));
      if (rd<uint64_t>(r + 40) != 0) return Status::Invalid(where + ": reserved field must be 0");
      uint32_t in_first = rd<uint32_t>(r + 8), in_count = rd<uint32_t>(r + 12);
      uint32_t out_first = rd<uint32_t>(r + 16), out_count = rd<uint32_t>(r + 20);
      uint32_t int_first = rd<uint32_t>(r + 24), int_count = rd<uint32_t>(r + 28);
      uint32_t flt_first = rd<uint32_t>(r + 32), flt_count = rd<uint32_t>(r + 36);
      if (in_count < static_cast<uint32_t>(a->min_in) || (a->max_in >= 0 && in_count > static_cast<uint32_t>(a->max_in)))
        return Status::Invalid(where + ": " + str(in_count) + " inputs, op code " + str(a->code) + " takes " +
                               str(a->min_in) + (a->max_in == a->min_in ? "" : " or more"));
      if (out_count != static_cast<uint32_t>(a->n_out))
        return Status::Invalid(where + ": " + str(out_count) + " outputs, expected " + str(a->n_out));
      if (a->n_ints >= 0 && int_count != static_cast<uint32_t>(a->n_ints))
        return Status::Invalid(where + ": " + str(int_count) + " int attributes, expected " + str(a->n_ints));
      if (flt_count != static_cast<uint32_t>(a->n_floats))
        return Status::Invalid(where + ": " + str(flt_count) + " float attributes, expected " + str(a->n_floats));
      if ((st = operands(in_first, in_count, a->optional, where.substr(5) + " inputs", &op.inputs)).ok())
        st = operands(out_first, out_count, 0, where.substr(5) + " outputs", &op.outputs);
      if (!st.ok()) return st;
      if (uint64_t{int_first} + int_count > sec_[kInts].count)
        return Status::Invalid(where + ": ints [" + str(int_first) + ", +" + str(int_count) + ") outside INTS");
      if (uint64_t{flt_first} + flt_count > sec_[kFloats].count)
        return Status::Invalid(where + ": floats [" + str(flt_first) + ", +" + str(flt_count) + ") outside FLOATS");
      op.ints.resize(int_count);
      for (uint32_t k = 0; k < int_count; ++k) op.ints[k] = rd<int64_t>(at(kInts, 8ull * (int_first + k)));
      op.floats.resize(flt_count);
      for (uint32_t k = 0; k < flt_count; ++k) op.floats[k] = rd<float>(at(kFloats, 4ull * (flt_first + k)));
      for (int32_t o : op.outputs) {
        TensorKind k = f_->tensors[o].kind;
        if (k != kActivation && k != kOutput)
          return Status::Invalid(where + ": writes tensor '" + f_->tensors[o].name + "', which is not an activation or graph output");
      }
    }
    return Status::Ok();
  }

  Status graphs() {
    const Section& s = sec_[kGraphs];
    if (s.count == 0) return Status::Invalid("ekm: the file has no graph");
    f_->graphs.resize(s.count);
    std::unordered_set<std::string> names;
    for (uint64_t i = 0; i < s.count; ++i) {
      const uint8_t* r = at(kGraphs, 48 * i);
      Graph& g = f_->graphs[i];
      Status st = string_at(rd<uint32_t>(r), "graph " + str(i) + " name", &g.name);
      if (!st.ok()) return st;
      std::string where = "ekm: graph '" + g.name + "'";
      if (!names.insert(g.name).second) return Status::Invalid(where + ": duplicate name");
      for (int k = 36; k < 48; ++k)
        if (r[k] != 0) return Status::Invalid(where + ": reserved bytes must be 0");
      uint32_t op_first = rd<uint32_t>(r + 4), op_count = rd<uint32_t>(r + 8);
      if (op_count < 1 || uint64_t{op_first} + op_count > f_->ops.size())
        return Status::Invalid(where + ": ops [" + str(op_first) + ", +" + str(op_count) + ") outside OPS (" +
                               str(f_->ops.size()) + ")");
      g.op_first = static_cast<int32_t>(op_first);
      g.op_count = static_cast<int32_t>(op_count);
      uint32_t state_count = rd<uint32_t>(r + 32);
      if (state_count > (1u << 20)) return Status::Invalid(where + ": state_count too large");
      std::vector<int32_t> pairs;
      if (!(st = operands(rd<uint32_t>(r + 12), rd<uint32_t>(r + 16), 0, where.substr(5) + " inputs", &g.inputs)).ok() ||
          !(st = operands(rd<uint32_t>(r + 20), rd<uint32_t>(r + 24), 0, where.substr(5) + " outputs", &g.outputs)).ok() ||
          !(st = operands(rd<uint32_t>(r + 28), 2 * state_count, 0, where.substr(5) + " states", &pairs)).ok())
        return st;
      for (uint32_t k = 0; k < state_count; ++k) g.states.emplace_back(pairs[2 * k], pairs[2 * k + 1]);
      if (!(st = dataflow(g, where)).ok()) return st;
    }
    return Status::Ok();
  }

  // Inputs before use, one producer per value, declared inputs/outputs/states of the right kinds.
  Status dataflow(const Graph& g, const std::string& where) const {
    const auto& T = f_->tensors;
    // 0 unknown, 1 graph input, 2 state, 3 produced by an op of this graph
    std::vector<uint8_t> avail(T.size(), 0);
    for (int32_t t : g.inputs) {
      if (T[t].kind != kInput) return Status::Invalid(where + ": input '" + T[t].name + "' is not of kind input");
      if (avail[t]) return Status::Invalid(where + ": input '" + T[t].name + "' listed twice");
      avail[t] = 1;
    }
    for (auto [s, next] : g.states) {
      if (T[s].kind != kState) return Status::Invalid(where + ": state '" + T[s].name + "' is not of kind state");
      if (avail[s]) return Status::Invalid(where + ": state '" + T[s].name + "' listed twice");
      avail[s] = 2;
    }
    std::vector<uint8_t> is_output(T.size(), 0);
    for (int32_t t : g.outputs) is_output[t] = 1;
    for (int32_t i = g.op_first; i < g.op_first + g.op_count; ++i) {
      const Op& op = f_->ops[i];
      for (int32_t t : op.inputs) {
        if (t < 0 || T[t].kind == kConst || avail[t]) continue;
        return Status::Invalid(where + ": op " + str(i) + " (" + op.name + ") reads '" + T[t].name +
                               "' before it is produced (or it is not an input/state of this graph)");
      }
      for (int32_t t : op.outputs) {
        if (avail[t]) return Status::Invalid(where + ": '" + T[t].name + "' is written twice (op " + str(i) + ", " + op.name + ")");
        // Only this graph's outputs get output buffers when it runs.
        if (T[t].kind == kOutput && !is_output[t])
          return Status::Invalid(where + ": op " + str(i) + " (" + op.name + ") writes '" + T[t].name +
                                 "', a graph output that is not an output of this graph");
        avail[t] = 3;
      }
    }
    std::vector<uint8_t> seen(T.size(), 0);
    for (int32_t t : g.outputs) {
      if (T[t].kind != kOutput) return Status::Invalid(where + ": output '" + T[t].name + "' is not of kind output");
      if (avail[t] != 3) return Status::Invalid(where + ": output '" + T[t].name + "' is not produced by the graph");
      if (seen[t]++) return Status::Invalid(where + ": output '" + T[t].name + "' listed twice");
    }
    for (auto [s, next] : g.states) {
      if (avail[next] != 3)
        return Status::Invalid(where + ": next value '" + T[next].name + "' of state '" + T[s].name + "' is not produced by the graph");
      const auto &a = T[s].info, &b = T[next].info;
      bool same = a.dtype == b.dtype && a.rank == b.rank && std::equal(a.dims, a.dims + a.rank, b.dims);
      if (!same) return Status::Invalid(where + ": state '" + T[s].name + "' and its next value '" + T[next].name + "' differ in dtype or shape");
    }
    return Status::Ok();
  }

  Status meta() {
    const Section& s = sec_[kMeta];
    const char* p = reinterpret_cast<const char*>(at(kMeta, 0));
    if (!valid_utf8(p, s.bytes)) return Status::Invalid("ekm: META is not UTF-8");
    f_->meta.assign(p, s.bytes);
    return Status::Ok();
  }
};

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

}  // namespace

const OpArity* find_arity(int code) {
  for (const OpArity& a : kArity)
    if (a.code == code) return &a;
  return nullptr;
}

int File::find_graph(const std::string& name) const {
  for (size_t i = 0; i < graphs.size(); ++i)
    if (graphs[i].name == name) return static_cast<int>(i);
  return -1;
}

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

bool valid_utf8(const char* s, size_t n) {
  const auto* p = reinterpret_cast<const unsigned char*>(s);
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return false;
    if (n - i < static_cast<size_t>(len)) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

Status parse_ekm(const uint8_t* buf, size_t len, File* out) {
  *out = File();
  Status st = Reader(buf, len, out).run();
  if (!st.ok()) *out = File();
  return st;
}

}  // namespace edgekit::ekm
