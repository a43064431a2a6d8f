// impl="onednn": oneDNN's CPU convolution primitives (PyTorch's CPU kernels) as XLA FFI
// handlers. jconv/_onednn.py loads this library, registers the three handlers and wires them
// into jax.custom_vjp; every argument reaching here was validated there.
//
// Three handlers, one per pass, share one primitive cache:
//   jconv_onednn_fwd          y  = conv(x, w) [+ b] [-> relu | gelu_tanh]   (post-ops)
//   jconv_onednn_bwd_data     dx = conv_backward_data(dy, w)
//   jconv_onednn_bwd_weights  dw, db = conv_backward_weights(x, dy)         (db: (C_out,) or (0,))
// 1, 2 or 3 spatial dims (the rank of the operands says which). Activations are in the
// caller's layout (ncw/nchw/ncdhw or nwc/nhwc/ndhwc tags, no transposes in JAX); weights are
// (C_out, C_in/groups, *kernel) = oiw/oihw/oidhw, or goiw/goihw/goidhw for groups > 1 (the same
// bytes).
//
// Two more handlers run training-mode batch normalisation (jconv/_onednn_bn.py), through the
// same cache:
//   jconv_onednn_bn_fwd       y, mean, var = batch_normalization_forward(x, [scale], shift)
//   jconv_onednn_bn_bwd       dx, dscale, dshift = batch_normalization_backward(x, dy, mean, var,
//                                                                             [scale])
// var is the biased batch variance; dscale is (0,) without a learned scale.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/mman.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

// OpenMP, which oneDNN's gomp build runs on (libgomp, a dependency of libdnnl).
extern "C" void omp_set_num_threads(int n);
extern "C" int omp_get_max_threads();

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

namespace {

enum Pass : int { kFwd = 0, kBwdData = 1, kBwdWeights = 2, kBnFwd = 3, kBnBwd = 4 };
enum PostOp : int64_t { kNoAct = 0, kRelu = 1, kGeluTanh = 2 };

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Everything that defines a primitive: the cache key.
struct Geometry {
  int pass = kFwd;
  Dt type = Dt::f32;
  bool channels_last = false;  // nwc / nhwc / ndhwc
  memory::dims src, wei, dst;  // logical NC* / (G)OI* / NC* dims
  memory::dims stride, dilation, pad_l, pad_r;  // dilation counted from 0, as oneDNN does
  int64_t groups = 1;
  int64_t act = kNoAct;
  bool bias = false;   // batch normalisation: use_shift (always set) is implied
  bool scale = false;  // batch normalisation: use_scale (a learned scale)
  float eps = 0.f;     // batch normalisation
  // The OpenMP team size the primitive was created for: some kernels (batch normalisation's,
  // some backward-weights ones) split their work for it at creation and run that many
  // threads whatever the caller's setting is later.
  int threads = 0;

  bool is_bn() const { return pass == kBnFwd || pass == kBnBwd; }

