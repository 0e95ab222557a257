"""The image tensors of a batch, kept per example so that rows can be selected and repeated with their images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def _pad_trailing(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Zero-pads every dim but the first to the largest size, as image processors do for LLaVA-NeXT's patch lists."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    out = []
    for t in tensors:
        pad = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d - 1] - t.shape[d]]
        out.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    return out


@dataclass
class ImageInputs:
    """The model's image keyword arguments (pixel_values, image_grid_thw, image_sizes, ...) for a batch of rows.

    Every tensor concatenates the examples' entries along dim 0, in row order; `sizes[key][i]` is how many of those
    entries row i owns (Qwen-VL: pixel_values has one entry per image patch, image_grid_thw one per image; LLaVA:
    one per image). A row may own none (a text-only example). Lightning's batch transfer calls `to`.
    """

    tensors: dict[str, torch.Tensor]
    sizes: dict[str, list[int]]

    @classmethod
    def from_examples(cls, per_example: Sequence[dict[str, torch.Tensor]]) -> "ImageInputs":
        """Stacks per-example tensors (each keyed like the model's kwargs, dim 0 = that example's entries)."""
        keys = sorted({k for e in per_example for k in e})
        tensors, sizes = {}, {}
        for key in keys:
            parts = [e[key] for e in per_example if key in e]
            tensors[key] = torch.cat(_pad_trailing(parts))
            sizes[key] = [e[key].shape[0] if key in e else 0 for e in per_example]
        return cls(tensors, sizes)

    def __len__(self) -> int:
        return len(next(iter(self.sizes.values())))

    @property
    def empty(self) -> bool:
        """No row owns an image (the model then runs as a text model)."""
        return all(t.shape[0] == 0 for t in self.tensors.values())

    def to(self, *args, **kwargs) -> "ImageInputs":
        """Moves (and, for a dtype, casts the floating) tensors like `Tensor.to`."""
        moved = {}
        for key, t in self.tensors.items():
            if t.is_floating_point():
                moved[key] = t.to(*args, **kwargs)
            else:  # index tensors keep their integer dtype
                dtype_free = [a for a in args if not isinstance(a, torch.dtype)]
                moved[key] = t.to(*dtype_free, **{k: v for k, v in kwargs.items() if k != "dtype"})
        return ImageInputs(moved, self.sizes)

    def select(self, rows) -> "ImageInputs":
        """The image inputs of `rows` (indices into this batch, in that order, repeats allowed)."""
        rows = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        tensors, sizes = {}, {}
        for key, t in self.tensors.items():
            counts = self.sizes[key]
            starts = [0]
            for c in counts:
                starts.append(starts[-1] + c)
            index = [j for r in rows for j in range(starts[r], starts[r] + counts[r])]
            tensors[key] = t[torch.tensor(index, dtype=torch.long, device=t.device)]
            sizes[key] = [counts[r] for r in rows]
        return ImageInputs(tensors, sizes)

    def repeat_interleave(self, repeats: int) -> "ImageInputs":
        """Each row `repeats` times in a row, matching `Tensor.repeat_interleave(repeats, dim=0)` of the batch."""
        return self.select([r for r in range(len(self)) for _ in range(repeats)])

    @classmethod
    def concat(cls, parts: Sequence["ImageInputs"]) -> "ImageInputs":
        """The rows of `parts`, one after the other (e.g. rollouts of several prompt batches)."""
        keys = list(parts[0].tensors)
        return cls({k: torch.cat(_pad_trailing([p.tensors[k] for p in parts])) for k in keys},
                   {k: [n for p in parts for n in p.sizes[k]] for k in keys})
