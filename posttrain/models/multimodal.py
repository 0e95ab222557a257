"""What a vision-language model needs besides token ids, in one place: its forward kwargs, its positions and the
placeholder tokens it must never emit. Text models pass through unchanged.

Qwen2/2.5-VL place image tokens on a 3-D grid of rotary positions (M-RoPE): the model's `get_rope_index` gives the
(3, B, T) positions of a whole sequence and, per row, the offset `rope_deltas` by which every later text token's
position differs from its index among the row's real tokens. LLaVA-style models use ordinary 1-D positions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # processors import posttrain.models, so only the type is imported here
    from posttrain.processors.images import ImageInputs


def _images(image_inputs: ImageInputs | None) -> ImageInputs | None:
    return None if image_inputs is None or image_inputs.empty else image_inputs


def rope_model(model):
    """The submodule that owns `get_rope_index` (M-RoPE models), or None."""
    inner = getattr(model, "model", None)
    return inner if inner is not None and hasattr(inner, "get_rope_index") else None


def placeholder_token_ids(model) -> list[int]:
    """Ids that stand for image/video features in the input and are never a valid output token."""
    config = model.config
    ids = {getattr(config, name, None) for name in ("image_token_id", "video_token_id")}
    return sorted(i for i in ids if i is not None)


def token_types(model, input_ids: torch.Tensor) -> torch.Tensor:
    """mm_token_type_ids: 1 on image placeholders, 2 on video placeholders, 0 on text. (B, T) int."""
    config = model.config
    types = torch.zeros_like(input_ids, dtype=torch.int)  # (B, T)
    types[input_ids == config.image_token_id] = 1
    if getattr(config, "video_token_id", None) is not None:
        types[input_ids == config.video_token_id] = 2
    return types


def forward_kwargs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   image_inputs: ImageInputs | None = None) -> dict:
    """Keyword arguments of a full-sequence forward (no cache) of any supported model. Text: ids and mask only, as
    always. With images: their tensors, `mm_token_type_ids` for M-RoPE models, and positions counted from each row's
    first real token (`prefill_positions`), so left- and right-padded rows both get the positions the model means."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    images = _images(image_inputs)
    if images is None:
        return kwargs
    dtype = next(model.parameters()).dtype
    kwargs.update({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in images.tensors.items()})
    if rope_model(model) is not None:
        kwargs["mm_token_type_ids"] = token_types(model, input_ids)
    kwargs["position_ids"] = prefill_positions(model, input_ids, attention_mask, images)[0]
    return kwargs


def prefill_positions(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      image_inputs: ImageInputs | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Positions of a (left-padded) prompt and the per-row offset of later text positions.

    Returns:
        position_ids: (B, P) counted from each row's first real token, or (3, B, P) for an M-RoPE model with images;
        rope_deltas: (B, 1) for the latter, else None.
    """
    text_positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
    images, inner = _images(image_inputs), rope_model(model)
    if images is None or inner is None:
        return text_positions, None
    positions, deltas = inner.get_rope_index(
        input_ids, mm_token_type_ids=token_types(model, input_ids), image_grid_thw=images.tensors["image_grid_thw"],
        attention_mask=attention_mask)  # (3, B, P), (B, 1)
    return positions, deltas


def step_positions(text_positions: torch.Tensor, rope_deltas: torch.Tensor | None) -> torch.Tensor:
    """Positions of decoded tokens: their text positions (B, S), or for M-RoPE text position + rope_deltas on all
    three rows (3, B, S), as the model itself continues after a prefill."""
    if rope_deltas is None:
        return text_positions
    return (text_positions + rope_deltas)[None].expand(3, -1, -1)  # (3, B, S)


def last_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       image_inputs: ImageInputs | None = None) -> torch.Tensor:
    """The last hidden states before the lm-head: (B, T, H). With images this runs the whole multimodal backbone
    (a VLM's `get_decoder()` is its language model alone, which would skip the image features)."""
    if _images(image_inputs) is None:
        out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    else:
        out = model.base_model(**forward_kwargs(model, input_ids, attention_mask, image_inputs), use_cache=False)
    return out.last_hidden_state
