// Token log-probs on CUDA: one block per row with an online log-sum-exp; backward is elementwise from the saved lse.
#include "common.cuh"

namespace posttrain::cuda {
namespace {

template <typename T>
__global__ void logprobs_forward_kernel(const T* __restrict__ x, const int64_t* __restrict__ labels, int64_t V,
                                        int64_t ignore_index, acc_of<T>* logp, acc_of<T>* lse) {
  using A = acc_of<T>;
  const int64_t r = blockIdx.x;
  const T* row = x + r * V;
  OnlineLse<A> st;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) st.add(to_acc(row[v]));
  const A l = st.block_lse();
  if (threadIdx.x == 0) {
    lse[r] = l;
    const int64_t y = labels[r];
    logp[r] = y == ignore_index ? A(0) : to_acc(row[y]) - l;
  }
}

// grad = g (onehot(label) - softmax) + g_lse softmax; g = 0 on ignored rows.
template <typename T>
__global__ void logprobs_backward_kernel(const acc_of<T>* __restrict__ g, const acc_of<T>* __restrict__ gl,
                                         const T* __restrict__ x, const int64_t* __restrict__ labels,
                                         const acc_of<T>* __restrict__ lse, int64_t N, int64_t V,
                                         int64_t ignore_index, T* __restrict__ out) {
  using A = acc_of<T>;
  const int64_t total = N * V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / V, v = i - r * V;
    const bool ignored = labels[r] == ignore_index;
    const A gr = ignored ? A(0) : g[r];
    A d = exp_acc(to_acc(x[i]) - lse[r]) * (gl[r] - gr);
    if (!ignored && labels[r] == v) d += gr;
    out[i] = from_acc<T>(d);
  }
}

}  // namespace

void token_logprobs_forward(DType dt, const void* logits, const int64_t* labels, int64_t N, int64_t V,
                            int64_t ignore_index, void* logp, void* lse, cudaStream_t stream) {
  if (N == 0) return;
  PT_CUDA_DISPATCH(dt, [&] {
    using A = acc_of<T>;
    logprobs_forward_kernel<T><<<static_cast<unsigned>(N), kBlock, 0, stream>>>(
        static_cast<const T*>(logits), labels, V, ignore_index, static_cast<A*>(logp), static_cast<A*>(lse));
  });
}

void token_logprobs_backward(DType dt, const void* grad_logp, const void* grad_lse, const void* logits,
                             const int64_t* labels, const void* lse, int64_t N, int64_t V, int64_t ignore_index,
                             void* grad_logits, cudaStream_t stream) {
  if (N * V == 0) return;
  PT_CUDA_DISPATCH(dt, [&] {
    using A = acc_of<T>;
    logprobs_backward_kernel<T><<<grid_for(N * V, kBlock * 4), kBlock, 0, stream>>>(
        static_cast<const A*>(grad_logp), static_cast<const A*>(grad_lse), static_cast<const T*>(logits), labels,
        static_cast<const A*>(lse), N, V, ignore_index, static_cast<T*>(grad_logits));
  });
}

}  // namespace posttrain::cuda
