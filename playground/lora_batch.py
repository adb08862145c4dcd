"""Rows of different LoRA adapters in one forward pass, for the price of the adapters' own small matrices.

PEFT can mix adapters in a batch (``model(..., adapter_names=[...])``), but each call registers a hook on every
LoRA layer, walks the model twice to check the names, and in every layer rebuilds each adapter's row list in
Python and gathers and scatters those rows: on a small model decoding a few rows that bookkeeping costs about as
much as the forward pass it shares, so base + adapter in one batch cost what two ``generate()`` calls cost.

Here each LoRA layer computes, for every row, the base layer's output plus each present adapter's update
weighted by a per-row factor (the adapter's scaling on its rows, 0 on the others). The factors are built once
per forward pass, not per layer, and nothing is gathered or scattered. A row's numbers are PEFT's: the update of
an adapter on its own row is ``lora_B(lora_A(x)) * scaling`` as in PEFT's single-adapter forward, and on another
row it adds exact zeros. Only plain LoRA on ``nn.Linear``-like layers (also bitsandbytes 4-bit) is handled here;
for anything else (DoRA, LoRA on embeddings, other adapter types) :func:`supports` says no and the caller keeps
PEFT's own path.

    >>> import torch
    >>> from peft import LoraConfig, get_peft_model
    >>> _ = torch.manual_seed(0)
    >>> base = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> model = get_peft_model(base, LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    >>> x = torch.randn(2, 1, 4)
    >>> with torch.no_grad(), mixed_rows(model, ["__base__", "default"]):
    ...     mixed = model(x)
    >>> with torch.no_grad(), model.disable_adapter():
    ...     base_only = model(x)
    >>> with torch.no_grad():
    ...     adapter_only = model(x)
    >>> torch.equal(mixed[0], base_only[0]), torch.equal(mixed[1], adapter_only[1])
    (True, True)
"""

from __future__ import annotations

import contextlib
import functools
import weakref

import torch

from .models import PEFT_BASE

# model -> (its adapters' names, its LoRA layers): found once, again after an adapter is added or removed
_layers_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _lora_layers(model: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    names = tuple(model.peft_config)
    if model not in _layers_of or _layers_of[model][0] != names:
        _layers_of[model] = names, [module for module in model.modules() if isinstance(module, LoraLayer)]
    return _layers_of[model][1]


def supports(model: torch.nn.Module, adapters: list[str]) -> bool:
    """Whether every LoRA layer the ``adapters`` touch is a plain LoRA linear layer this module can mix."""
    names = set(adapters) - {PEFT_BASE}
    for layer in _lora_layers(model):
        if names & set(layer.lora_embedding_A) or names & set(getattr(layer, "lora_variant", {})):
            return False  # LoRA on an embedding, or a variant (DoRA, aLoRA...) with a forward of its own
        if names & set(layer.lora_A) and (layer.merged or not hasattr(layer, "base_layer")):
            return False
    return True


@contextlib.contextmanager
def mixed_rows(model: torch.nn.Module, adapters: list[str]):
    """While entered, a forward pass of ``model`` gives row ``i`` the adapter ``adapters[i]`` (``"__base__"`` for
    none). Check :func:`supports` first."""
    present = sorted(set(adapters) - {PEFT_BASE})
    masks = {}  # adapter -> [rows, 1, 1] of 1.0 on its rows, 0.0 elsewhere (broadcast over positions and features)
    layers = _lora_layers(model)
    device = next(iter(model.parameters())).device
    for name in present:
        masks[name] = torch.tensor([[[1.0 if row == name else 0.0]] for row in adapters], device=device)
    forward = functools.partial(_forward, masks)
    for layer in layers:
        layer.forward = functools.partial(forward, layer)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _forward(masks: dict, layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    result = layer.base_layer(x, *args, **kwargs)
    for name, rows in masks.items():
        if name not in layer.lora_A:
            continue
        lora_a = layer.lora_A[name]
        update = layer.lora_B[name](lora_a(layer.lora_dropout[name](x.to(lora_a.weight.dtype)))) * layer.scaling[name]
        result = result + (update * rows.to(update.dtype)).to(result.dtype)
    return result
