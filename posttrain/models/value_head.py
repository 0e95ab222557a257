"""A scalar head on any causal LM's last hidden states: the Bradley–Terry reward model and the PPO critic."""
from __future__ import annotations

import os

import torch
from torch import nn

from posttrain.models.multimodal import last_hidden_states


def freeze_unused_lm_head(model: nn.Module) -> None:
    """Freezes the lm-head of a causal LM that a value head reads instead (unused weights would stall DDP's gradient
    sync), unless it is tied to the input embeddings, which the value model still trains."""
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        head.requires_grad_(False)


class ValueModel(nn.Module):
    """v(tokens_≤t) = w · h_t + b for every position, h_t the backbone's last hidden state.

    Args:
        backbone: a Hugging Face causal LM (its decoder is used; the lm-head is not).
    The head starts at zero weight and bias, so every start value is 0 and a fresh critic's first advantages are
    the rewards themselves.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.get_text_config().hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs=None) -> torch.Tensor:
        """(B, T) -> (B, T) float32 values; positions count from each row's first real token (left or right padding).
        A vision-language backbone also reads the rows' `image_inputs`."""
        if image_inputs is None:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
            hidden = self.backbone.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                                 position_ids=position_ids, use_cache=False).last_hidden_state
        else:
            hidden = last_hidden_states(self.backbone, input_ids, attention_mask, image_inputs)  # (B, T, H)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()  # (B, T)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_inputs=None) -> torch.Tensor:
        """The value at each row's last real token (right padding): (B, T) -> (B,), the sequence's reward."""
        values = self(input_ids, attention_mask, image_inputs)  # (B, T)
        last = attention_mask.sum(-1) - 1  # (B,)
        return values.gather(-1, last[:, None]).squeeze(-1)

    HEAD_FILE = "value_head.pt"

    def save_pretrained(self, directory: str) -> None:
        """The backbone as a Hugging Face model (loadable alone) plus the head's weights beside it."""
        self.backbone.save_pretrained(directory)
        torch.save(self.head.state_dict(), os.path.join(directory, self.HEAD_FILE))

    @classmethod
    def from_pretrained(cls, directory: str) -> "ValueModel":
        """Loads what `save_pretrained` wrote."""
        from transformers import AutoModelForCausalLM

        model = cls(AutoModelForCausalLM.from_pretrained(directory))
        model.head.load_state_dict(torch.load(os.path.join(directory, cls.HEAD_FILE), map_location="cpu"))
        return model
