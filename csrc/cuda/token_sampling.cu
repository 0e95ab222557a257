// K-candidate sampling on CUDA, one block per row. Pass 1: plain lse and tempered max (online). Optional top-k/top-p
// thresholds by bisection on order-preserving integer keys (exact element values, O(32 V) reads). Warps then sum the
// sampling mass of 1024-element chunks into shared memory, and each of the K uniforms walks the chunk masses and
// scans one chunk: O(V + K · 1024) per row, no (N, V) buffer.
#include "common.cuh"

namespace posttrain::cuda {
namespace {

constexpr int kChunk = 1024;

__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float value_of(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Largest key t with pred(t) true, pred monotone non-increasing in t, pred(lo) true.
template <typename Pred>
__device__ uint32_t bisect_keys(uint32_t lo, Pred pred) {
  uint32_t hi = 0xffffffffu;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2 + 1;
    if (pred(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <typename T>
__global__ void sample_kernel(const T* __restrict__ X, const int64_t* __restrict__ labels, const double* __restrict__ U,
                              int64_t V, int64_t K, float inv_t, int64_t top_k, double top_p, int64_t ignore_index,
                              int64_t* __restrict__ samples, acc_of<T>* sample_logps, acc_of<T>* label_logps,
                              acc_of<T>* lse_out) {
  using A = acc_of<T>;
  extern __shared__ double chunk_mass[];
  const int64_t r = blockIdx.x;
  const T* row = X + r * V;
  OnlineLse<A> plain;
  float mx = neg_inf<float>();
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const A x = to_acc(row[v]);
    plain.add(x);
    mx = fmaxf(mx, float(x) * inv_t);
  }
  const A lse = plain.block_lse();
  const float M = block_reduce(mx, MaxOp(), neg_inf<float>());
  // truncation threshold on tempered logits (float keys; float64 logits are truncated at float precision)
  float thr = neg_inf<float>();
  if (top_k > 0 && top_k < V) {
    auto count_ge = [&](uint32_t k) {
      const float t = value_of(k);
      long long c = 0;
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) c += float(to_acc(row[v])) * inv_t >= t;
      return block_reduce(c, SumOp(), 0LL) >= top_k;
    };
    thr = value_of(bisect_keys(key_of(neg_inf<float>()), count_ge));
  }
  if (top_p < 1.0 && M > neg_inf<float>()) {
    auto mass_ge = [&](float t) {
      double s = 0;
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
        const float x = float(to_acc(row[v])) * inv_t;
        if (x >= t) s += exp(double(x) - double(M));
      }
      return block_reduce(s, SumOp(), 0.0);
    };
    const double total = mass_ge(thr);
    thr = value_of(bisect_keys(key_of(thr), [&](uint32_t k) { return mass_ge(value_of(k)) >= top_p * total; }));
  }
  // chunk masses, one warp per chunk
  const int64_t nchunk = (V + kChunk - 1) / kChunk;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t c = warp; c < nchunk; c += nwarps) {
    double s = 0;
    for (int64_t v = c * kChunk + lane; v < min(V, (c + 1) * kChunk); v += 32) {
      const float x = float(to_acc(row[v])) * inv_t;
      if (x >= thr && M > neg_inf<float>()) s += double(__expf(x - M));
    }
    s = warp_reduce(s, SumOp());
    if (lane == 0) chunk_mass[c] = s;
  }
  __syncthreads();
  double total = 0;
  for (int64_t c = 0; c < nchunk; ++c) total += chunk_mass[c];
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const double target = U[r * K + k] * total;
    double acc = 0;
    int64_t pick = -1, last = 0;
    for (int64_t c = 0; c < nchunk && pick < 0; ++c) {
      if (acc + chunk_mass[c] <= target) {
        acc += chunk_mass[c];
        if (chunk_mass[c] > 0) last = c * kChunk;
        continue;
      }
      for (int64_t v = c * kChunk; v < min(V, (c + 1) * kChunk); ++v) {
        const float x = float(to_acc(row[v])) * inv_t;
        const double w = (x >= thr && M > neg_inf<float>()) ? double(__expf(x - M)) : 0.0;
        if (w > 0) last = v;
        acc += w;
        if (acc > target) {
          pick = v;
          break;
        }
      }
    }
    if (pick < 0) {  // rounding left the target past the last kept token
      pick = last;
      for (int64_t v = V - 1; v >= 0; --v) {
        const float x = float(to_acc(row[v])) * inv_t;
        if (x >= thr && M > neg_inf<float>()) {
          pick = v;
          break;
        }
      }
    }
    samples[r * K + k] = pick;
    sample_logps[r * K + k] = to_acc(row[pick]) - lse;
  }
  if (threadIdx.x == 0) {
    lse_out[r] = lse;
    label_logps[r] = labels[r] == ignore_index ? A(0) : to_acc(row[labels[r]]) - lse;
  }
}

}  // namespace

void sample_k_tokens(DType dt, const void* logits, const int64_t* labels, const double* uniforms, int64_t N,
                     int64_t V, int64_t K, double temperature, int64_t top_k, double top_p, int64_t ignore_index,
                     int64_t* samples, void* sample_logps, void* label_logps, void* lse, cudaStream_t stream) {
  if (N == 0) return;
  const size_t shmem = sizeof(double) * static_cast<size_t>((V + kChunk - 1) / kChunk);
  PT_CUDA_DISPATCH(dt, [&] {
    using A = acc_of<T>;
    sample_kernel<T><<<static_cast<unsigned>(N), kBlock, shmem, stream>>>(
        static_cast<const T*>(logits), labels, uniforms, V, K, float(1.0 / temperature), top_k, top_p, ignore_index,
        samples, static_cast<A*>(sample_logps), static_cast<A*>(label_logps), static_cast<A*>(lse));
  });
}

}  // namespace posttrain::cuda