  std::string key() const {
    std::ostringstream s;
    auto put = [&s](const memory::dims& d) {
      for (auto v : d) s << v << ',';
      s << ';';
    };
    // eps in hexadecimal: exact, so two epsilons never share a primitive.
    s << pass << ';' << static_cast<int>(type) << ';' << channels_last << ';' << groups << ';' << act
      << ';' << bias << ';' << scale << ';' << std::hexfloat << eps << std::defaultfloat << ';'
      << threads << ';';
    for (const auto* d : {&src, &wei, &dst, &stride, &dilation, &pad_l, &pad_r}) put(*d);
    return s.str();
  }
};

// One primitive argument: the plain layout XLA hands over, the layout the primitive wants,
// and the reorder between them (empty when they are the same).
struct Operand {
  int arg;
  bool output;
  memory::desc user, prim;
  dnnl::reorder reorder;
};

struct Entry {
  dnnl::primitive prim;
  std::vector<Operand> operands;  // in the order the handler passes their pointers
  memory::desc scratchpad;
  std::string impl;               // oneDNN's implementation name, e.g. "brg:avx512_core"
};

Operand make_operand(int arg, bool output, const memory::desc& user, const memory::desc& prim) {
  Operand op{arg, output, user, prim, dnnl::reorder()};
  if (user != prim) {
    auto& eng = cpu_engine();
    op.reorder = output ? dnnl::reorder(dnnl::reorder::primitive_desc(eng, prim, eng, user))
                        : dnnl::reorder(dnnl::reorder::primitive_desc(eng, user, eng, prim));
  }
  return op;
}

// The plain tag of an activation with `rank` dims (3, 4 or 5) in the caller's layout.
Tag act_tag(size_t rank, bool channels_last) {
  if (rank == 3) return channels_last ? Tag::nwc : Tag::ncw;
  if (rank == 5) return channels_last ? Tag::ndhwc : Tag::ncdhw;
  return channels_last ? Tag::nhwc : Tag::nchw;
}

// Where a primitive's activations live: the caller's layout, the one oneDNN chooses, or plain
// channels last whatever the caller's (reorders in and out).
enum class Layout { kCaller, kAny, kChannelsLast };

memory::desc act_desc(const Geometry& g, const memory::dims& dims, Layout layout) {
  if (layout == Layout::kAny) return memory::desc(dims, g.type, Tag::any);
  const bool last = layout == Layout::kChannelsLast || g.channels_last;
  return memory::desc(dims, g.type, act_tag(dims.size(), last));
}

// The plain weight tag for `spatial` spatial dims: (g)oi followed by them.
Tag wei_tag(size_t spatial, bool grouped) {
  if (spatial == 1) return grouped ? Tag::goiw : Tag::oiw;
  if (spatial == 3) return grouped ? Tag::goidhw : Tag::oidhw;
  return grouped ? Tag::goihw : Tag::oihw;
}

memory::desc wei_user(const Geometry& g) {
  return memory::desc(g.wei, g.type, wei_tag(g.stride.size(), g.groups > 1));
}

memory::desc bias_desc(const Geometry& g) {
  return memory::desc({g.groups > 1 ? g.wei[0] * g.wei[1] : g.wei[0]}, g.type, Tag::a);
}

dnnl::primitive_attr make_attr(const Geometry& g) {
  dnnl::primitive_attr attr;
  // Scratchpad memory per call (below): concurrent calls of one cached primitive then never
  // share a buffer.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (g.act != kNoAct) {
    dnnl::post_ops ops;
    ops.append_eltwise(g.act == kRelu ? dnnl::algorithm::eltwise_relu
                                      : dnnl::algorithm::eltwise_gelu_tanh, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// The forward primitive descriptor (also the hint the backward ones need). Weights always
// use format_tag::any: with a plain oihw weight descriptor oneDNN falls back to its
// reference kernel. Activations in `layout`.
dnnl::convolution_forward::primitive_desc forward_pd(const Geometry& g, Layout layout) {
  auto src = act_desc(g, g.src, layout), dst = act_desc(g, g.dst, layout);
  memory::desc wei(g.wei, g.type, Tag::any);
  auto attr = make_attr(g);
  auto& eng = cpu_engine();
  if (g.bias && g.pass == kFwd)
    return dnnl::convolution_forward::primitive_desc(
        eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei,
        bias_desc(g), dst, g.stride, g.dilation, g.pad_l, g.pad_r, attr);
  return dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei,
      dst, g.stride, g.dilation, g.pad_l, g.pad_r, attr);
}

bool is_reference(const std::string& impl) { return impl.find("ref") != std::string::npos; }

// Per-channel vectors (mean, variance, scale, shift and their gradients): (C,) float32.
memory::desc channel_desc(const Geometry& g) { return memory::desc({g.src[1]}, Dt::f32, Tag::a); }

// Batch normalisation in the caller's layout (src = dst dims, no reorders: oneDNN's nspc and
// ncsp kernels take plain nhwc / nchw), statistics computed from the batch (no
// use_global_stats), shift always applied, scale when it learns.
dnnl::batch_normalization_forward::primitive_desc bn_forward_pd(const Geometry& g) {
  auto flags = dnnl::normalization_flags::use_shift;
  if (g.scale) flags |= dnnl::normalization_flags::use_scale;
  auto act = act_desc(g, g.src, Layout::kCaller);
  return dnnl::batch_normalization_forward::primitive_desc(
      cpu_engine(), dnnl::prop_kind::forward_training, act, act, g.eps, flags, make_attr(g));
}

std::shared_ptr<Entry> build_bn(const Geometry& g) {
  auto e = std::make_shared<Entry>();
  auto hint = bn_forward_pd(g);
  auto act = act_desc(g, g.src, Layout::kCaller), chan = channel_desc(g);
  auto in = [&](int arg, const memory::desc& d) { return make_operand(arg, false, d, d); };
  auto out = [&](int arg, const memory::desc& d) { return make_operand(arg, true, d, d); };
  if (g.pass == kBnFwd) {
    e->prim = dnnl::batch_normalization_forward(hint);
    e->operands = {in(DNNL_ARG_SRC, act)};
    if (g.scale) e->operands.push_back(in(DNNL_ARG_SCALE, chan));
    e->operands.insert(e->operands.end(), {in(DNNL_ARG_SHIFT, chan), out(DNNL_ARG_DST, act),
                                           out(DNNL_ARG_MEAN, chan),
                                           out(DNNL_ARG_VARIANCE, chan)});
    e->scratchpad = hint.scratchpad_desc();
    e->impl = hint.impl_info_str();
  } else {
    // prop_kind::backward: dx and the parameters' gradients in one primitive.
    dnnl::batch_normalization_backward::primitive_desc pd(
        cpu_engine(), dnnl::prop_kind::backward, act, act, act, g.eps,
        hint.get_flags(), hint, make_attr(g));
    e->prim = dnnl::batch_normalization_backward(pd);
    e->operands = {in(DNNL_ARG_SRC, act), in(DNNL_ARG_DIFF_DST, act), in(DNNL_ARG_MEAN, chan),
                   in(DNNL_ARG_VARIANCE, chan)};
    if (g.scale) e->operands.push_back(in(DNNL_ARG_SCALE, chan));
    e->operands.push_back(out(DNNL_ARG_DIFF_SRC, act));
    if (g.scale) e->operands.push_back(out(DNNL_ARG_DIFF_SCALE, chan));
    e->operands.push_back(out(DNNL_ARG_DIFF_SHIFT, chan));
    e->scratchpad = pd.scratchpad_desc();
    e->impl = pd.impl_info_str();
  }
  return e;
}

std::shared_ptr<Entry> build(const Geometry& g, Layout layout) {
  auto e = std::make_shared<Entry>();
  auto& eng = cpu_engine();
  auto hint = forward_pd(g, layout);
  auto src_u = act_desc(g, g.src, Layout::kCaller), dst_u = act_desc(g, g.dst, Layout::kCaller);
  if (g.pass == kFwd) {
    e->prim = dnnl::convolution_forward(hint);
    e->operands = {make_operand(DNNL_ARG_SRC, false, src_u, hint.src_desc()),
                   make_operand(DNNL_ARG_WEIGHTS, false, wei_user(g), hint.weights_desc())};
    if (g.bias) e->operands.push_back(make_operand(DNNL_ARG_BIAS, false, bias_desc(g),
                                                   hint.bias_desc()));
    e->operands.push_back(make_operand(DNNL_ARG_DST, true, dst_u, hint.dst_desc()));
    e->scratchpad = hint.scratchpad_desc();
    e->impl = hint.impl_info_str();
  } else if (g.pass == kBwdData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        eng, dnnl::algorithm::convolution_direct, act_desc(g, g.src, layout),
        memory::desc(g.wei, g.type, Tag::any), act_desc(g, g.dst, layout), g.stride,
        g.dilation, g.pad_l, g.pad_r, hint, make_attr(g));
    e->prim = dnnl::convolution_backward_data(pd);
    e->operands = {make_operand(DNNL_ARG_DIFF_DST, false, dst_u, pd.diff_dst_desc()),
                   make_operand(DNNL_ARG_WEIGHTS, false, wei_user(g), pd.weights_desc()),
                   make_operand(DNNL_ARG_DIFF_SRC, true, src_u, pd.diff_src_desc())};
    e->scratchpad = pd.scratchpad_desc();
    e->impl = pd.impl_info_str();
  } else {
    auto src = act_desc(g, g.src, layout), dst = act_desc(g, g.dst, layout);
    memory::desc wei(g.wei, g.type, Tag::any);
    auto pd = g.bias
        ? dnnl::convolution_backward_weights::primitive_desc(
              eng, dnnl::algorithm::convolution_direct, src, wei, bias_desc(g), dst, g.stride,
              g.dilation, g.pad_l, g.pad_r, hint, make_attr(g))
        : dnnl::convolution_backward_weights::primitive_desc(
              eng, dnnl::algorithm::convolution_direct, src, wei, dst, g.stride, g.dilation,
              g.pad_l, g.pad_r, hint, make_attr(g));
    e->prim = dnnl::convolution_backward_weights(pd);
    e->operands = {make_operand(DNNL_ARG_SRC, false, src_u, pd.src_desc()),
                   make_operand(DNNL_ARG_DIFF_DST, false, dst_u, pd.diff_dst_desc()),
                   make_operand(DNNL_ARG_DIFF_WEIGHTS, true, wei_user(g),
                                pd.diff_weights_desc())};
    if (g.bias) e->operands.push_back(make_operand(DNNL_ARG_DIFF_BIAS, true, bias_desc(g),
                                                   pd.diff_bias_desc()));
    e->scratchpad = pd.scratchpad_desc();
    e->impl = pd.impl_info_str();
  }
  return e;
}

// The primitive for g. Channels-last activations stay in the caller's layout (oneDNN's direct
// channels-last kernels); channels-first ones are reordered to the layout oneDNN chooses (blocked
// nChw16c), as PyTorch does: its direct kernels beat the im2col+GEMM one plain nchw gets.
// Where oneDNN still chooses im2col+GEMM for 3-D ones (depthwise), they are reordered to plain
// ndhwc, as PyTorch does too, for its direct channels-last kernel, which is faster than the GEMM
// despite the reorders (1-D ones are 2-D by now: lift_1d).
// Whichever layout yields only the reference kernel is the fallback. Batch normalisation keeps
// the caller's layout (its own per-layout kernels).
std::shared_ptr<Entry> choose(const Geometry& g) {
  if (g.is_bn()) return build_bn(g);
  auto entry = build(g, g.channels_last ? Layout::kCaller : Layout::kAny);
  if (!g.channels_last && g.src.size() == 5 && entry->impl.find("gemm") != std::string::npos) {
    auto last = build(g, Layout::kChannelsLast);
    if (!is_reference(last->impl) && last->impl.find("gemm") == std::string::npos) entry = last;
  }
  if (is_reference(entry->impl)) {
    auto other = build(g, g.channels_last ? Layout::kAny : Layout::kCaller);
    if (!is_reference(other->impl)) entry = other;
  }
  return entry;
}

// Least-recently-used cache of primitives, keyed on Geometry::key(); shared_ptr entries so an
// eviction never frees a primitive another thread is running.
class Cache {
 public:
  std::shared_ptr<Entry> get(const Geometry& g) {
    const std::string key = g.key();
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        order_.splice(order_.begin(), order_, it->second.second);
        ++hits_;
        return it->second.first;
      }
    }
    // Created outside the lock (it takes milliseconds); two threads racing on one new key
    // both build it and the first insert wins.
    auto entry = choose(g);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) return it->second.first;
    ++misses_;
    order_.push_front(key);
    map_.emplace(key, std::make_pair(entry, order_.begin()));
    while (map_.size() > capacity_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    return entry;
  }

  void set_capacity(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_ = n < 1 ? 1 : n;
    while (map_.size() > capacity_) {
      map_.erase(order_.back());
      order_.pop_back();
    }
  }

  void stats(int64_t* out) {
    std::lock_guard<std::mutex> lock(mu_);
    out[0] = static_cast<int64_t>(map_.size());
    out[1] = hits_;
    out[2] = misses_;
    out[3] = static_cast<int64_t>(capacity_);
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
    order_.clear();
  }

 private:
  std::mutex mu_;
  std::list<std::string> order_;  // most recent first
  std::unordered_map<std::string,
                     std::pair<std::shared_ptr<Entry>, std::list<std::string>::iterator>> map_;
  size_t capacity_ = 1024;
  int64_t hits_ = 0, misses_ = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: handlers may run during interpreter exit
  return *c;
}

