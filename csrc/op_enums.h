// Enumerations shared by the CPU kernels, the CUDA kernels and their registrations. Torch-free, so nvcc compiles
// the .cu files that use them without torch headers.
#pragma once

namespace posttrain {

// Divergence kinds, in the order of posttrain/ops/token_divergence.py's KINDS.
enum class DivKind : int { kForwardKL = 0, kReverseKL = 1, kJSD = 2, kTVD = 3 };

// Verification modes of speculative_verify.
enum class VerifyMode : int { kSample = 0, kGreedy = 1, kLenient = 2 };

}  // namespace posttrain
