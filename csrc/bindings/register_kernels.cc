// Python bindings for packed weights and the linear family. Thin: argument conversion,
// shape checks that protect the C++ side, GIL release. Validation lives in format/,
// the choice of kernel in dispatch/, the arithmetic in kernels/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/cpu.h"
#include "dispatch/dispatch.h"
#include "format/packed.h"
#include "kernels/linear/epilogue.h"

namespace py = pybind11;

namespace edgekit::bindings {
namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void throw_if(const Status& st) {
  if (!st.ok()) throw py::value_error(st.message());
}

const kernels::LinearVariant* pick(const std::optional<std::string>& isa) {
  const kernels::LinearVariant* v = nullptr;
  throw_if(isa ? dispatch::find_linear_variant(*isa, &v) : dispatch::default_linear_variant(&v));
  return v;
}

// 64-byte aligned scratch owned by the caller's stack frame.
struct Scratch {
  std::vector<uint8_t> buf;
  void* get(size_t n) {
    buf.assign(n + 64, 0);
    auto p = reinterpret_cast<uintptr_t>(buf.data());
    return reinterpret_cast<void*>((p + 63) & ~uintptr_t{63});
  }
};

// Owns the numpy sections and the validated view over them.
class Packed {
 public:
  Packed(py::bytes header, carray<uint8_t> codes, carray<uint64_t> bitmaps, carray<uint32_t> offsets,
         carray<int8_t> codebook, carray<float> scales)
      : codes_(codes), bitmaps_(bitmaps), offsets_(offsets), codebook_(codebook), scales_(scales) {
    std::string h = header;
    if (h.size() != sizeof(PackedHeader)) throw py::value_error("packed weights: header must be 64 bytes");
    PackedHeader hdr;
    std::memcpy(&hdr, h.data(), sizeof hdr);
    throw_if(make_packed_linear(hdr, codes_.data(), codes_.nbytes(), bitmaps_.data(), bitmaps_.nbytes(),
                                offsets_.data(), offsets_.nbytes(), codebook_.data(), codebook_.nbytes(),
                                scales_.data(), scales_.nbytes(), &w_));
  }

  const PackedLinear& view() const { return w_; }

  int check_x(const carray<int8_t>& x, int x_zp) const {
    if (x.ndim() != 2) throw py::value_error("x must be 2-D (M, K), got " + std::to_string(x.ndim()) + "-D");
    if (x.shape(1) != w_.K)
      throw py::value_error("x has K=" + std::to_string(x.shape(1)) + " but the weights have K=" + std::to_string(w_.K));
    if (x.shape(0) > (1 << 24)) throw py::value_error("x has too many rows");
    if (x_zp < -128 || x_zp > 127) throw py::value_error("x_zero_point must be in [-128, 127], got " + std::to_string(x_zp));
    return static_cast<int>(x.shape(0));
  }

  // acc (M, N, ngroups) with the chosen variant, GIL released.
  std::vector<int32_t> run(const carray<int8_t>& x, int M, int x_zp, const kernels::LinearVariant* v) const {
    std::vector<int32_t> acc(static_cast<size_t>(M) * w_.N * w_.ngroups);
    if (M == 0) return acc;
    py::gil_scoped_release nogil;
    Scratch s;
    void* scratch = s.get(v->scratch_bytes(w_, M));
    dispatch::linear_accumulate(*v, w_, x.data(), M, x_zp, acc.data(), scratch);
    return acc;
  }

  py::array_t<int32_t> accumulate(carray<int8_t> x, int x_zp, std::optional<std::string> isa) const {
    const int M = check_x(x, x_zp);
    auto acc = run(x, M, x_zp, pick(isa));
    py::array_t<int32_t> out({static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(w_.N), static_cast<py::ssize_t>(w_.ngroups)});
    std::memcpy(out.mutable_data(), acc.data(), acc.size() * 4);
    return out;
  }