// oneDNN's team size for this process's convolution calls; 0 leaves OpenMP's default
// (OMP_NUM_THREADS, else one thread per core).
std::atomic<int> g_num_threads{0};

// The team size for batch normalisation calls; 0: the convolutions'. One thread by default:
// oneDNN's batch-normalisation kernels cross several thread barriers per call, and on a
// machine with more runnable threads than cores each barrier can wait out a scheduler slice
// for a descheduled team member, where one thread never waits.
std::atomic<int> g_bn_num_threads{1};

int bn_threads() {
  int n = g_bn_num_threads.load();
  return n > 0 ? n : g_num_threads.load();
}

// Sets the calling thread's OpenMP team size (n > 0; 0 leaves it) for one call, primitive
// creation included, and restores it after: XLA runs handlers on the thread that launched
// the computation, often Python's main thread, whose OpenMP setting PyTorch (and anything
// else using libgomp there) shares.
class TeamSize {
 public:
  explicit TeamSize(int n) : saved_(0) {
    if (n > 0) {
      saved_ = omp_get_max_threads();
      omp_set_num_threads(n);
    }
  }
  ~TeamSize() {
    if (saved_ > 0) omp_set_num_threads(saved_);
  }
  TeamSize(const TeamSize&) = delete;
  TeamSize& operator=(const TeamSize&) = delete;

