// Model loading: map the file, parse the container, then check every op of every graph with
// its OpDef::infer (dtypes, ranks, attributes) and compare the computed output infos with the
// stored tensors, so that a file whose shapes do not follow from its ops is rejected at load.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "edgekit/model.h"
#include "format/ekm.h"
#include "runtime/op.h"
#include "runtime/ops/common.h"

namespace edgekit {
namespace {

using runtime::TensorInfo;

std::string shape_str(const TensorInfo& t) {
  return std::string(runtime::ops::dtype_name(t.dtype)) + " " + runtime::ops::shape_str(t);
}

bool same_info(const TensorInfo& a, const TensorInfo& b) {
  if (a.dtype != b.dtype || a.rank != b.rank) return false;
  for (int i = 0; i < a.rank; ++i)
    if (a.dims[i] != b.dims[i]) return false;
  return true;
}

Status check_op(const ekm::File& f, const ekm::Op& op, int index) {
  std::string where = "ekm: op " + std::to_string(index) + " (" + op.name + ")";
  const runtime::OpDef* def = runtime::find_op(op.code);
  if (def == nullptr)
    return Status::Invalid(where + ": op code " + std::to_string(op.code) + " is not implemented by this runtime");
  runtime::OpSignature sig;
  for (int32_t t : op.inputs) {
    sig.inputs.push_back(t < 0 ? nullptr : &f.tensors[t].info);
    sig.input_is_const.push_back(t >= 0 && f.tensors[t].kind == ekm::kConst);
    sig.input_prepared.push_back(t < 0 ? nullptr : f.tensors[t].packed);
  }
  sig.ints = op.ints.data();
  sig.n_ints = static_cast<int>(op.ints.size());
  sig.floats = op.floats.data();
  sig.n_floats = static_cast<int>(op.floats.size());
  std::vector<TensorInfo> outs;
  Status st = def->infer(sig, &outs);
  if (!st.ok()) return Status::Invalid(where + ": " + st.message());
  if (outs.size() != op.outputs.size())
    return Status::Invalid(where + ": " + def->name + " computes " + std::to_string(outs.size()) +
                           " outputs, the file lists " + std::to_string(op.outputs.size()));
  for (size_t i = 0; i < outs.size(); ++i) {
    const ekm::Tensor& t = f.tensors[op.outputs[i]];
    if (!same_info(outs[i], t.info))
      return Status::Invalid(where + ": output '" + t.name + "' is stored as " + shape_str(t.info) + " but " +
                             def->name + " computes " + shape_str(outs[i]));
  }
  return Status::Ok();
}

}  // namespace

Model::Model() : file_(std::make_unique<ekm::File>()) {}

Model::~Model() {
  file_.reset();  // views into the mapping go first
  if (map_ != nullptr) munmap(map_, map_len_);
}

Status Model::init(const uint8_t* data, size_t len) {
  Status st = ekm::parse_ekm(data, len, file_.get());
  if (!st.ok()) return st;
  for (size_t i = 0; i < file_->ops.size(); ++i) {
    st = check_op(*file_, file_->ops[i], static_cast<int>(i));
    if (!st.ok()) return st;
  }
  return Status::Ok();
}

Status Model::load(const std::string& path, std::shared_ptr<const Model>* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Invalid(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    return Status::Invalid(path + ": not a regular file");
  }
  size_t len = static_cast<size_t>(sb.st_size);
  if (len < ekm::kHeaderBytes) {
    ::close(fd);
    return Status::Invalid(path + ": ekm: file is " + std::to_string(len) +
                           " bytes, shorter than the 64-byte header");
  }
  void* p = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED) return Status::Invalid(path + ": mmap failed (" + std::strerror(errno) + ")");
  std::shared_ptr<Model> m(new Model());
  m->map_ = p;
  m->map_len_ = len;
  Status st = m->init(static_cast<const uint8_t*>(p), len);
  if (!st.ok()) return Status::Invalid(path + ": " + st.message());
  *out = std::move(m);
  return Status::Ok();
}

Status Model::from_bytes(const void* data, size_t len, std::shared_ptr<const Model>* out) {
  std::shared_ptr<Model> m(new Model());
  m->owned_.reset(new uint8_t[len + 64]);
  auto addr = reinterpret_cast<uintptr_t>(m->owned_.get());
  uint8_t* aligned = m->owned_.get() + ((64 - addr % 64) % 64);
  if (len) std::memcpy(aligned, data, len);
  Status st = m->init(aligned, len);
  if (!st.ok()) return st;
  *out = std::move(m);
  return Status::Ok();
}

std::vector<std::string> Model::graph_names() const {
  std::vector<std::string> names;
  for (const auto& g : file_->graphs) names.push_back(g.name);
  return names;
}

const std::string& Model::meta_json() const { return file_->meta; }
uint64_t Model::file_bytes() const { return file_->file_bytes; }
uint32_t Model::crc32() const { return file_->crc32; }

}  // namespace edgekit
