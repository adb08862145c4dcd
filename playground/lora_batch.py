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

# model -> its adapters' names, its LoRA layers, and per row list what mixed_rows installs on them: found once,
# again after an adapter is added or removed. A decode step enters mixed_rows once per forward pass, so building
# each layer's forward there (about 200 layers on the embedded model) would cost every step.
_layers_of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLANS_KEPT = 32  # row lists whose layer forwards are kept per model (a few per batch of runs in flight)


def _entry(model: torch.nn.Module) -> dict:
    from peft.tuners.lora import LoraLayer

    names = tuple(model.peft_config)
    entry = _layers_of.get(model)
    if entry is None or entry["names"] != names:
        entry = _layers_of[model] = {"names": names, "plans": {},
                                     "layers": [module for module in model.modules() if isinstance(module, LoraLayer)]}
    return entry


def supports(model: torch.nn.Module, adapters: list[str]) -> bool:
    """Whether every LoRA layer the ``adapters`` touch is a plain LoRA linear layer this module can mix."""
    names = set(adapters) - {PEFT_BASE}
    for layer in _entry(model)["layers"]:
        if names & set(layer.lora_embedding_A) or names & set(getattr(layer, "lora_variant", {})):
            return False  # LoRA on an embedding, or a variant (DoRA, aLoRA...) with a forward of its own
        if names & set(layer.lora_A) and (layer.merged or not hasattr(layer, "base_layer")):
            return False
    return True


@contextlib.contextmanager
def mixed_rows(model: torch.nn.Module, adapters: list[str]):
    """While entered, a forward pass of ``model`` gives row ``i`` the adapter ``adapters[i]`` (``"__base__"`` for
    none). Check :func:`supports` first."""
    entry = _entry(model)
    key = tuple(adapters)
    forwards = entry["plans"].get(key)
    if forwards is None:
        if len(entry["plans"]) >= _PLANS_KEPT:
            entry["plans"].clear()
        forwards = entry["plans"][key] = _layer_forwards(entry["layers"], adapters)
    for layer, forward in forwards:
        layer.forward = forward
    try:
        yield
    finally:
        for layer, _ in forwards:
            layer.__dict__.pop("forward", None)


def _layer_forwards(layers: list, adapters: list[str]) -> list:
    """Each LoRA layer's forward for these rows: per adapter it holds, its two weights and a factor per row (the
    adapter's scaling on its own rows, 0 on the others; shared by the layers of one scaling)."""
    present = sorted(set(adapters) - {PEFT_BASE})
    forwards, factors = [], {}
    for layer in layers:
        updates = []
        for name in present:
            if name not in layer.lora_A:
                continue
            lora_a, lora_b, dropout = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
            key = (name, layer.scaling[name], lora_b.weight.dtype, lora_b.weight.device)
            if key not in factors:
                rows = torch.tensor([[[1.0 if row == name else 0.0]] for row in adapters], device=lora_b.weight.device)
                factors[key] = (rows * layer.scaling[name]).to(lora_b.weight.dtype)
            updates.append((lora_a.weight, lora_a.bias, lora_b.weight, lora_b.bias,
                            None if isinstance(dropout, torch.nn.Identity) else dropout, factors[key]))
        forwards.append((layer, functools.partial(_forward, updates, layer)))
    return forwards


def _forward(updates: list, layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    # The weights are read directly (no module call per LoRA matrix): at rank 8 the calls cost more than the
    # products. On an adapter's rows the update is PEFT's ``lora_B(lora_A(dropout(x))) * scaling``.
    result = layer.base_layer(x, *args, **kwargs)
    linear = torch.nn.functional.linear
    for weight_a, bias_a, weight_b, bias_b, dropout, factor in updates:
        inputs = x if x.dtype == weight_a.dtype else x.to(weight_a.dtype)
        update = linear(linear(inputs if dropout is None else dropout(inputs), weight_a, bias_a), weight_b, bias_b)
        update = update.mul_(factor)  # our own intermediate: no new tensor for it
        result = result + (update if update.dtype == result.dtype else update.to(result.dtype))
    return result