 private:
  int saved_;
};

// XLA:CPU takes a computation's temporaries from malloc in one block per execution; above
// glibc's mmap threshold (32 MiB at most) that block is mapped afresh each time, so every 4 KiB
// page of it faults, and is zeroed by the kernel, on its first write in every step (a train
// step's faults equal its temporary bytes / 4 KiB). Output pages a oneDNN call writes first are
// paid for inside the call, where PyTorch's tensors mostly come back from malloc's heap,
// already mapped. Transparent huge pages make those faults 512x fewer; advising them for an
// output (and for oneDNN's own per-call buffers, fresh mappings too when large) covers only
// the whole 2 MiB pages inside the buffer, so no byte outside it changes treatment. A hint:
// a no-op where THP is off, and its failure changes nothing.
constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

void advise_huge_pages(void* data, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t lo = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t hi = (begin + bytes) & ~(kHugePage - 1);
  if (data != nullptr && hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
}

// A library-allocated buffer for one call.
memory call_buffer(const memory::desc& desc, const dnnl::engine& eng) {
  memory m(desc, eng);
  advise_huge_pages(m.get_data_handle(), desc.get_size());
  return m;
}

// Runs e inside the caller's TeamSize scope.
void run(const Entry& e, const std::vector<void*>& ptrs) {
  auto& eng = cpu_engine();
  dnnl::stream stream(eng);
  std::unordered_map<int, memory> args;
  std::vector<std::pair<memory, memory>> outputs;  // (primitive's, caller's) to reorder after
  for (size_t i = 0; i < e.operands.size(); ++i) {
    const Operand& op = e.operands[i];
    memory user(op.user, eng, ptrs[i]);
    if (op.output) advise_huge_pages(ptrs[i], op.user.get_size());
    if (!op.reorder) {
      args.emplace(op.arg, user);
      continue;
    }
    memory prim = call_buffer(op.prim, eng);  // freed when this call returns
    if (op.output) {
      outputs.emplace_back(prim, user);
    } else {
      op.reorder.execute(stream, user, prim);
    }
    args.emplace(op.arg, prim);
  }
  args.emplace(DNNL_ARG_SCRATCHPAD, call_buffer(e.scratchpad, eng));
  e.prim.execute(stream, args);
  size_t k = 0;
  for (const Operand& op : e.operands) {
    if (op.output && op.reorder) {
      op.reorder.execute(stream, outputs[k].first, outputs[k].second);
      ++k;
    }
  }
  stream.wait();
}

ffi::Error to_dt(ffi::DataType t, Dt* out) {
  if (t == ffi::DataType::F32) {
    *out = Dt::f32;
  } else if (t == ffi::DataType::BF16) {
    *out = Dt::bf16;
  } else {
    return ffi::Error::InvalidArgument("onednn convolution supports float32 and bfloat16 only");
  }
  return ffi::Error::Success();
}

// Logical N, C, *spatial dims of an activation buffer in the caller's layout.
memory::dims nchw_dims(const ffi::AnyBuffer& b, bool channels_last) {
  auto d = b.dimensions();
  const size_t rank = d.size();
  if (!channels_last) return memory::dims(d.begin(), d.end());
  memory::dims out = {d[0], d[rank - 1]};
  for (size_t i = 1; i + 1 < rank; ++i) out.push_back(d[i]);
  return out;
}

// (C_out, C_in/groups, *kernel), with a leading groups dim (and C_out/groups) when grouped.
memory::dims wei_dims(const ffi::AnyBuffer& w, int64_t groups) {
  auto d = w.dimensions();
  memory::dims out(d.begin(), d.end());
  if (groups > 1) {
    out[0] /= groups;
    out.insert(out.begin(), groups);
  }
  return out;
}

memory::dims to_dims(ffi::Span<const int64_t> s, int64_t minus = 0) {
  memory::dims d;
  for (auto v : s) d.push_back(v - minus);
  return d;
}

// A 1-D problem as a 2-D one with a unit height: the same bytes (ncw is nchw with h = 1,
// nwc is nhwc), but oneDNN's 2-D kernels, as PyTorch does too: oneDNN's 1-D convolutions have
// no direct depthwise kernel (im2col+GEMM instead), its 2-D ones have.
void lift_1d(Geometry* g) {
  g->src.insert(g->src.begin() + 2, 1);
  g->dst.insert(g->dst.begin() + 2, 1);
  g->wei.insert(g->wei.end() - 1, 1);
  g->stride.insert(g->stride.begin(), 1);
  g->dilation.insert(g->dilation.begin(), 0);
  g->pad_l.insert(g->pad_l.begin(), 0);
  g->pad_r.insert(g->pad_r.begin(), 0);
}

ffi::Error make_geometry(int pass, const ffi::AnyBuffer& act_in, const ffi::AnyBuffer& w_like,
                         const ffi::AnyBuffer& act_out, ffi::Span<const int64_t> stride,
                         ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                         ffi::Span<const int64_t> dilation, int64_t groups,
                         int64_t channels_last, Geometry* g) {
  const size_t rank = act_in.dimensions().size(), spatial = rank - 2;
  if (rank < 3 || rank > 5 || w_like.dimensions().size() != rank ||
      act_out.dimensions().size() != rank || stride.size() != spatial ||
      pad_lo.size() != spatial || pad_hi.size() != spatial || dilation.size() != spatial ||
      groups < 1)
    return ffi::Error::InvalidArgument("onednn convolution: malformed operands or attributes");
  if (act_in.element_type() != w_like.element_type() ||
      act_in.element_type() != act_out.element_type())
    return ffi::Error::InvalidArgument("onednn convolution: operands differ in dtype");
  if (auto err = to_dt(act_in.element_type(), &g->type); err.failure()) return err;
  g->pass = pass;
  g->channels_last = channels_last != 0;
  g->src = nchw_dims(act_in, g->channels_last);
  g->dst = nchw_dims(act_out, g->channels_last);
  g->wei = wei_dims(w_like, groups);
  g->groups = groups;
  g->stride = to_dims(stride);
  g->dilation = to_dims(dilation, 1);
  g->pad_l = to_dims(pad_lo);
  g->pad_r = to_dims(pad_hi);
  if (spatial == 1) lift_1d(g);
  return ffi::Error::Success();
}

template <typename F>
ffi::Error guarded(F&& f) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("onednn convolution: ") + e.what());
  }
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b,
                   ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> stride,
                   ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                   ffi::Span<const int64_t> dilation, int64_t groups,
                   int64_t channels_last, int64_t act, int64_t has_bias) {
  return guarded([&]() -> ffi::Error {
    // x plays src and y dst; their element counts are checked against the dims by XLA.
    TeamSize team(g_num_threads.load());
    Geometry g;
    g.threads = omp_get_max_threads();
    if (auto err = make_geometry(kFwd, x, w, *y, stride, pad_lo, pad_hi, dilation, groups,
                                 channels_last, &g);
        err.failure())
      return err;
    g.act = act;
    g.bias = has_bias != 0;
    auto e = cache().get(g);
    std::vector<void*> ptrs = {x.untyped_data(), w.untyped_data()};
    if (g.bias) ptrs.push_back(b.untyped_data());
    ptrs.push_back(y->untyped_data());
    run(*e, ptrs);
    return ffi::Error::Success();
  });
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> stride, ffi::Span<const int64_t> pad_lo,
                        ffi::Span<const int64_t> pad_hi, ffi::Span<const int64_t> dilation,
                        int64_t groups, int64_t channels_last) {
  return guarded([&]() -> ffi::Error {
    TeamSize team(g_num_threads.load());
    Geometry g;
    g.threads = omp_get_max_threads();
    if (auto err = make_geometry(kBwdData, *dx, w, dy, stride, pad_lo, pad_hi, dilation, groups,
                                 channels_last, &g);
        err.failure())
      return err;
    auto e = cache().get(g);
    run(*e, {dy.untyped_data(), w.untyped_data(), dx->untyped_data()});
    return ffi::Error::Success();
  });
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Result<ffi::AnyBuffer> db, ffi::Span<const int64_t> stride,
                           ffi::Span<const int64_t> pad_lo, ffi::Span<const int64_t> pad_hi,
                           ffi::Span<const int64_t> dilation, int64_t groups,
                           int64_t channels_last, int64_t has_bias) {
  return guarded([&]() -> ffi::Error {
    TeamSize team(g_num_threads.load());
    Geometry g;
    g.threads = omp_get_max_threads();
    if (auto err = make_geometry(kBwdWeights, x, *dw, dy, stride, pad_lo, pad_hi, dilation,
                                 groups, channels_last, &g);
        err.failure())
      return err;
    g.bias = has_bias != 0;
    auto e = cache().get(g);
    std::vector<void*> ptrs = {x.untyped_data(), dy.untyped_data(), dw->untyped_data()};
    if (g.bias) ptrs.push_back(db->untyped_data());
    run(*e, ptrs);
    return ffi::Error::Success();
  });
}

