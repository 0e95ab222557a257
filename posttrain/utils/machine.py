"""What a result was measured on: the CPU, its threads and the library versions that move tiny-model results.

Written into every results.json, so a table's figures can be traced to the machine and the libraries that produced
them (tiny models give different numbers on AVX2 and AVX-512 CPUs, and with other releases of the libraries)."""
from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

# The distributions whose release changes what a run prints (pinned for the experiments in constraints.txt).
RESULT_LIBRARIES = ("torch", "transformers", "lightning", "diffusers", "peft", "numpy", "tokenizers",
                    "torchmetrics", "gymnasium", "mujoco", "metaworld", "scikit-learn")


def cpu_name() -> str:
    """The CPU's model name as `lscpu` shows it; the platform's processor string where /proc has none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(names: tuple[str, ...] = RESULT_LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution; None for one that is not installed."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict:
    """The machine and libraries a run was measured on, as a JSON-ready dict."""
    return {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch's kernels use: AVX2, AVX512
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "libraries": library_versions(),
    }
