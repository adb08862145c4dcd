"""Public mode at start: whether the app is public, and the model it preloads (spaces.yaml's, or
$PLAYGROUND_MODEL's), falling back to the default model with a banner that says why."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..models import DEFAULT_MODEL, LoadedModel, ModelLoadError, load_model
from .config import MODEL_ENV, PUBLIC_ENV, ServedModel, SpaceConfig
from .policy import Policy

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def _log(message: str) -> None:
    print(f"[playground] {message}", flush=True)


def is_public(flag: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    """--public, else $PLAYGROUND_PUBLIC (1/0), else on inside a Space ($SPACE_ID set)."""
    environ = os.environ if environ is None else environ
    if flag:
        return True
    value = environ.get(PUBLIC_ENV, "").strip().lower()
    if value:
        return value in ("1", "true", "yes", "on")
    return bool(environ.get("SPACE_ID"))


@dataclass
class Served:
    """What a public app serves: the loaded model, how to describe it, and the policy for visitors."""

    bundle: LoadedModel
    reference: str
    options: dict
    policy: Policy
    banner: str | None = None


def served_model_from(config: SpaceConfig, environ: Mapping[str, str] | None = None) -> ServedModel:
    """spaces.yaml's model, unless $PLAYGROUND_MODEL names another (loaded without quantization)."""
    environ = os.environ if environ is None else environ
    override = environ.get(MODEL_ENV, "").strip()
    if not override or override == config.model.reference:
        return config.model
    return ServedModel(reference=override, dtype=config.model.dtype)


def serve_public(config: SpaceConfig, served: ServedModel | None = None, *, cuda: bool | None = None,
                 log: Callable[[str], None] = _log, loader: Callable[..., LoadedModel] = load_model) -> Served:
    """Preload the configured model; without a GPU (for a GPU-only model) or when it cannot be loaded, load the
    default model instead and explain why in ``banner`` (shown at the top of the page)."""
    import torch

    served = served or served_model_from(config)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    policy = config.policy(served, cuda=cuda)
    caps = ", ".join(f"{k} {v}" for k, v in policy.describe().items() if k not in ("public", "allowed_models"))
    log(f"public mode: models {', '.join(policy.allowed_models)}; {caps}")
    if cuda:
        props = torch.cuda.get_device_properties(0)
        log(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        log("no GPU: running on the CPU")
    reason = None
    if served.gpu_only and not cuda:
        reason = (f"No GPU here, so this page serves the small default model ({DEFAULT_MODEL_NAME}) on the CPU "
                  f"instead of {served.reference}, which needs a GPU ({config.hardware}).")
        log(f"not loading {served.reference}: it needs a GPU; falling back to the default model")
    else:
        options = policy.options_for(served.reference)
        log(f"loading {served.describe()} on {'the GPU' if cuda else 'the CPU'} "
            "(the first start downloads its weights: progress bars follow)")
        try:
            bundle = loader(served.reference, adapter=served.adapter, checkpoint=served.checkpoint, **options)
        except ModelLoadError as error:
            reason = (f"{served.reference} could not be loaded, so this page serves the default model "
                      f"({DEFAULT_MODEL_NAME}) instead. Reason: {error}")
            log(f"could not load {served.reference}: {error}; falling back to the default model")
        else:
            log(f"loaded {bundle.info.name} in {bundle.info.load_seconds:.1f} s on {bundle.info.device}")
            banner = None if cuda else "Running on the CPU (no GPU on this machine): answers come slowly."
            return Served(bundle, served.reference, options, policy, banner)
    options = policy.options_for(DEFAULT_MODEL)
    log(f"loading the default model {DEFAULT_MODEL_NAME}")
    bundle = loader(DEFAULT_MODEL, **options)  # a ModelLoadError here ends the app: there is nothing to serve
    log(f"loaded {bundle.info.name} in {bundle.info.load_seconds:.1f} s on {bundle.info.device}")
    return Served(bundle, DEFAULT_MODEL, options, policy, reason)
