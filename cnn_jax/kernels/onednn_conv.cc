// XLA FFI handlers that run 2-D convolutions through oneDNN on the CPU: float32, NHWC activations, HWIO kernels
// (the layouts flax's nn.Conv hands to XLA), explicit (low, high) padding, unit dilation, one feature group.
//
//   cnn_jax_conv_forward       (x, w)  -> y    y = conv(x, w)
//   cnn_jax_conv_input_grad    (dy, w) -> dx   dL/dx for dL/dy = dy
//   cnn_jax_conv_kernel_grad   (x, dy) -> dw   dL/dw for dL/dy = dy
//
// Shapes come from the buffers (x: N,H,W,C; w: KH,KW,C,O; y: N,Ho,Wo,O); attributes `strides`, `pad_low`,
// `pad_high` (two int64 each, height then width). The work runs on XLA's own CPU thread pool, the batch cut into
// one chunk per pool thread and each chunk on one oneDNN thread (see `run`). Primitives are built once per shape
// and kept; the scratchpad is the caller's (user mode), so concurrent calls share nothing mutable.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;

enum class Direction { kForward, kInputGrad, kKernelGrad };

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's geometry, in oneDNN's logical order (N,C,H,W and O,I,KH,KW).
using Key = std::tuple<Direction, memory::dims, memory::dims, memory::dims, memory::dims, memory::dims, memory::dims>;

struct Geometry {
  memory::dims src, weights, dst, strides, pad_low, pad_high;
  Key key(Direction d) const { return {d, src, weights, dst, strides, pad_low, pad_high}; }
};

// A ready primitive and the layouts it wants; `weights` is what the primitive reads or writes, which may be a
// blocked layout that needs a reorder from/to the caller's HWIO buffer.
struct Prepared {
  dnnl::primitive primitive;
  memory::desc src, weights, dst, scratchpad;
  memory::desc user_weights;
};

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

std::shared_ptr<Prepared> prepare(const Geometry& g, Direction direction) {
  auto& engine = cpu_engine();
  const auto f32 = memory::data_type::f32;
  memory::desc src(g.src, f32, tag::nhwc), dst(g.dst, f32, tag::nhwc), user_weights(g.weights, f32, tag::hwio);
  memory::desc any_weights(g.weights, f32, tag::any);
  auto attr = user_scratchpad();
  dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, any_weights, dst,
      g.strides, g.pad_low, g.pad_high, attr);
  auto prepared = std::make_shared<Prepared>();
  prepared->user_weights = user_weights;
  prepared->src = src;
  prepared->dst = dst;
  if (direction == Direction::kForward) {
    prepared->primitive = dnnl::convolution_forward(forward);
    prepared->weights = forward.weights_desc();
    prepared->scratchpad = forward.scratchpad_desc();
  } else if (direction == Direction::kInputGrad) {
    dnnl::convolution_backward_data::primitive_desc pd(engine, dnnl::algorithm::convolution_direct, src, any_weights,
                                                       dst, g.strides, g.pad_low, g.pad_high, forward, attr);
    prepared->primitive = dnnl::convolution_backward_data(pd);
    prepared->weights = pd.weights_desc();
    prepared->scratchpad = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(engine, dnnl::algorithm::convolution_direct, src,
                                                          any_weights, dst, g.strides, g.pad_low, g.pad_high,
                                                          forward, attr);
    prepared->primitive = dnnl::convolution_backward_weights(pd);
    prepared->weights = pd.diff_weights_desc();
    prepared->scratchpad = pd.scratchpad_desc();
  }
  return prepared;
}

std::shared_ptr<Prepared> cached(const Geometry& g, Direction direction) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<Prepared>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& entry = cache[g.key(direction)];
  if (!entry) entry = prepare(g, direction);
  return entry;
}

