// Host entry points of the raw CUDA kernels. Torch-free on purpose: raw pointers, sizes and a stream, so the .cu
// files compile with nvcc alone; the *_binding.cpp files (CUDA torch builds only) call these.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "op_enums.h"

namespace posttrain::cuda {

// Element type of a floating input; outputs and accumulators are float32, or float64 for kFloat64 inputs.
enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3 };

void token_logprobs_forward(DType dt, const void* logits, const int64_t* labels, int64_t N, int64_t V,
                            int64_t ignore_index, void* logp, void* lse, cudaStream_t stream);

void token_logprobs_backward(DType dt, const void* grad_logp, const void* grad_lse, const void* logits,
                             const int64_t* labels, const void* lse, int64_t N, int64_t V, int64_t ignore_index,
                             void* grad_logits, cudaStream_t stream);

void token_divergence_forward(DType dt, DivKind kind, const void* student, const void* teacher, int64_t N, int64_t V,
                              double beta, double temperature, void* div, void* lse_s, void* lse_t, void* aux,
                              cudaStream_t stream);

void token_divergence_backward(DType dt, DivKind kind, const void* grad, const void* student, const void* teacher,
                               const void* lse_s, const void* lse_t, const void* aux, int64_t N, int64_t V,
                               double beta, double temperature, void* grad_student, cudaStream_t stream);

// uniforms are float64 (N, K); outputs: samples int64 (N, K), sample_logps (N, K), label_logps (N,), lse (N,).
void sample_k_tokens(DType dt, const void* logits, const int64_t* labels, const double* uniforms, int64_t N,
                     int64_t V, int64_t K, double temperature, int64_t top_k, double top_p, int64_t ignore_index,
                     int64_t* samples, void* sample_logps, void* label_logps, void* lse, cudaStream_t stream);

// draft_probs are given in the accumulation type (float32, or float64 for float64 target logits); uniforms float64.
// tokens (B, G + 1) must be pre-filled with -1.
void speculative_verify(DType dt, VerifyMode mode, const int64_t* draft_tokens, const void* draft_probs,
                        const void* target_logits, const double* uniforms, int64_t B, int64_t G, int64_t V,
                        double temperature, double lenience, void* expected, int64_t* tokens, int64_t* num_accepted,
                        cudaStream_t stream);

}  // namespace posttrain::cuda