  py::array_t<int32_t> linear(carray<int8_t> x, int x_zp, std::optional<std::string> isa) const {
    const int M = check_x(x, x_zp);
    auto acc = run(x, M, x_zp, pick(isa));
    py::array_t<int32_t> out({static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(w_.N)});
    kernels::epilogue_sum_groups(w_, acc.data(), M, out.mutable_data());
    return out;
  }

  py::array_t<float> linear_f32(carray<int8_t> x, float x_scale, int x_zp, std::optional<carray<float>> bias,
                                std::optional<std::string> isa) const {
    const int M = check_x(x, x_zp);
    if (bias && (bias->ndim() != 1 || bias->shape(0) != w_.N))
      throw py::value_error("bias must have shape (" + std::to_string(w_.N) + ",)");
    auto acc = run(x, M, x_zp, pick(isa));
    py::array_t<float> out({static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(w_.N)});
    kernels::epilogue_f32(w_, acc.data(), M, x_scale, bias ? bias->data() : nullptr, out.mutable_data());
    return out;
  }

  py::array_t<int8_t> linear_q8(carray<int8_t> x, int x_zp, carray<int32_t> mult, carray<int32_t> shift,
                                int out_zp, std::optional<carray<int32_t>> bias, std::optional<std::string> isa) const {
    const int M = check_x(x, x_zp);
    if (w_.ngroups != 1) throw py::value_error("linear_q8 needs one scale group per row; these weights have " + std::to_string(w_.ngroups));
    auto per_channel = [&](const carray<int32_t>& a, const char* name) {
      if (a.ndim() != 1 || a.shape(0) != w_.N)
        throw py::value_error(std::string(name) + " must have shape (" + std::to_string(w_.N) + ",)");
    };
    per_channel(mult, "multiplier");
    per_channel(shift, "shift");
    if (bias) per_channel(*bias, "bias");
    for (int n = 0; n < w_.N; ++n)
      if (shift.data()[n] < -31 || shift.data()[n] > 30) throw py::value_error("shift must be in [-31, 30]");
    if (out_zp < -128 || out_zp > 127) throw py::value_error("out_zero_point must be in [-128, 127]");
    auto acc = run(x, M, x_zp, pick(isa));
    py::array_t<int8_t> out({static_cast<py::ssize_t>(M), static_cast<py::ssize_t>(w_.N)});
    kernels::epilogue_q8(w_, acc.data(), M, mult.data(), shift.data(), out_zp, bias ? bias->data() : nullptr,
                         out.mutable_data());
    return out;
  }

  // Per-iteration nanoseconds of accumulate + group-sum epilogue, timed here so no Python
  // overhead is measured; scratch and outputs are allocated before the clock starts.
  py::array_t<int64_t> bench(carray<int8_t> x, int x_zp, std::optional<std::string> isa, int warmup, int iters,
                             std::optional<double> min_time_s) const {
    const int M = check_x(x, x_zp);
    if (warmup < 0 || iters < 1) throw py::value_error("warmup must be >= 0 and iters >= 1");
    const kernels::LinearVariant* v = pick(isa);
    std::vector<int64_t> times;
    {
      py::gil_scoped_release nogil;
      std::vector<int32_t> acc(static_cast<size_t>(M) * w_.N * w_.ngroups);
      std::vector<int32_t> out(static_cast<size_t>(M) * w_.N);
      Scratch s;
      void* scratch = s.get(v->scratch_bytes(w_, M));
      using clock = std::chrono::steady_clock;
      for (int i = 0; i < warmup; ++i) {
        dispatch::linear_accumulate(*v, w_, x.data(), M, x_zp, acc.data(), scratch);
        kernels::epilogue_sum_groups(w_, acc.data(), M, out.data());
      }
      const double min_ns = min_time_s ? *min_time_s * 1e9 : 0.0;
      double total = 0;
      for (int i = 0; i < iters || total < min_ns; ++i) {
        const auto t0 = clock::now();
        dispatch::linear_accumulate(*v, w_, x.data(), M, x_zp, acc.data(), scratch);
        kernels::epilogue_sum_groups(w_, acc.data(), M, out.data());
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count();
        times.push_back(ns);
        total += static_cast<double>(ns);
        if (times.size() >= 10'000'000) break;
      }
    }
    py::array_t<int64_t> out(static_cast<py::ssize_t>(times.size()));
    std::memcpy(out.mutable_data(), times.data(), times.size() * 8);
    return out;
  }