// Batch normalisation's geometry: x (N, C, H, W) or (N, H, W, C), float32 (jconv/_onednn_bn.py
// validated it; XLA checked the other operands' element counts against their shapes).
ffi::Error bn_geometry(int pass, const ffi::AnyBuffer& x, float eps, int64_t has_scale,
                       int64_t nhwc, Geometry* g) {
  if (x.dimensions().size() != 4 || x.element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("onednn batch norm: x must be a 4-D float32 array");
  g->pass = pass;
  g->channels_last = nhwc != 0;
  g->src = nchw_dims(x, g->channels_last);
  g->dst = g->src;
  g->eps = eps;
  g->scale = has_scale != 0;
  g->bias = true;
  g->threads = omp_get_max_threads();  // inside the handler's TeamSize
  return ffi::Error::Success();
}

ffi::Error BnForward(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift,
                     ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> mean,
                     ffi::Result<ffi::AnyBuffer> var, float eps, int64_t has_scale,
                     int64_t nhwc) {
  return guarded([&]() -> ffi::Error {
    TeamSize team(bn_threads());
    Geometry g;
    if (auto err = bn_geometry(kBnFwd, x, eps, has_scale, nhwc, &g); err.failure()) return err;
    auto e = cache().get(g);
    std::vector<void*> ptrs = {x.untyped_data()};
    if (g.scale) ptrs.push_back(scale.untyped_data());
    ptrs.insert(ptrs.end(), {shift.untyped_data(), y->untyped_data(), mean->untyped_data(),
                             var->untyped_data()});
    run(*e, ptrs);
    return ffi::Error::Success();
  });
}

ffi::Error BnBackward(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::AnyBuffer mean,
                      ffi::AnyBuffer var, ffi::AnyBuffer scale, ffi::Result<ffi::AnyBuffer> dx,
                      ffi::Result<ffi::AnyBuffer> dscale, ffi::Result<ffi::AnyBuffer> dshift,
                      float eps, int64_t has_scale, int64_t nhwc) {
  return guarded([&]() -> ffi::Error {
    TeamSize team(bn_threads());
    Geometry g;
    if (auto err = bn_geometry(kBnBwd, x, eps, has_scale, nhwc, &g); err.failure()) return err;
    auto e = cache().get(g);
    std::vector<void*> ptrs = {x.untyped_data(), dy.untyped_data(), mean.untyped_data(),
                               var.untyped_data()};
    if (g.scale) ptrs.push_back(scale.untyped_data());
    ptrs.push_back(dx->untyped_data());
    if (g.scale) ptrs.push_back(dscale->untyped_data());
    ptrs.push_back(dshift->untyped_data());
    run(*e, ptrs);
    return ffi::Error::Success();
  });
}

}  // namespace

