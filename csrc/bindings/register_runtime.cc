// Python bindings for the runtime (Model, Session). Thin: numpy conversion and the GIL; the
// facade with its documented API is edgekit/runtime/__init__.py. Errors are raised as the
// Python class edgekit.runtime registers through _set_runtime_error (RuntimeModelError), so
// a bad file or input is an EdgekitError with the runtime's one-line message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "edgekit/model.h"
#include "edgekit/session.h"

namespace py = pybind11;

namespace edgekit::bindings {
namespace {

// The exception class; leaked on purpose so nothing runs at interpreter teardown.
PyObject* g_error = nullptr;

[[noreturn]] void raise(const std::string& msg) {
  PyErr_SetString(g_error != nullptr ? g_error : PyExc_ValueError, msg.c_str());
  throw py::error_already_set();
}

void check(const Status& st) {
  if (!st.ok()) raise(st.message());
}

std::string dtype_code(const py::array& a) {
  char kind = a.dtype().kind();
  size_t size = a.dtype().itemsize();
  if (kind == 'f' && size == 4) return "f32";
  if (kind == 'i' && size == 4) return "i32";
  if (kind == 'i' && size == 1) return "i8";
  if (kind == 'u' && size == 1) return "u8";
  if (kind == 'i' && size == 8) return "i64";
  return py::str(a.dtype()).cast<std::string>();
}

py::dtype np_dtype(const std::string& code) {
  if (code == "f32") return py::dtype::of<float>();
  if (code == "i32") return py::dtype::of<int32_t>();
  if (code == "i8") return py::dtype::of<int8_t>();
  if (code == "u8") return py::dtype::of<uint8_t>();
  return py::dtype::of<int64_t>();
}

py::list describe(const std::vector<TensorDesc>& ds) {
  py::list out;
  for (const auto& d : ds) {
    py::dict e;
    e["name"] = d.name;
    e["dtype"] = d.dtype;
    e["shape"] = py::tuple(py::cast(d.shape));
    out.append(e);
  }
  return out;
}

// A C-contiguous view of `obj` (copied only when it is not contiguous); dtype unchanged.
py::array as_array(const py::handle& obj, const std::string& name) {
  if (!py::isinstance<py::array>(obj)) raise("'" + name + "' must be a numpy array, got " + std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!(a.flags() & py::array::c_style)) a = py::module_::import("numpy").attr("ascontiguousarray")(a);
  return a;
}

struct Staged {
  std::string name, dtype;
  std::vector<int64_t> shape;
  py::array keep;  // owns the data while the GIL is released
};

std::vector<Staged> stage(const py::dict& values) {
  std::vector<Staged> out;
  for (auto item : values) {
    if (!py::isinstance<py::str>(item.first)) raise("input names must be strings");
    std::string name = item.first.cast<std::string>();
    py::array a = as_array(item.second, name);
    out.push_back({name, dtype_code(a), std::vector<int64_t>(a.shape(), a.shape() + a.ndim()), a});
  }
  return out;
}

class PySession {
 public:
  PySession(std::shared_ptr<const Model> model, const std::string& graph, int threads, const std::string& isa) {
    SessionOptions o;
    o.graph = graph;
    o.threads = threads;
    o.isa = isa;
    check(Session::create(std::move(model), o, &s_));
  }

  Session& s() { return *s_; }

  py::dict run(const py::dict& inputs) {
    std::vector<Staged> in = stage(inputs);
    if (in.size() != s_->inputs().size()) {
      std::string names;
      for (const auto& d : s_->inputs()) names += (names.empty() ? "" : ", ") + d.name;
      raise("graph '" + s_->graph() + "' takes " + std::to_string(s_->inputs().size()) + " input(s) (" + names +
            "), got " + std::to_string(in.size()));
    }
    std::vector<py::array> outs;
    for (const auto& d : s_->outputs()) outs.emplace_back(np_dtype(d.dtype), d.shape);
    std::vector<void*> dst;
    for (auto& a : outs) dst.push_back(a.mutable_data());
    Status st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& x : in) {
        st = s_->set_input(x.name, x.dtype, x.shape, x.keep.data(), static_cast<size_t>(x.keep.nbytes()));
        if (!st.ok()) break;
      }
      if (st.ok()) st = s_->run();
      if (st.ok())
        for (size_t i = 0; i < dst.size(); ++i) std::memcpy(dst[i], s_->output_data(i), s_->outputs()[i].bytes);
    }
    check(st);
    py::dict result;
    for (size_t i = 0; i < outs.size(); ++i) result[py::str(s_->outputs()[i].name)] = outs[i];
    return result;
  }