ffi::Error geometry(ffi::Span<const int64_t> nhwc, ffi::Span<const int64_t> hwio, ffi::Span<const int64_t> out,
                    ffi::Span<const int64_t> strides, ffi::Span<const int64_t> pad_low,
                    ffi::Span<const int64_t> pad_high, Geometry* g) {
  if (nhwc.size() != 4 || hwio.size() != 4 || out.size() != 4)
    return ffi::Error::InvalidArgument("cnn_jax oneDNN conv: operands must be rank 4 (NHWC, HWIO)");
  if (strides.size() != 2 || pad_low.size() != 2 || pad_high.size() != 2)
    return ffi::Error::InvalidArgument("cnn_jax oneDNN conv: strides, pad_low and pad_high need two values each");
  if (hwio[2] != nhwc[3] || hwio[3] != out[3] || nhwc[0] != out[0])
    return ffi::Error::InvalidArgument("cnn_jax oneDNN conv: operand shapes do not match (NHWC x HWIO -> NHWC)");
  g->src = {nhwc[0], nhwc[3], nhwc[1], nhwc[2]};
  g->weights = {hwio[3], hwio[2], hwio[0], hwio[1]};
  g->dst = {out[0], out[3], out[1], out[2]};
  g->strides = {strides[0], strides[1]};
  g->pad_low = {pad_low[0], pad_low[1]};
  g->pad_high = {pad_high[0], pad_high[1]};
  return ffi::Error::Success();
}

// Runs `direction`'s primitive on one thread over the caller's buffers (weights in HWIO), reordering the weights
// to the primitive's layout where it wants another.
void run_chunk(const Geometry& g, Direction direction, float* src, float* weights, float* dst) {
  auto& engine = cpu_engine();
  auto p = cached(g, direction);
  dnnl::stream stream(engine);
  memory src_mem(p->src, engine, src), dst_mem(p->dst, engine, dst);
  memory user_weights(p->user_weights, engine, weights);
  const bool reorder = p->weights != p->user_weights;
  memory weights_mem = reorder ? memory(p->weights, engine) : user_weights;
  if (reorder && direction != Direction::kKernelGrad)
    dnnl::reorder(user_weights, weights_mem).execute(stream, user_weights, weights_mem);
  std::unique_ptr<uint8_t[]> scratch(new uint8_t[p->scratchpad.get_size()]);  // left uninitialized: oneDNN's own
  memory scratch_mem(p->scratchpad, engine, scratch.get());
  const int src_arg = direction == Direction::kInputGrad ? DNNL_ARG_DIFF_SRC : DNNL_ARG_SRC;
  const int dst_arg = direction == Direction::kForward ? DNNL_ARG_DST : DNNL_ARG_DIFF_DST;
  const int weights_arg = direction == Direction::kKernelGrad ? DNNL_ARG_DIFF_WEIGHTS : DNNL_ARG_WEIGHTS;
  p->primitive.execute(stream, {{src_arg, src_mem}, {dst_arg, dst_mem}, {weights_arg, weights_mem},
                                {DNNL_ARG_SCRATCHPAD, scratch_mem}});
  if (reorder && direction == Direction::kKernelGrad)
    dnnl::reorder(weights_mem, user_weights).execute(stream, weights_mem, user_weights);
  stream.wait();
}

// The batch is cut into one contiguous chunk per thread of XLA's CPU pool, and each chunk runs on oneDNN with
// one thread: the work stays on XLA's threads (no second thread team competing for the cores). The calling
// thread takes chunks too, so the call finishes even if no pool thread is free; chunks are fixed by the pool
// size, and kernel gradients are summed chunk by chunk in order, so results repeat bitwise on a machine.
struct Work {
  Geometry g;
  Direction direction;
  float *src, *weights, *dst;
  int64_t chunks;
  std::vector<std::vector<float>> partial;  // kernel gradients of chunks 1.. (chunk 0 writes the result)
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mutex;
  std::string error;