// Built with -fvisibility=hidden: only these symbols leave the library.
#define JCONV_EXPORT extern "C" __attribute__((visibility("default")))
JCONV_EXPORT XLA_FFI_Error* jconv_onednn_fwd(XLA_FFI_CallFrame* call_frame);
JCONV_EXPORT XLA_FFI_Error* jconv_onednn_bwd_data(XLA_FFI_CallFrame* call_frame);
JCONV_EXPORT XLA_FFI_Error* jconv_onednn_bwd_weights(XLA_FFI_CallFrame* call_frame);
JCONV_EXPORT XLA_FFI_Error* jconv_onednn_bn_fwd(XLA_FFI_CallFrame* call_frame);
JCONV_EXPORT XLA_FFI_Error* jconv_onednn_bn_bwd(XLA_FFI_CallFrame* call_frame);
JCONV_EXPORT void jconv_onednn_cache_stats(int64_t* out);
JCONV_EXPORT void jconv_onednn_set_cache_capacity(int64_t n);
JCONV_EXPORT void jconv_onednn_clear_cache();
JCONV_EXPORT void jconv_onednn_set_num_threads(int n);
JCONV_EXPORT void jconv_onednn_set_bn_num_threads(int n);
JCONV_EXPORT int jconv_onednn_probe(int bf16, int nhwc, int64_t n, int64_t c, int64_t hw,
                                    int pass, int spatial, char* buf, int64_t len);