  py::array_t<int32_t> wsum() const {
    py::array_t<int32_t> out({static_cast<py::ssize_t>(w_.N), static_cast<py::ssize_t>(w_.ngroups)});
    std::memcpy(out.mutable_data(), w_.wsum.data(), w_.wsum.size() * 4);
    return out;
  }

 private:
  carray<uint8_t> codes_;
  carray<uint64_t> bitmaps_;
  carray<uint32_t> offsets_;
  carray<int8_t> codebook_;
  carray<float> scales_;
  PackedLinear w_;
};

std::vector<std::string> isa_names(const std::vector<const kernels::LinearVariant*>& vs) {
  std::vector<std::string> out;
  for (const auto* v : vs) out.push_back(v->isa);
  return out;
}

}  // namespace

void register_kernels(py::module_& m) {
  py::class_<Packed>(m, "PackedLinear", "Validated packed weights (docs/format.md §1) over numpy sections.")
      .def(py::init<py::bytes, carray<uint8_t>, carray<uint64_t>, carray<uint32_t>, carray<int8_t>, carray<float>>(),
           py::arg("header"), py::arg("codes"), py::arg("bitmaps"), py::arg("offsets"), py::arg("codebook"),
           py::arg("scales"))
      .def("accumulate", &Packed::accumulate, py::arg("x"), py::arg("x_zero_point") = 0, py::arg("isa") = py::none(),
           "int32 accumulators (M, N, ngroups) of one variant")
      .def("linear", &Packed::linear, py::arg("x"), py::arg("x_zero_point") = 0, py::arg("isa") = py::none())
      .def("linear_f32", &Packed::linear_f32, py::arg("x"), py::arg("x_scale"), py::arg("x_zero_point") = 0,
           py::arg("bias") = py::none(), py::arg("isa") = py::none())
      .def("linear_q8", &Packed::linear_q8, py::arg("x"), py::arg("x_zero_point"), py::arg("multiplier"),
           py::arg("shift"), py::arg("out_zero_point"), py::arg("bias") = py::none(), py::arg("isa") = py::none())
      .def("bench", &Packed::bench, py::arg("x"), py::arg("x_zero_point") = 0, py::arg("isa") = py::none(),
           py::arg("warmup") = 10, py::arg("iters") = 100, py::arg("min_time_s") = py::none())
      .def_property_readonly("wsum", &Packed::wsum)
      .def_property_readonly("stored_bytes", [](const Packed& p) { return p.view().stored_bytes(); });

  m.def("validate_serialized", [](py::bytes b) {
    std::string s = b;  // a private copy is 8-byte aligned (operator new) for the reader
    std::vector<uint64_t> aligned((s.size() + 7) / 8);
    std::memcpy(aligned.data(), s.data(), s.size());
    PackedLinear w;
    throw_if(parse_packed_linear(reinterpret_cast<const uint8_t*>(aligned.data()), s.size(), &w));
  }, "Run the C++ reader over serialized packed weights; ValueError if they are invalid.");
  m.def("compiled_isas", [] { return isa_names(dispatch::compiled_linear_variants()); });
  m.def("available_isas", [] { return isa_names(dispatch::available_linear_variants()); });
  m.def("default_isa", [] { return std::string(pick(std::nullopt)->isa); });
  m.def("kernel_name", [](const std::string& isa) { return std::string(pick(isa)->name); });
  m.def("cpu_features", [] {
    const auto& f = dispatch::cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["avx512"] = f.avx512;
    d["avx512vbmi2"] = f.avx512vbmi2;
    d["neon"] = f.neon;
    d["neondot"] = f.neondot;
    return d;
  });
}

}  // namespace edgekit::bindings
