// The executor: binds one graph of a validated Model to memory (arena, input/output/state
// buffers, mapped constants), prepares its ops once, and evaluates them in order per call.
#include "edgekit/session.h"

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "dispatch/dispatch.h"
#include "format/ekm.h"
#include "runtime/meta.h"
#include "runtime/op.h"
#include "runtime/ops/common.h"
#include "runtime/planner.h"
#include "runtime/threadpool.h"

namespace edgekit {
namespace {

using runtime::DType;
using runtime::TensorInfo;
using runtime::TensorRef;

// Upper bound on what one session allocates (arena + its own buffers).
constexpr uint64_t kMaxSessionBytes = uint64_t{1} << 31;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

// 64-byte aligned, zero-initialised heap buffer.
struct AlignedBuffer {
  void* p = nullptr;
  size_t n = 0;
  explicit AlignedBuffer(size_t bytes) : n(bytes) {
    p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (p) std::memset(p, 0, (bytes + 63) / 64 * 64 + 64);
  }
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

}  // namespace

struct Session::Impl {
  std::shared_ptr<const Model> model;
  const ekm::Graph* graph = nullptr;
  const kernels::LinearVariant* linear = nullptr;
  std::unique_ptr<runtime::ThreadPool> pool;
  int threads = 1;

  std::vector<TensorRef> refs;  // per tensor of the file; only this graph's are bound
  std::unique_ptr<AlignedBuffer> arena;
  std::vector<std::unique_ptr<AlignedBuffer>> io;  // inputs, outputs, states
  runtime::ArenaPlan plan;

  struct OpRun {
    const runtime::OpDef* def = nullptr;
    const ekm::Op* op = nullptr;
    runtime::OpContext ctx;
    void* state = nullptr;
    uint64_t calls = 0, ns = 0;
  };
  std::vector<OpRun> ops;

  std::vector<TensorDesc> inputs, outputs, states;
  std::vector<int32_t> in_idx, out_idx, state_idx, next_idx;
  size_t state_bytes = 0;

  ~Impl() {
    for (auto& r : ops)
      if (r.state != nullptr && r.def->release != nullptr) r.def->release(r.state);
  }

  TensorDesc describe(int32_t t) const {
    const ekm::Tensor& x = model->file().tensors[t];
    TensorDesc d{x.name, runtime::ops::dtype_name(x.info.dtype), {}, x.info.nbytes()};
    d.shape.assign(x.info.dims, x.info.dims + x.info.rank);
    return d;
  }

  // A buffer of its own for a graph input, output or state.
  void own(int32_t t) {
    io.push_back(std::make_unique<AlignedBuffer>(refs[t].info.nbytes()));
    refs[t].data = io.back()->p;
    refs[t].bytes = io.back()->n;
  }

  Status bind();
  Status copy_in(const std::vector<TensorDesc>& descs, const std::vector<int32_t>& idx, const char* what,
                 const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                 const void* data, size_t bytes);
};

Status Session::Impl::bind() {
  const ekm::File& f = model->file();
  const ekm::Graph& g = *graph;
  refs.resize(f.tensors.size());
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    refs[i].info = f.tensors[i].info;
    if (f.tensors[i].kind == ekm::kConst) {
      refs[i].data = const_cast<uint8_t*>(f.tensors[i].data);  // ops only read constants
      refs[i].bytes = f.tensors[i].data_bytes;
      refs[i].prepared = f.tensors[i].packed;
    }
  }
  // A hostile or mistaken file can declare tensors of 2^31 elements: refuse before allocating.
  uint64_t io_bytes = 0;
  for (int32_t t : g.inputs) io_bytes += refs[t].info.nbytes();
  for (int32_t t : g.outputs) io_bytes += refs[t].info.nbytes();
  for (auto st : g.states) io_bytes += refs[st.first].info.nbytes();
  if (io_bytes > kMaxSessionBytes)
    return Status::Invalid("graph '" + g.name + "' needs " + std::to_string(io_bytes) +
                           " bytes of inputs, outputs and states, more than the runtime's 2 GiB limit");
  for (int32_t t : g.inputs) own(t), in_idx.push_back(t), inputs.push_back(describe(t));
  for (int32_t t : g.outputs) own(t), out_idx.push_back(t), outputs.push_back(describe(t));
  for (auto [s, next] : g.states) {
    own(s);
    state_idx.push_back(s);
    next_idx.push_back(next);
    states.push_back(describe(s));
    state_bytes += refs[s].info.nbytes();
  }

  // Live ranges of this graph's activations; a state's next value must survive to the end,
  // where it is copied into the state.
  const int n = g.op_count;
  std::vector<int> first(f.tensors.size(), -1), last(f.tensors.size(), -1);
  for (int i = 0; i < n; ++i) {
    const ekm::Op& op = f.ops[g.op_first + i];
    for (int32_t t : op.inputs)
      if (t >= 0) last[t] = i;
    for (int32_t t : op.outputs) first[t] = i, last[t] = std::max(last[t], i);
  }
  for (int32_t t : next_idx) last[t] = n - 1;

