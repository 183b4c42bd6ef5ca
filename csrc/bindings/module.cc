// edgekit._C: the one extension module. Each area registers itself from its own
// register_<area>.cc; this file only wires them (boost-histogram style).
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace edgekit::bindings {
void register_kernels(py::module_& m);
void register_runtime(py::module_& m);
}  // namespace edgekit::bindings

PYBIND11_MODULE(_C, m) {
  m.doc() = "edgekit C++ core: packed low-bit kernels and runtime";
  edgekit::bindings::register_kernels(m);
  edgekit::bindings::register_runtime(m);
}
