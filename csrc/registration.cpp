// Every op schema of the posttrain namespace lives here, so the whole contract reads in one place.
// Kernels register their implementations per backend in csrc/cpu/*.cpp and csrc/cuda/*.cpp.
#include <torch/extension.h>
#include <torch/library.h>

#ifdef POSTTRAIN_OPENMP
#include <omp.h>
#endif

TORCH_LIBRARY(posttrain, m) {
  // Op schemas are added by the kernel files' issue; the namespace exists so the library loads.
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