  std::vector<runtime::ArenaRequest> reqs;
  std::vector<int32_t> req_tensor;  // tensor index, or -(op + 1) for an op's scratch
  for (size_t t = 0; t < f.tensors.size(); ++t)
    if (first[t] >= 0 && f.tensors[t].kind == ekm::kActivation) {
      reqs.push_back({f.tensors[t].info.nbytes(), first[t], last[t]});
      req_tensor.push_back(static_cast<int32_t>(t));
    }

  ops.resize(n);
  std::vector<runtime::OpSignature> sigs(n);
  std::vector<std::vector<TensorInfo>> outs(n);
  for (int i = 0; i < n; ++i) {
    OpRun& r = ops[i];
    r.op = &f.ops[g.op_first + i];
    r.def = runtime::find_op(r.op->code);  // non-null: Model::init checked every op
    runtime::OpSignature& sig = sigs[i];
    for (int32_t t : r.op->inputs) {
      sig.inputs.push_back(t < 0 ? nullptr : &f.tensors[t].info);
      sig.input_is_const.push_back(t >= 0 && f.tensors[t].kind == ekm::kConst);
      sig.input_prepared.push_back(t < 0 ? nullptr : f.tensors[t].packed);
    }
    sig.ints = r.op->ints.data();
    sig.n_ints = static_cast<int>(r.op->ints.size());
    sig.floats = r.op->floats.data();
    sig.n_floats = static_cast<int>(r.op->floats.size());
    for (int32_t t : r.op->outputs) outs[i].push_back(f.tensors[t].info);
    size_t scratch = r.def->scratch_bytes ? r.def->scratch_bytes(sig, outs[i], linear, threads) : 0;
    if (scratch > kMaxSessionBytes)
      return Status::Invalid(r.op->name + " (" + r.def->name + "): needs " + std::to_string(scratch) +
                             " bytes of scratch, more than the runtime's 2 GiB limit");
    if (scratch > 0) {
      reqs.push_back({scratch, i, i});
      req_tensor.push_back(-(i + 1));
    }
    r.ctx.scratch_bytes = scratch;
  }

  plan = runtime::plan_arena(reqs, 64);
  if (plan.arena_bytes > kMaxSessionBytes - io_bytes)
    return Status::Invalid("graph '" + g.name + "' needs a " + std::to_string(plan.arena_bytes) +
                           "-byte arena, more than the runtime's 2 GiB limit");
  arena = std::make_unique<AlignedBuffer>(plan.arena_bytes);
  if (arena->p == nullptr) return Status::Invalid("cannot allocate a " + std::to_string(plan.arena_bytes) + "-byte arena");
  auto* base = static_cast<uint8_t*>(arena->p);
  for (size_t k = 0; k < reqs.size(); ++k) {
    if (req_tensor[k] >= 0) {
      refs[req_tensor[k]].data = base + plan.offsets[k];
      refs[req_tensor[k]].bytes = reqs[k].bytes;
    } else {
      ops[-req_tensor[k] - 1].ctx.scratch = base + plan.offsets[k];
    }
  }
  for (auto& b : io)
    if (b->p == nullptr) return Status::Invalid("cannot allocate session buffers");

  // Every operand must be bound by now (the reader guarantees it; never run on a null buffer).
  for (const OpRun& r : ops)
    for (const auto* list : {&r.op->inputs, &r.op->outputs})
      for (int32_t t : *list)
        if (t >= 0 && refs[t].data == nullptr)
          return Status::Invalid("internal error: tensor '" + f.tensors[t].name + "' of op " + r.op->name + " has no buffer");

