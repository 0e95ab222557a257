// CUDA registration of token_divergence: argument checks, then the raw kernels of token_divergence.cu.
#include <torch/library.h>

#include "cuda/binding_utils.h"
#include "op_args.h"

namespace posttrain::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& s_in, const at::Tensor& t_in,
                                                                   c10::string_view kind, double beta,
                                                                   double temperature) {
  check_divergence_args(s_in, t_in, beta, temperature, at::kCUDA);
  const DivKind k = parse_divergence_kind(kind);
  c10::cuda::CUDAGuard guard(s_in.device());
  const auto s = s_in.contiguous(), t = t_in.contiguous();
  const int64_t N = s.size(0), V = s.size(1);
  const auto opts = s.options().dtype(acc_dtype(s));
  auto div = at::empty({N}, opts), ls = at::empty({N}, opts), lt = at::empty({N}, opts), aux = at::empty({N}, opts);
  token_divergence_forward(dtype_of(s), k, s.const_data_ptr(), t.const_data_ptr(), N, V, beta, temperature,
                           div.data_ptr(), ls.data_ptr(), lt.data_ptr(), aux.data_ptr(), current_stream());
  return {div, ls, lt, aux};
}

at::Tensor backward(const at::Tensor& grad, const at::Tensor& s_in, const at::Tensor& t_in, const at::Tensor& ls_in,
                    const at::Tensor& lt_in, const at::Tensor& aux_in, c10::string_view kind, double beta,
                    double temperature) {
  check_divergence_args(s_in, t_in, beta, temperature, at::kCUDA);
  const DivKind k = parse_divergence_kind(kind);
  c10::cuda::CUDAGuard guard(s_in.device());
  const auto acc = acc_dtype(s_in);
  const auto s = s_in.contiguous(), t = t_in.contiguous();
  const auto g = grad.to(acc).contiguous(), ls = ls_in.to(acc).contiguous(), lt = lt_in.to(acc).contiguous(),
             aux = aux_in.to(acc).contiguous();
  const int64_t N = s.size(0), V = s.size(1);
  for (auto* x : {&g, &ls, &lt, &aux}) PT_CHECK_SIZE(*x, 0, N, "grad/lse/aux");
  auto out = at::empty({N, V}, s.options());
  token_divergence_backward(dtype_of(s), k, g.const_data_ptr(), s.const_data_ptr(), t.const_data_ptr(),
                            ls.const_data_ptr(), lt.const_data_ptr(), aux.const_data_ptr(), N, V, beta, temperature,
                            out.data_ptr(), current_stream());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(posttrain, CUDA, m) {
  m.impl("token_divergence", &forward);
  m.impl("token_divergence_backward", &backward);
}

}  // namespace posttrain::cuda
