// Every op schema of the posttrain namespace lives here, so the whole contract reads in one place.
// Kernels register their implementations per backend in csrc/cpu/*.cpp and csrc/cuda/*.cpp.
#include <torch/extension.h>
#include <torch/library.h>

#ifdef POSTTRAIN_OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(posttrain, m) {
  // Token log-probs: logp[i] = log_softmax(logits[i])[labels[i]] (0 where labels[i] == ignore_index) and the row's
  // log-sum-exp, saved for a backward that recomputes softmax instead of storing it.
  m.def("token_logprobs(Tensor logits, Tensor labels, int ignore_index) -> (Tensor logp, Tensor lse)");
  m.def(
      "token_logprobs_backward(Tensor grad_logp, Tensor grad_lse, Tensor logits, Tensor labels, Tensor lse, "
      "int ignore_index) -> Tensor");
  // The same, fused with the lm-head: logits = hidden @ weight.T formed chunk_size vocabulary columns at a time
  // (0 = auto, about 2^20 logits per block).
  m.def(
      "lm_head_logprobs(Tensor hidden, Tensor weight, Tensor labels, int ignore_index, int chunk_size) -> "
      "(Tensor logp, Tensor lse)");
  m.def(
      "lm_head_logprobs_backward(Tensor grad_logp, Tensor grad_lse, Tensor hidden, Tensor weight, Tensor labels, "
      "Tensor lse, int ignore_index, int chunk_size) -> (Tensor grad_hidden, Tensor grad_weight)");
  // Token divergences between softmax(student/T) = q and softmax(teacher/T) = p, kind in forward_kl = KL(p||q),
  // reverse_kl = KL(q||p), jsd = beta KL(p||m) + (1-beta) KL(q||m) with m = beta p + (1-beta) q, tvd = |p-q|_1 / 2.
  // aux is a per-row scalar the backward needs (reverse_kl: the value; jsd: KL(q||m); tvd: E_q[sign(q-p)/2]).
  m.def(
      "token_divergence(Tensor student_logits, Tensor teacher_logits, str kind, float beta, float temperature) -> "
      "(Tensor div, Tensor student_lse, Tensor teacher_lse, Tensor aux)");
  // K tokens per row drawn from softmax(logits / temperature) truncated by top_k (0 = off) then top_p (1 = off),
  // by inverse CDF with the given uniforms (N, K) in [0, 1). The log-probs are under the untempered, untruncated
  // log_softmax(logits); lse is logsumexp(logits). Labels equal to ignore_index give label_logp 0. The integer output
  // comes last so generic autograd harnesses that sum every output start from a float.
  m.def(
      "sample_k_tokens(Tensor logits, Tensor labels, Tensor uniforms, float temperature, int top_k, float top_p, "
      "int ignore_index) -> (Tensor sample_logps, Tensor label_logps, Tensor lse, Tensor samples)");
  // Speculative verification of gamma draft tokens per row. draft_probs (B, gamma, V) are the probabilities the draft
  // sampled from, used as given; p = softmax(target_logits / temperature). Accept x_i while u_i q(x_i) < f(p(x_i)),
  // f(p) = p (sample) or p / lenience (lenient); greedy accepts while x_i is the target's argmax. At the first
  // rejection draw from norm(max(0, p - q)) (p when that is empty), after gamma acceptances from p, with u_gamma.
  // Returns expected acceptance Σ_v min(q, f(p)) (B, gamma), tokens (B, gamma + 1) padded with -1, accepted counts.
  m.def(
      "speculative_verify(Tensor draft_tokens, Tensor draft_probs, Tensor target_logits, Tensor uniforms, "
      "float temperature, str mode, float lenience) -> (Tensor expected_acceptance, Tensor tokens, Tensor num_accepted)");
  m.def(
      "token_divergence_backward(Tensor grad, Tensor student_logits, Tensor teacher_logits, Tensor student_lse, "
      "Tensor teacher_lse, Tensor aux, str kind, float beta, float temperature) -> Tensor");
}

static pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = TORCH_VERSION;
#ifdef POSTTRAIN_OPENMP
  info["openmp"] = true;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_max_threads"] = 1;
#endif
#if defined(CPU_CAPABILITY_AVX512)
  info["cpu_capability"] = "avx512";
#elif defined(CPU_CAPABILITY_AVX2)
  info["cpu_capability"] = "avx2";
#else
  info["cpu_capability"] = "default";
#endif
#ifdef POSTTRAIN_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  return info;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "posttrain compiled ops (registered under torch.ops.posttrain)";
  m.def("build_info", &build_info, "Compiled backends, OpenMP threads and the torch version built against.");
}
