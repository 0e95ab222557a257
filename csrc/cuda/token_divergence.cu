// Token divergences on CUDA: one block per row (lse of both rows online, then the divergence sum); backward is
// elementwise from the saved lse and per-row aux value.
#include "common.cuh"

namespace posttrain::cuda {
namespace {

template <typename A>
struct Terms {
  A div, aux;
};

// Per-element divergence term and its aux term; 0 · log 0 = 0.
template <typename A>
__device__ __forceinline__ Terms<A> element(DivKind kind, A lq, A lp, A beta) {
  const A q = exp_acc(lq), p = exp_acc(lp);
  switch (kind) {
    case DivKind::kForwardKL:
      return {p > A(0) ? p * (lp - lq) : A(0), A(0)};
    case DivKind::kReverseKL:
      return {q > A(0) ? q * (lq - lp) : A(0), A(0)};
    case DivKind::kJSD: {
      const A m = beta * p + (A(1) - beta) * q;
      const A lm = m > A(0) ? log_acc(m) : A(0);
      const A kq = q > A(0) ? q * (lq - lm) : A(0);
      const A kp = p > A(0) ? p * (lp - lm) : A(0);
      return {beta * kp + (A(1) - beta) * kq, kq};
    }
    default: {
      const A hs = q > p ? A(0.5) : (q < p ? A(-0.5) : A(0));
      return {A(0.5) * fabs(q - p), q * hs};
    }
  }
}

template <typename T>
__global__ void divergence_forward_kernel(DivKind kind, const T* __restrict__ S, const T* __restrict__ Tt, int64_t V,
                                          acc_of<T> beta, acc_of<T> inv_t, acc_of<T>* div, acc_of<T>* lse_s,
                                          acc_of<T>* lse_t, acc_of<T>* aux) {
  using A = acc_of<T>;
  const int64_t r = blockIdx.x;
  const T* s = S + r * V;
  const T* t = Tt + r * V;
  OnlineLse<A> os, ot;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    os.add(to_acc(s[v]) * inv_t);
    ot.add(to_acc(t[v]) * inv_t);
  }
  const A ls = os.block_lse(), lt = ot.block_lse();
  A d = 0, a = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const Terms<A> e = element<A>(kind, to_acc(s[v]) * inv_t - ls, to_acc(t[v]) * inv_t - lt, beta);
    d += e.div;
    a += e.aux;
  }
  d = block_reduce(d, SumOp(), A(0));
  a = block_reduce(a, SumOp(), A(0));
  if (threadIdx.x == 0) {
    div[r] = d;
    lse_s[r] = ls;
    lse_t[r] = lt;
    aux[r] = kind == DivKind::kReverseKL ? d : a;
  }
}

template <typename T>
__global__ void divergence_backward_kernel(DivKind kind, const acc_of<T>* __restrict__ g, const T* __restrict__ S,
                                           const T* __restrict__ Tt, const acc_of<T>* __restrict__ lse_s,
                                           const acc_of<T>* __restrict__ lse_t, const acc_of<T>* __restrict__ aux,
                                           int64_t N, int64_t V, acc_of<T> beta, acc_of<T> inv_t, T* __restrict__ out) {
  using A = acc_of<T>;
  const int64_t total = N * V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / V;
    const A lq = to_acc(S[i]) * inv_t - lse_s[r], lp = to_acc(Tt[i]) * inv_t - lse_t[r];
    const A q = exp_acc(lq), p = exp_acc(lp);
    A dz;
    switch (kind) {
      case DivKind::kForwardKL:
        dz = q - p;
        break;
      case DivKind::kReverseKL:
        dz = q > A(0) ? q * (lq - lp - aux[r]) : A(0);
        break;
      case DivKind::kJSD: {
        const A m = beta * p + (A(1) - beta) * q;
        dz = q > A(0) ? (A(1) - beta) * q * (lq - log_acc(m) - aux[r]) : A(0);
        break;
      }
      default: {
        const A hs = q > p ? A(0.5) : (q < p ? A(-0.5) : A(0));
        dz = q * (hs - aux[r]);
      }
    }
    out[i] = from_acc<T>(dz * g[r] * inv_t);
  }
}

}  // namespace

void token_divergence_forward(DType dt, DivKind kind, const void* student, const void* teacher, int64_t N, int64_t V,
                              double beta, double temperature, void* div, void* lse_s, void* lse_t, void* aux,
                              cudaStream_t stream) {
  if (N == 0) return;
  PT_CUDA_DISPATCH(dt, [&] {
    using A = acc_of<T>;
    divergence_forward_kernel<T><<<static_cast<unsigned>(N), kBlock, 0, stream>>>(
        kind, static_cast<const T*>(student), static_cast<const T*>(teacher), V, A(beta), A(1.0 / temperature),
        static_cast<A*>(div), static_cast<A*>(lse_s), static_cast<A*>(lse_t), static_cast<A*>(aux));
  });
}

void token_divergence_backward(DType dt, DivKind kind, const void* grad, const void* student, const void* teacher,
                               const void* lse_s, const void* lse_t, const void* aux, int64_t N, int64_t V,
                               double beta, double temperature, void* grad_student, cudaStream_t stream) {
  if (N * V == 0) return;
  PT_CUDA_DISPATCH(dt, [&] {
    using A = acc_of<T>;
    divergence_backward_kernel<T><<<grid_for(N * V, kBlock * 4), kBlock, 0, stream>>>(
        kind, static_cast<const A*>(grad), static_cast<const T*>(student), static_cast<const T*>(teacher),
        static_cast<const A*>(lse_s), static_cast<const A*>(lse_t), static_cast<const A*>(aux), N, V, A(beta),
        A(1.0 / temperature), static_cast<T*>(grad_student));
  });
}

}  // namespace posttrain::cuda