  py::dict state() {
    auto lock = acquire();
    py::dict out;
    const auto& ds = s_->states();
    for (size_t i = 0; i < ds.size(); ++i) {
      py::array a(np_dtype(ds[i].dtype), ds[i].shape);
      std::memcpy(a.mutable_data(), s_->state_data(i), ds[i].bytes);
      out[py::str(ds[i].name)] = a;
    }
    return out;
  }

  void set_state(const py::dict& values) {
    std::vector<Staged> in = stage(values);
    auto lock = acquire();
    for (const auto& x : in)
      check(s_->set_state(x.name, x.dtype, x.shape, x.keep.data(), static_cast<size_t>(x.keep.nbytes())));
  }

  void reset() {
    auto lock = acquire();
    s_->reset();
  }

  py::list profile() {
    auto lock = acquire();
    py::list out;
    for (const auto& e : s_->profile()) {
      py::dict d;
      d["op"] = e.op;
      d["name"] = e.name;
      d["calls"] = e.calls;
      d["total_us"] = e.total_us;
      d["mean_us"] = e.calls ? e.total_us / static_cast<double>(e.calls) : 0.0;
      out.append(d);
    }
    return out;
  }

  void reset_profile() {
    auto lock = acquire();
    s_->reset_profile();
  }

 private:
  // Waits for a running call without the GIL (a run can take seconds and every other Python
  // thread would stall behind it), then takes the GIL back while holding the session. No
  // thread ever waits for mu_ while holding the GIL, so this cannot deadlock with run().
  std::unique_lock<std::mutex> acquire() {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    if (!lock.try_lock()) {
      py::gil_scoped_release nogil;
      lock.lock();
    }
    return lock;
  }

  std::unique_ptr<Session> s_;
  std::mutex mu_;  // run() releases the GIL; one call at a time per session
};

}  // namespace

void register_runtime(py::module_& m) {
  m.def("_set_runtime_error", [](py::object cls) {
    Py_XDECREF(g_error);
    g_error = cls.release().ptr();
  });

  py::class_<Model, std::shared_ptr<Model>>(m, "RuntimeModel")
      .def(py::init([](const std::string& path) {
             std::shared_ptr<const Model> model;
             check(Model::load(path, &model));
             return std::const_pointer_cast<Model>(model);
           }),
           py::arg("path"), "Map and validate an .ekm file.")
      .def_static("from_bytes", [](py::bytes b) {
             std::string_view v = b;
             std::shared_ptr<const Model> model;
             check(Model::from_bytes(v.data(), v.size(), &model));
             return std::const_pointer_cast<Model>(model);
           })
      .def_property_readonly("graph_names", &Model::graph_names)
      .def_property_readonly("meta_json", &Model::meta_json)
      .def_property_readonly("file_bytes", &Model::file_bytes)
      .def_property_readonly("crc32", &Model::crc32);

  py::class_<PySession>(m, "RuntimeSession")
      .def(py::init([](std::shared_ptr<Model> model, const std::string& graph, int threads, const std::string& isa) {
             return new PySession(model, graph, threads, isa);
           }),
           py::arg("model"), py::arg("graph") = "", py::arg("threads") = 1, py::arg("isa") = "")
      .def_property_readonly("graph", [](PySession& p) { return p.s().graph(); })
      .def_property_readonly("inputs", [](PySession& p) { return describe(p.s().inputs()); })
      .def_property_readonly("outputs", [](PySession& p) { return describe(p.s().outputs()); })
      .def_property_readonly("states", [](PySession& p) { return describe(p.s().states()); })
      .def_property_readonly("arena_bytes", [](PySession& p) { return p.s().arena_bytes(); })
      .def_property_readonly("naive_bytes", [](PySession& p) { return p.s().naive_bytes(); })
      .def_property_readonly("state_bytes", [](PySession& p) { return p.s().state_bytes(); })
      .def_property_readonly("isa", [](PySession& p) { return std::string(p.s().isa()); })
      .def_property_readonly("kernel", [](PySession& p) { return std::string(p.s().kernel()); })
      .def_property_readonly("threads", [](PySession& p) { return p.s().threads(); })
      .def("run", &PySession::run, py::arg("inputs"))
      .def("reset", &PySession::reset)
      .def("state", &PySession::state)
      .def("set_state", &PySession::set_state, py::arg("values"))
      .def("profile", &PySession::profile)
      .def("reset_profile", &PySession::reset_profile);
}

}  // namespace edgekit::bindings
