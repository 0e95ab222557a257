// Speculative verification on CUDA, one block per batch row: per draft position an online lse pass over the target
// logits, a second pass for Σ min(q, f(p)), thread 0's acceptance test, and on rejection (or after γ acceptances) an
// inverse-CDF draw whose chunk masses are summed by warps into shared memory.
#include "common.cuh"

namespace posttrain::cuda {
namespace {

constexpr int kChunk = 1024;

template <typename T>
__device__ int64_t block_argmax(const T* row, int64_t V) {
  using A = acc_of<T>;
  A best = neg_inf<A>();
  long long arg = V;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const A x = to_acc(row[v]);
    if (x > best) {
      best = x;
      arg = v;
    }
  }
  const A M = block_reduce(best, MaxOp(), neg_inf<A>());
  const long long first = block_reduce(best == M ? arg : (long long)V, MinOp(), (long long)V);
  return first < V ? first : 0;
}

// Inverse CDF over weights w(v) >= 0 with one uniform; returns -1 when every weight is 0. Every thread gets the result.
template <typename A, typename W>
__device__ int64_t block_draw(W w, int64_t V, double u, double* chunk_mass) {
  __shared__ long long picked;
  const int64_t nchunk = (V + kChunk - 1) / kChunk;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();
  for (int64_t c = warp; c < nchunk; c += nwarps) {
    double s = 0;
    for (int64_t v = c * kChunk + lane; v < min(V, (c + 1) * kChunk); v += 32) s += double(w(v));
    s = warp_reduce(s, SumOp());
    if (lane == 0) chunk_mass[c] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int64_t c = 0; c < nchunk; ++c) total += chunk_mass[c];
    long long pick = -1;
    if (total > 0) {
      const double target = u * total;
      double acc = 0;
      for (int64_t c = 0; c < nchunk && pick < 0; ++c) {
        if (acc + chunk_mass[c] <= target) {
          acc += chunk_mass[c];
          continue;
        }
        for (int64_t v = c * kChunk; v < min(V, (c + 1) * kChunk); ++v) {
          acc += double(w(v));
          if (acc > target) {
            pick = v;
            break;
          }
        }
      }
      if (pick < 0)
        for (int64_t v = V - 1; v >= 0 && pick < 0; --v)
          if (w(v) > A(0)) pick = v;
    }
    picked = pick;
  }
  __syncthreads();
  return picked;
}

template <typename T>
__global__ void verify_kernel(VerifyMode mode, const int64_t* __restrict__ draft, const acc_of<T>* __restrict__ Q,
                              const T* __restrict__ X, const double* __restrict__ U, int64_t G, int64_t V,
                              acc_of<T> inv_t, acc_of<T> inv_eps, acc_of<T>* expected, int64_t* tokens,
                              int64_t* num_accepted) {
  using A = acc_of<T>;
  extern __shared__ double chunk_mass[];
  const int64_t b = blockIdx.x;
  const int64_t* x = draft + b * G;
  const double* u = U + b * (G + 1);
  int64_t n = G, extra = -1;
  for (int64_t i = 0; i < G; ++i) {
    const T* row = X + (b * (G + 1) + i) * V;
    const A* q = Q + (b * G + i) * V;
    if (mode == VerifyMode::kGreedy) {
      const bool ok = block_argmax(row, V) == x[i];
      if (threadIdx.x == 0) expected[b * G + i] = ok ? A(1) : A(0);
      if (!ok && n == G) {
        n = i;
        extra = block_argmax(row, V);
      }
      continue;
    }
    OnlineLse<A> st;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) st.add(to_acc(row[v]) * inv_t);
    const A lse = st.block_lse();
    auto p = [&](int64_t v) { return exp_acc(to_acc(row[v]) * inv_t - lse); };
    A e = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) e += fmin(q[v], p(v) * inv_eps);
    e = block_reduce(e, SumOp(), A(0));
    if (threadIdx.x == 0) expected[b * G + i] = e;
    if (n != G) continue;
    if (A(u[i]) * q[x[i]] < p(x[i]) * inv_eps) continue;  // same decision in every thread
    n = i;
    extra = block_draw<A>([&](int64_t v) { return fmax(p(v) - q[v], A(0)); }, V, u[G], chunk_mass);
    if (extra < 0) extra = block_draw<A>(p, V, u[G], chunk_mass);
  }
  if (n == G) {
    const T* row = X + (b * (G + 1) + G) * V;
    if (mode == VerifyMode::kGreedy) {
      extra = block_argmax(row, V);
    } else {
      OnlineLse<A> st;
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) st.add(to_acc(row[v]) * inv_t);
      const A lse = st.block_lse();
      extra = block_draw<A>([&](int64_t v) { return exp_acc(to_acc(row[v]) * inv_t - lse); }, V, u[G], chunk_mass);
    }
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) tokens[b * (G + 1) + i] = x[i];
  if (threadIdx.x == 0) {
    tokens[b * (G + 1) + n] = extra < 0 ? 0 : extra;
    num_accepted[b] = n;
  }
}

}  // namespace

void speculative_verify(DType dt, VerifyMode mode, const int64_t* draft_tokens, const void* draft_probs,
                        const void* target_logits, const double* uniforms, int64_t B, int64_t G, int64_t V,
                        double temperature, double lenience, void* expected, int64_t* tokens, int64_t* num_accepted,
                        cudaStream_t stream) {
  if (B == 0) return;
  const size_t shmem = sizeof(double) * static_cast<size_t>((V + kChunk - 1) / kChunk);
  const double eps = mode == VerifyMode::kLenient ? lenience : 1.0;
  const double inv_t = mode == VerifyMode::kGreedy ? 1.0 : 1.0 / temperature;
  PT_CUDA_DISPATCH(dt, [&] {
    using A = acc_of<T>;
    verify_kernel<T><<<static_cast<unsigned>(B), kBlock, shmem, stream>>>(
        mode, draft_tokens, static_cast<const A*>(draft_probs), static_cast<const T*>(target_logits), uniforms, G, V,
        A(inv_t), A(1.0 / eps), static_cast<A*>(expected), tokens, num_accepted);
  });
}

}  // namespace posttrain::cuda
