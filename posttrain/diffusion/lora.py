"""LoRA on a diffusion model's UNet through `peft` (`model.lora`), and the references that share its base weights.

`add_lora` injects peft LoRA layers (adapter "default") into the UNet's `target_modules` and freezes every base
weight, so only the adapter trains. A frozen reference then needs no second UNet: `AdapterView` runs the same UNet
with its adapters disabled (the start model: a fresh adapter adds B A = 0) or through a second, frozen adapter
("reference") that past adapter weights are loaded into, e.g. SePPO's checkpoint pool. `merged_unet` folds the
trained adapter into a plain UNet of the same class (W + (α/r) B A) for saving.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer, set_adapter
from torch import nn

from posttrain.utils.config import ConfigError, check

ADAPTER = "default"  # the adapter that trains
REFERENCE = "reference"  # a frozen adapter slot past adapter weights are loaded into
KEYS = ("r", "alpha", "dropout", "target_modules")
# the attention projections, what diffusers' text-to-image LoRA example adapts
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def lora_config(spec: Mapping) -> LoraConfig:
    """`model.lora` ({r, alpha (default r), dropout (default 0), target_modules}) -> a peft `LoraConfig`; a bad
    entry is a ConfigError naming its key."""
    spec = dict(spec)
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ConfigError(f"model.lora.{unknown[0]}: unknown key; model.lora takes {list(KEYS)}")
    r = spec.get("r", 8)
    check(isinstance(r, int) and r > 0, "model.lora.r", f"must be an integer > 0, got {r!r}")
    alpha = spec.get("alpha") if spec.get("alpha") is not None else r
    check(alpha > 0, "model.lora.alpha", f"must be > 0, got {alpha!r}")
    dropout = spec.get("dropout") or 0.0
    check(0 <= dropout < 1, "model.lora.dropout", f"must be in [0, 1), got {dropout!r}")
    targets = spec.get("target_modules") or DEFAULT_TARGETS
    targets = [targets] if isinstance(targets, str) else [str(t) for t in targets]
    # "gaussian": A ~ N(0, 1/r²), B = 0, as diffusers' LoRA training does; B = 0 makes the start adapter the identity
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      init_lora_weights="gaussian")


def add_lora(unet: nn.Module, spec: Mapping) -> LoraConfig:
    """Injects the trainable adapter of `spec` (`model.lora`) into `unet` in place and freezes its base weights.

    Every target must name at least one submodule (its full name or a dotted suffix of one, as peft matches them)
    of a kind peft adapts (Linear, Conv, Embedding). Adapter weights are float32 whatever the base dtype: Adam's
    updates of bf16 weights would be lost to rounding."""
    config = lora_config(spec)
    for target in sorted(config.target_modules):
        matched = [(n, m) for n, m in unet.named_modules() if n == target or n.endswith("." + target)]
        check(bool(matched), "model.lora.target_modules",
              f"{target!r} names no module of the {type(unet).__name__} (e.g. to_q, to_k, to_v, to_out.0, proj_in)")
        name, module = next(((n, m) for n, m in matched if not isinstance(m, ADAPTABLE)), (None, None))
        check(module is None, "model.lora.target_modules", f"{target!r} names {name}, a {type(module).__name__}; "
              f"LoRA adapts Linear, Conv and Embedding layers")
    try:
        inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    except ValueError as err:  # peft's word on anything else it cannot adapt
        raise ConfigError(f"model.lora.target_modules: {str(err)[:300]}") from None
    for name, param in unet.named_parameters():
        if ".lora_" in name:
            param.data = param.data.float()
    return config


def has_lora(unet: nn.Module) -> bool:
    return ADAPTER in getattr(unet, "peft_config", {})


def adapter_weights(unet: nn.Module, adapter: str = ADAPTER) -> dict[str, torch.Tensor]:
    """The adapter's weights (peft's keys, without the adapter's name): detached CPU copies."""
    weights = get_peft_model_state_dict(unet, adapter_name=adapter)
    return {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}