  for (int i = 0; i < n; ++i) {
    OpRun& r = ops[i];
    std::vector<const TensorRef*> consts;
    for (int32_t t : r.op->inputs)
      consts.push_back(t >= 0 && f.tensors[t].kind == ekm::kConst ? &refs[t] : nullptr);
    if (r.def->prepare != nullptr) {
      Status st = r.def->prepare(sigs[i], consts, &r.state);
      if (!st.ok()) return Status::Invalid(r.op->name + " (" + r.def->name + "): " + st.message());
    }
    runtime::OpContext& c = r.ctx;
    for (int32_t t : r.op->inputs) c.inputs.push_back(t < 0 ? nullptr : &refs[t]);
    for (int32_t t : r.op->outputs) c.outputs.push_back(&refs[t]);
    c.ints = r.op->ints.data();
    c.n_ints = static_cast<int>(r.op->ints.size());
    c.floats = r.op->floats.data();
    c.n_floats = static_cast<int>(r.op->floats.size());
    c.state = r.state;
    c.linear = linear;
    c.pool = pool.get();
    c.threads = threads;
  }
  return Status::Ok();
}

Status Session::Impl::copy_in(const std::vector<TensorDesc>& descs, const std::vector<int32_t>& idx,
                              const char* what, const std::string& name, const std::string& dtype,
                              const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  for (size_t i = 0; i < descs.size(); ++i) {
    if (descs[i].name != name) continue;
    const TensorDesc& d = descs[i];
    if (dtype != d.dtype)
      return Status::Invalid(std::string(what) + " '" + name + "' must be " + d.dtype + ", got " + dtype);
    if (shape != d.shape)
      return Status::Invalid(std::string(what) + " '" + name + "' must have shape " + shape_str(d.shape) +
                             ", got " + shape_str(shape));
    if (bytes != d.bytes) return Status::Invalid(std::string(what) + " '" + name + "': wrong byte size");
    std::memcpy(refs[idx[i]].data, data, bytes);
    return Status::Ok();
  }
  std::string known;
  for (const auto& d : descs) known += (known.empty() ? "" : ", ") + d.name;
  return Status::Invalid("unknown " + std::string(what) + " '" + name + "' (graph '" + graph->name + "' has: " +
                         (known.empty() ? "none" : known) + ")");
}

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

Status Session::create(std::shared_ptr<const Model> model, const SessionOptions& opts,
                       std::unique_ptr<Session>* out) {
  if (!model) return Status::Invalid("session: no model");
  auto impl = std::make_unique<Impl>();
  const ekm::File& f = model->file();
  std::string graph = opts.graph;
  if (graph.empty()) {
    Status st = runtime::meta_streaming_graph(f.meta, &graph);
    if (!st.ok()) return st;
    if (!graph.empty() && f.find_graph(graph) < 0)
      return Status::Invalid("META names streaming graph '" + graph + "', which the model does not have");
  }
  if (graph.empty()) {
    if (f.graphs.size() != 1) {
      std::string names;
      for (const auto& g : f.graphs) names += (names.empty() ? "" : ", ") + g.name;
      return Status::Invalid("the model has " + std::to_string(f.graphs.size()) + " graphs (" + names +
                             "); choose one with graph=");
    }
    impl->graph = &f.graphs[0];
  } else {
    int gi = f.find_graph(graph);
    if (gi < 0) return Status::Invalid("the model has no graph '" + graph + "'");
    impl->graph = &f.graphs[gi];
  }
  if (opts.threads < 1 || opts.threads > 256)
    return Status::Invalid("threads must be in 1..256, got " + std::to_string(opts.threads));
  Status st = opts.isa.empty() ? dispatch::default_linear_variant(&impl->linear)
                               : dispatch::find_linear_variant(opts.isa, &impl->linear);
  if (!st.ok()) return st;
  impl->threads = opts.threads;
  if (opts.threads > 1) impl->pool = std::make_unique<runtime::ThreadPool>(opts.threads);
  impl->model = std::move(model);
  if (!(st = impl->bind()).ok()) return st;
  out->reset(new Session(std::move(impl)));
  return Status::Ok();
}

const std::string& Session::graph() const { return impl_->graph->name; }
const std::vector<TensorDesc>& Session::inputs() const { return impl_->inputs; }
const std::vector<TensorDesc>& Session::outputs() const { return impl_->outputs; }
const std::vector<TensorDesc>& Session::states() const { return impl_->states; }
size_t Session::arena_bytes() const { return impl_->plan.arena_bytes; }
size_t Session::naive_bytes() const { return impl_->plan.naive_bytes; }
size_t Session::state_bytes() const { return impl_->state_bytes; }
const char* Session::isa() const { return impl_->linear->isa; }
const char* Session::kernel() const { return impl_->linear->name; }
int Session::threads() const { return impl_->threads; }

Status Session::set_input(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                          const void* data, size_t bytes) {
  return impl_->copy_in(impl_->inputs, impl_->in_idx, "input", name, dtype, shape, data, bytes);
}

Status Session::set_state(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                          const void* data, size_t bytes) {
  return impl_->copy_in(impl_->states, impl_->state_idx, "state", name, dtype, shape, data, bytes);
}

Status Session::run() {
  Impl& s = *impl_;
  for (auto& r : s.ops) {
    auto t0 = std::chrono::steady_clock::now();
    Status st = r.def->eval(r.ctx);
    auto t1 = std::chrono::steady_clock::now();
    r.calls += 1;
    r.ns += static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    // A failed call leaves the states as they were: the step did not happen.
    if (!st.ok()) return Status::Invalid(r.op->name + " (" + r.def->name + "): " + st.message());
  }
  for (size_t i = 0; i < s.state_idx.size(); ++i) {
    TensorRef& dst = s.refs[s.state_idx[i]];
    std::memcpy(dst.data, s.refs[s.next_idx[i]].data, dst.info.nbytes());
  }
  return Status::Ok();
}

const void* Session::output_data(size_t i) const { return impl_->refs[impl_->out_idx.at(i)].data; }
const void* Session::state_data(size_t i) const { return impl_->refs[impl_->state_idx.at(i)].data; }

void Session::reset() {
  for (int32_t t : impl_->state_idx) std::memset(impl_->refs[t].data, 0, impl_->refs[t].info.nbytes());
}

std::vector<OpProfile> Session::profile() const {
  std::vector<OpProfile> out;
  for (const auto& r : impl_->ops) out.push_back({r.def->name, r.op->name, r.calls, r.ns / 1000.0});
  return out;
}

void Session::reset_profile() {
  for (auto& r : impl_->ops) r.calls = 0, r.ns = 0;
}

}  // namespace edgekit
