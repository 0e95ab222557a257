// Device helpers shared by the CUDA kernels: element conversion, block reductions, online log-sum-exp merge.
// Only CUDA headers: these files compile with nvcc on a machine without torch's CUDA headers or a GPU.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "launchers.h"

namespace posttrain::cuda {

constexpr int kBlock = 256;

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_of = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_of<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half(x); }

template <typename A>
__device__ __forceinline__ A neg_inf() { return -__int_as_float(0x7f800000); }
template <>
__device__ __forceinline__ double neg_inf<double>() { return -__longlong_as_double(0x7ff0000000000000LL); }

__device__ __forceinline__ float exp_acc(float x) { return __expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return __logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

struct SumOp {
  template <typename X>
  __device__ X operator()(X a, X b) const { return a + b; }
};
struct MaxOp {
  template <typename X>
  __device__ X operator()(X a, X b) const { return a > b ? a : b; }
};
struct MinOp {
  template <typename X>
  __device__ X operator()(X a, X b) const { return a < b ? a : b; }
};

template <typename X, typename Op>
__device__ __forceinline__ X warp_reduce(X v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// Reduction over the block; every thread gets the result. Safe to call repeatedly (leading barrier).
template <typename X, typename Op>
__device__ X block_reduce(X v, Op op, X identity) {
  __shared__ X partial[32];
  __shared__ X result;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    X w = lane < nwarps ? partial[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}

// Per-thread running (max, Σ exp(x - max)); -inf elements contribute nothing.
template <typename A>
struct OnlineLse {
  A m, s;
  __device__ OnlineLse() : m(neg_inf<A>()), s(A(0)) {}
  __device__ void add(A x) {
    if (x == neg_inf<A>()) return;
    if (x > m) {
      s = s * exp_acc(m - x) + A(1);
      m = x;
    } else {
      s += exp_acc(x - m);
    }
  }
  // Block-wide log-sum-exp of every thread's state.
  __device__ A block_lse() const {
    const A M = block_reduce(m, MaxOp(), neg_inf<A>());
    const A mine = (m == neg_inf<A>()) ? A(0) : s * exp_acc(m - M);
    const A S = block_reduce(mine, SumOp(), A(0));
    return S > A(0) ? M + log_acc(S) : neg_inf<A>();
  }
};

template <typename A>
__device__ __forceinline__ A* acc_ptr(void* p) { return static_cast<A*>(p); }
template <typename A>
__device__ __forceinline__ const A* acc_ptr(const void* p) { return static_cast<const A*>(p); }

// Dispatch a DType to the element type T.
#define PT_CUDA_DISPATCH(dt, ...)                 \
  switch (dt) {                                   \
    case DType::kFloat32: {                       \
      using T = float;                            \
      __VA_ARGS__();                              \
      break;                                      \
    }                                             \
    case DType::kBFloat16: {                      \
      using T = __nv_bfloat16;                    \
      __VA_ARGS__();                              \
      break;                                      \
    }                                             \
    case DType::kFloat16: {                       \
      using T = __half;                           \
      __VA_ARGS__();                              \
      break;                                      \
    }                                             \
    case DType::kFloat64: {                       \
      using T = double;                           \
      __VA_ARGS__();                              \
      break;                                      \
    }                                             \
  }

inline unsigned grid_for(int64_t n, int64_t per_block) {
  const int64_t g = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(g < 1 ? 1 : (g > 65535 * 64 ? 65535 * 64 : g));
}

}  // namespace posttrain::cuda