def load_adapter_weights(unet: nn.Module, weights: Mapping[str, torch.Tensor], adapter: str) -> None:
    """Loads `adapter_weights` output into the adapter `adapter` of `unet`; keys it does not have are an error."""
    result = set_peft_model_state_dict(unet, dict(weights), adapter_name=adapter)
    if result.unexpected_keys:
        raise KeyError(f"adapter weights with keys the UNet lacks: {result.unexpected_keys[:3]}")


@contextlib.contextmanager
def running(unet: nn.Module, adapter: str | None):
    """Within: `unet` in eval mode runs through adapter `adapter` alone (None: no adapter). After: the trained
    adapter active (and trainable) again and the mode restored. peft's switches also set requires_grad, which this
    puts back as it was."""
    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    grads = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    training = unet.training
    unet.eval()
    try:
        if adapter is None:
            for layer in layers:
                layer.enable_adapters(False)
        else:
            set_adapter(unet, adapter, inference_mode=True)
        yield unet
    finally:
        if adapter is None:
            for layer in layers:
                layer.enable_adapters(True)
        set_adapter(unet, ADAPTER)
        for param, grad in grads.items():
            param.requires_grad_(grad)
        unet.train(training)


class AdapterView(nn.Module):
    """A frozen reference that is the LoRA UNet's own base weights, with its adapters disabled (`adapter=None`: the
    start model) or through the frozen adapter `adapter`, added here when missing. It holds no weights of its own
    (the UNet is not a submodule), so it costs one adapter's memory, never a second UNet's.

    Called like the UNet; `load_weights` puts `adapter_weights` output (e.g. a pool entry) into its adapter."""

    def __init__(self, unet: nn.Module, adapter: str | None = REFERENCE):
        super().__init__()
        check(has_lora(unet), "model.lora", "an adapter view needs a UNet with LoRA")
        object.__setattr__(self, "unet", unet)  # not registered: its weights are the policy's
        self.adapter = adapter
        if adapter is not None and adapter not in unet.peft_config:
            with warnings.catch_warnings():  # peft's note that the model will hold two adapters: it is the point
                warnings.filterwarnings("ignore", message=".*peft_config.*")
                inject_adapter_in_model(unet.peft_config[ADAPTER], unet, adapter_name=adapter)
            set_adapter(unet, ADAPTER)  # injecting activated the new adapter and made both trainable
            for name, param in unet.named_parameters():
                if f".{adapter}." in name:
                    param.data = param.data.float()

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def config(self):
        return self.unet.config

    def forward(self, *args, **kwargs):
        with torch.no_grad(), running(self.unet, self.adapter):
            return self.unet(*args, **kwargs)

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        check(self.adapter is not None, "model.lora", "a view with adapters disabled loads no weights")
        load_adapter_weights(self.unet, weights, self.adapter)


def merged_unet(unet: nn.Module) -> nn.Module:
    """A plain UNet of `unet`'s class and config (no peft layers) with weights W + ΔW of the trained adapter,
    ΔW = (α/r) B A (peft's `get_delta_weight`), in the base weights' dtype. Built on the meta device and given
    the tensors, so only the adapted weights are new memory."""
    state = {}
    for key, value in unet.state_dict().items():
        if ".lora_" not in key:  # peft's adapter weights (lora_A, lora_B, ...); base weights sit at .base_layer.
            state[key.replace(".base_layer.", ".")] = value
    for name, module in unet.named_modules():
        if isinstance(module, BaseTunerLayer) and ADAPTER in getattr(module, "lora_A", {}):
            base = module.get_base_layer().weight
            delta = module.get_delta_weight(ADAPTER)  # (out, in, ...) like the base weight
            state[f"{name}.weight"] = (base.detach().float() + delta.detach().float()).to(base.dtype)
    with torch.device("meta"):
        plain = type(unet).from_config(unet.config)
    plain.load_state_dict(state, strict=True, assign=True)
    return plain.eval()