  void take_chunks() {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int64_t i; (i = next.fetch_add(1)) < chunks;) {
      try {
        run_one(i);
      } catch (const dnnl::error& e) {
        std::lock_guard<std::mutex> lock(mutex);
        error = e.what();
      }
      done.fetch_add(1);
    }
    omp_set_num_threads(saved);
  }

  void run_one(int64_t i) {
    const int64_t n = g.src[0], begin = n * i / chunks, end = n * (i + 1) / chunks;
    Geometry c = g;
    c.src[0] = c.dst[0] = end - begin;
    const int64_t src_row = g.src[1] * g.src[2] * g.src[3], dst_row = g.dst[1] * g.dst[2] * g.dst[3];
    float* w = direction == Direction::kKernelGrad && i > 0 ? partial[i - 1].data() : weights;
    run_chunk(c, direction, src + begin * src_row, w, dst + begin * dst_row);
  }
};

ffi::Error run(ffi::ThreadPool pool, const Geometry& g, Direction direction, float* src, float* weights,
               float* dst) {
  auto work = std::make_shared<Work>();
  work->g = g;
  work->direction = direction;
  work->src = src;
  work->weights = weights;
  work->dst = dst;
  work->chunks = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), g.src[0]));
  if (direction == Direction::kKernelGrad) {
    const int64_t size = g.weights[0] * g.weights[1] * g.weights[2] * g.weights[3];
    work->partial.assign(work->chunks - 1, std::vector<float>(size));
  }
  for (int64_t t = 1; t < work->chunks; ++t) pool.Schedule([work] { work->take_chunks(); });
  work->take_chunks();
  while (work->done.load() < work->chunks) std::this_thread::yield();
  if (!work->error.empty()) return ffi::Error::Internal("cnn_jax oneDNN conv: " + work->error);
  if (direction == Direction::kKernelGrad) {
    const int64_t size = g.weights[0] * g.weights[1] * g.weights[2] * g.weights[3];
    for (const auto& part : work->partial)
      for (int64_t k = 0; k < size; ++k) weights[k] += part[k];
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::ResultBuffer<ffi::F32> y, ffi::Span<const int64_t> strides,
                   ffi::Span<const int64_t> pad_low, ffi::Span<const int64_t> pad_high) {
  Geometry g;
  if (auto e = geometry(x.dimensions(), w.dimensions(), y->dimensions(), strides, pad_low, pad_high, &g); e.failure())
    return e;
  return run(pool, g, Direction::kForward, x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error InputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                     ffi::ResultBuffer<ffi::F32> dx, ffi::Span<const int64_t> strides,
                     ffi::Span<const int64_t> pad_low, ffi::Span<const int64_t> pad_high) {
  Geometry g;
  if (auto e = geometry(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, pad_low, pad_high, &g); e.failure())
    return e;
  return run(pool, g, Direction::kInputGrad, dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error KernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                      ffi::ResultBuffer<ffi::F32> dw, ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> pad_low, ffi::Span<const int64_t> pad_high) {
  Geometry g;
  if (auto e = geometry(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, pad_low, pad_high, &g); e.failure())
    return e;
  return run(pool, g, Direction::kKernelGrad, x.typed_data(), dw->typed_data(), dy.typed_data());
}

}  // namespace

#define CNN_JAX_CONV_BINDING                                \
  ffi::Ffi::Bind()                                          \
      .Ctx<ffi::ThreadPool>()                               \
      .Arg<ffi::Buffer<ffi::F32>>()                         \
      .Arg<ffi::Buffer<ffi::F32>>()                         \
      .Ret<ffi::Buffer<ffi::F32>>()                         \
      .Attr<ffi::Span<const int64_t>>("strides")            \
      .Attr<ffi::Span<const int64_t>>("pad_low")            \
      .Attr<ffi::Span<const int64_t>>("pad_high")

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_jax_conv_forward, Forward, CNN_JAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_jax_conv_input_grad, InputGrad, CNN_JAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_jax_conv_kernel_grad, KernelGrad, CNN_JAX_CONV_BINDING);

// The version of the oneDNN library loaded, "major.minor.patch", for run manifests.
extern "C" const char* cnn_jax_onednn_version() {
  static std::string text = [] {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  }();
  return text.c_str();
}
