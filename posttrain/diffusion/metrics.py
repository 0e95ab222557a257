"""Sample-quality measures against a set of real images: a kernel MMD on downsampled pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_features(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3·size²): area-averaged to size² and flattened (small features that keep position,
    size and colour, which is what the procedural images vary in)."""
    return F.adaptive_avg_pool2d(images.float(), size).flatten(1)


def kernel_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """Unbiased squared MMD with a Gaussian kernel k(a, b) = exp(−‖a − b‖² / (2 h²)):

        MMD² = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/(nm) Σ_{i,j} k(x_i, y_j)

    Args:
        x: (n, D) features of samples, n >= 2; y: (m, D) features of reference images, m >= 2.
        bandwidth: h; None = the median pairwise distance of the pooled features (the usual heuristic).
    Lower is closer; 0 in expectation when both come from one distribution (it can be slightly negative).
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"kernel_mmd2 needs at least 2 rows on each side, got {n} and {m}")
    pooled = torch.cat([x, y]).double()  # (n+m, D)
    squared = torch.cdist(pooled, pooled).pow(2)  # (n+m, n+m)
    if bandwidth is None:
        off_diagonal = squared[~torch.eye(n + m, dtype=torch.bool, device=squared.device)]
        bandwidth = float(off_diagonal.median().clamp(min=1e-12).sqrt())
    kernel = torch.exp(-squared / (2 * bandwidth**2))
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (xx + yy - 2 * kxy.mean()).float()