JCONV_EXPORT int jconv_onednn_bn_probe(int nhwc, int64_t n, int64_t c, int64_t hw, int pass,
                                       int has_scale, char* buf, int64_t len);

#define JCONV_CONV_ATTRS                                  \
  .Attr<ffi::Span<const int64_t>>("stride")               \
      .Attr<ffi::Span<const int64_t>>("pad_lo")           \
      .Attr<ffi::Span<const int64_t>>("pad_hi")           \
      .Attr<ffi::Span<const int64_t>>("dilation")         \
      .Attr<int64_t>("groups")                            \
      .Attr<int64_t>("channels_last")

XLA_FFI_DEFINE_HANDLER_SYMBOL(jconv_onednn_fwd, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JCONV_CONV_ATTRS
                                  .Attr<int64_t>("act")
                                  .Attr<int64_t>("has_bias"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jconv_onednn_bwd_data, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JCONV_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(jconv_onednn_bwd_weights, BackwardWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JCONV_CONV_ATTRS
                                  .Attr<int64_t>("has_bias"));

#define JCONV_BN_ATTRS                                    \
  .Attr<float>("eps").Attr<int64_t>("has_scale").Attr<int64_t>("nhwc")

XLA_FFI_DEFINE_HANDLER_SYMBOL(jconv_onednn_bn_fwd, BnForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JCONV_BN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(jconv_onednn_bn_bwd, BnBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() JCONV_BN_ATTRS);

// Plain C helpers for Python (ctypes): the cache's state, its capacity, and which oneDNN
// implementation a geometry gets (for tests and ONEDNN_VERBOSE-free checks).
extern "C" {

void jconv_onednn_cache_stats(int64_t* out) { cache().stats(out); }

void jconv_onednn_set_cache_capacity(int64_t n) {
  cache().set_capacity(static_cast<size_t>(n < 1 ? 1 : n));
}

void jconv_onednn_clear_cache() { cache().clear(); }

void jconv_onednn_set_num_threads(int n) { g_num_threads.store(n < 0 ? 0 : n); }

void jconv_onednn_set_bn_num_threads(int n) { g_bn_num_threads.store(n < 0 ? 0 : n); }

// Writes the implementation name for a stride-1 f32/bf16 convolution with a 3-wide kernel
// in each of `spatial` (1, 2 or 3) dims of size hw into buf (or the error); returns 0 on
// success. Used to detect bfloat16 support and to check that optimized kernels (not "ref")
// are chosen.
int jconv_onednn_probe(int bf16, int nhwc, int64_t n, int64_t c, int64_t hw, int pass,
                       int spatial, char* buf, int64_t len) {
  try {
    const size_t k = spatial < 1 ? 1 : (spatial > 3 ? 3 : static_cast<size_t>(spatial));
    Geometry g;
    g.pass = pass;
    g.type = bf16 ? Dt::bf16 : Dt::f32;
    g.channels_last = nhwc != 0;
    g.src = {n, c};
    g.src.insert(g.src.end(), k, hw);
    g.dst = g.src;
    g.wei = {c, c};
    g.wei.insert(g.wei.end(), k, 3);
    g.stride = memory::dims(k, 1);
    g.dilation = memory::dims(k, 0);
    g.pad_l = memory::dims(k, 1);
    g.pad_r = memory::dims(k, 1);
    if (k == 1) lift_1d(&g);  // as the handlers do
    auto e = choose(g);
    std::snprintf(buf, static_cast<size_t>(len), "%s", e->impl.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(buf, static_cast<size_t>(len), "%s", e.what());
    return 1;
  }
}

// The implementation name of the batch normalisation pass (3 forward, 4 backward) for an
// (n, c, hw, hw) float32 input, like jconv_onednn_probe.
int jconv_onednn_bn_probe(int nhwc, int64_t n, int64_t c, int64_t hw, int pass, int has_scale,
                          char* buf, int64_t len) {
  try {
    Geometry g;
    g.pass = pass == kBnBwd ? kBnBwd : kBnFwd;
    g.channels_last = nhwc != 0;
    g.src = {n, c, hw, hw};
    g.dst = g.src;
    g.eps = 1e-5f;
    g.scale = has_scale != 0;
    g.bias = true;
    auto e = choose(g);
    std::snprintf(buf, static_cast<size_t>(len), "%s", e->impl.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(buf, static_cast<size_t>(len), "%s", e.what());
    return 1;
  }
}

}  // extern "C"
