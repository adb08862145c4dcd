"""The Space's configuration: ``spaces.yaml``, the single source of truth, and README.md's front matter.

From spaces.yaml come README.md's front matter (rendered with huggingface_hub's
:class:`~huggingface_hub.SpaceCardData`), the Space's hardware and variables at deploy, the model the app
preloads in public mode, the models visitors may pick and the caps enforced on every request.

    >>> from playground.space.config import load_config
    >>> config = load_config()
    >>> policy = config.policy()
    >>> policy.check_model("/etc", None)
    Traceback (most recent call last):
    ...
    ValueError: model: local paths cannot be loaded on this app; pick one of: meta-llama/Llama-2-7b-chat-hf, default

An app reachable from other machines (``--share``, or a ``--host`` that is not loopback) gets
:meth:`SpaceConfig.shared_policy`: the same caps, and only the loaded model and ``default``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..decoder import check_budget_mb
from ..engine import MAX_NEW_TOKENS_CAP, MAX_VARIANTS
from ..models import DEFAULT_HUB_ID, DEFAULT_MODEL, DTYPE_CHOICES, QUANTIZE_CHOICES, looks_local
from .policy import Policy

ROOT = Path(__file__).resolve().parents[2]
SPACES_FILE = ROOT / "spaces.yaml"
README_FILE = ROOT / "README.md"
PUBLIC_ENV = "PLAYGROUND_PUBLIC"  # "1"/"0": public mode on/off (default: on inside a Space)
MODEL_ENV = "PLAYGROUND_MODEL"  # serve this model instead of spaces.yaml's (set by deploy; editable in the Space)
CARD_REQUIRED = ("title", "sdk", "sdk_version", "app_file", "python_version")
CARD_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")


@dataclass(frozen=True)
class ServedModel:
    """The model public mode preloads, and how."""

    reference: str
    quantize: str | None = None
    dtype: str = "auto"
    gpu_only: bool = False
    adapter: str | tuple[str, ...] | None = None  # one or several --adapter values (NAME=PATH or a path)
    checkpoint: tuple[str, ...] | None = None  # --checkpoint values: second full models beside it (NAME=PATH)

    def options(self, cuda: bool) -> dict:
        # fp16 on the GPU (a T4 has no bf16); on the CPU the model's usual float32.
        return {"quantize": self.quantize, "dtype": self.dtype if cuda else "auto", "device": "auto"}

    def describe(self) -> str:
        parts = [p for p in (self.quantize, f"{self.dtype} compute" if self.dtype != "auto" else None) if p]
        return self.reference + (f" ({', '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class SpaceConfig:
    card: dict
    hardware: str
    public: bool
    model: ServedModel
    allowed_models: tuple[str, ...]
    caps: dict
    path: Path = SPACES_FILE
    kv_budget_mb: float | None = None  # None: measured on the GPU after loading (see decoder.kv_budget_bytes)
    allow_model_swap: bool = False  # whether visitors may switch the model for everyone
    allowed_adapters: tuple[str, ...] = ()  # LoRA adapters (hub ids) visitors may add on the served model
    allowed_checkpoints: tuple[str, ...] = ()  # second full checkpoints (hub ids) visitors may add beside it

    def policy(self, served: ServedModel | None = None, *, cuda: bool = False) -> Policy:
        """The public-mode policy; ``served`` (default: spaces.yaml's model) is always allowed."""
        served = served or self.model
        allowed = tuple(dict.fromkeys([*self.allowed_models, served.reference]))
        # Models of the yaml that need a GPU cannot be picked on a machine without one.
        unavailable = {} if cuda else {m.reference: f"needs a GPU ({self.hardware}); this app is running on the CPU"
                                       for m in (self.model, served) if m.gpu_only}
        return Policy(
            public=True,
            allowed_models=allowed,
            unavailable=unavailable,
            load_options={m.reference: m.options(cuda) for m in (self.model, served)},
            default_load_options={"quantize": None, "dtype": self.model.dtype if cuda else "auto", "device": "auto"},
            model_swap=self.allow_model_swap,
            allowed_adapters=self.allowed_adapters,
            allowed_checkpoints=self.allowed_checkpoints,
            **self.caps,
        )

    def shared_policy(self, loaded: str, load_options: Mapping, *, allow_local_models: bool = False) -> Policy:
        """The policy of an app other machines can reach (``--share``, a ``--host`` that is not loopback).

        Always spaces.yaml's caps. By default visitors are strangers: only ``loaded`` (the reference the app was
        started with, unless it is a local path, which must stay private) and ``default``, loaded as the app
        loaded them; no paths, adapters or remote code. ``allow_local_models`` (``--allow-local-models``, which
        app.py accepts only with ``--auth``) lifts the model limits for a team that logs in.

            >>> policy = load_config().shared_policy("/home/ann/finetune", {"dtype": "auto"})
            >>> policy.allowed_models, policy.reveal_paths
            (('default',), False)
        """
        if allow_local_models:
            return Policy(**self.caps)
        options = {k: v for k, v in load_options.items() if k != "trust_remote_code"}
        local = looks_local(loaded, look_on_disk=True)  # the operator's own reference: looking is fine
        allowed = (DEFAULT_MODEL,) if loaded == DEFAULT_MODEL or local else (loaded, DEFAULT_MODEL)
        return Policy(public=True, allowed_models=allowed, load_options={m: options for m in allowed},
                      default_load_options=options, **self.caps)

    def card_data(self):
        """README.md's front matter as huggingface_hub card data; hub ids of the allowed models become ``models``."""
        from huggingface_hub import SpaceCardData

        models = [DEFAULT_HUB_ID if m == DEFAULT_MODEL else m for m in self.allowed_models]
        return SpaceCardData(**self.card, models=list(dict.fromkeys(models)))

    def variables(self) -> dict[str, str]:
        """The Space's variables, set at deploy (the app reads them at start)."""
        return {PUBLIC_ENV: "1" if self.public else "0", MODEL_ENV: self.model.reference}


CAP_KINDS = {
    "max_new_tokens": (int, 1, MAX_NEW_TOKENS_CAP),
    "max_prompt_tokens": (int, 1, 1_000_000),
    "max_columns": (int, 1, MAX_VARIANTS),
    "max_stop_strings": (int, 0, 64),
    "max_stop_string_chars": (int, 1, 1000),
    "queue_size": (int, 1, 10_000),
    "time_limit_seconds": (float, 1, 86_400),
    "max_upload_mb": (float, 0.01, 1000),
    "max_sessions": (int, 1, 100_000),
}
OPTIONAL_CAPS = {"finetune_max_steps": (int, 1, 100_000)}  # absent: that feature is off in public mode


def load_config(path: str | Path = SPACES_FILE) -> SpaceConfig:
    """Read and check spaces.yaml; ValueError names the key that is wrong."""
    import yaml
    from huggingface_hub import SpaceHardware

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read it: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")

    def need(mapping, key, kind, where=""):
        value = mapping.get(key) if isinstance(mapping, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise ValueError(f"{path}: {where}{key} must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    card = dict(need(data, "card", dict))
    for key in CARD_REQUIRED:
        need(card, key, str, "card.")
    if card["sdk"] != "gradio":
        raise ValueError(f"{path}: card.sdk must be gradio (the app is a Gradio app), got {card['sdk']!r}")
    if "models" in card:
        raise ValueError(f"{path}: card.models is written from allowed_models; remove it from card")
    # The Hub rejects a README whose short_description is longer than 60 characters or whose colours it lacks.
    if len(str(card.get("short_description", ""))) > 60:
        raise ValueError(f"{path}: card.short_description must be at most 60 characters")
    for key in ("colorFrom", "colorTo"):
        if key in card and card[key] not in CARD_COLORS:
            raise ValueError(f"{path}: card.{key} must be one of {', '.join(CARD_COLORS)}, got {card[key]!r}")
    hardware = need(data, "hardware", str)
    choices = [h.value for h in SpaceHardware]
    for key, value in (("hardware", hardware), ("card.suggested_hardware", card.get("suggested_hardware", hardware))):
        if value not in choices:
            raise ValueError(f"{path}: {key} must be one of {', '.join(choices)}, got {value!r}")

    model = need(data, "model", dict)
    served = ServedModel(reference=need(model, "reference", str, "model."), quantize=model.get("quantize"),
                         dtype=model.get("dtype", "auto"), gpu_only=bool(model.get("gpu_only", False)))
    if served.quantize not in (None, *QUANTIZE_CHOICES):
        raise ValueError(f"{path}: model.quantize must be one of {', '.join(QUANTIZE_CHOICES)} or absent, got {served.quantize!r}")
    if served.dtype not in DTYPE_CHOICES:
        raise ValueError(f"{path}: model.dtype must be one of {', '.join(DTYPE_CHOICES)}, got {served.dtype!r}")

    allowed = need(data, "allowed_models", list)
    if not allowed or not all(isinstance(m, str) and m.strip() for m in allowed):
        raise ValueError(f"{path}: allowed_models must be a non-empty list of model ids")
    if DEFAULT_MODEL not in allowed:
        raise ValueError(f"{path}: allowed_models must include {DEFAULT_MODEL!r} (the fallback when the model cannot load)")
    for reference in [*allowed, served.reference]:
        if reference != DEFAULT_MODEL and looks_local(reference, look_on_disk=True):
            raise ValueError(f"{path}: {reference!r} is a local path; a Space serves hub ids and 'default' only")

    def hub_ids(key: str, kind: str) -> tuple[str, ...]:
        """An optional allowlist of hub ids (``allowed_adapters``, ``allowed_checkpoints``)."""
        given = data.get(key) or []
        if not isinstance(given, list) or not all(isinstance(a, str) and a.strip() for a in given):
            raise ValueError(f"{path}: {key} must be a list of {kind} hub ids")
        for reference in given:
            if looks_local(reference, look_on_disk=True):
                raise ValueError(f"{path}: {kind} {reference!r} is a local path; a Space serves hub ids only")
        return tuple(dict.fromkeys(a.strip() for a in given))

    adapters, checkpoints = hub_ids("allowed_adapters", "adapter"), hub_ids("allowed_checkpoints", "checkpoint")

    raw_caps = need(data, "caps", dict)
    caps = {}
    for key, (kind, low, high) in CAP_KINDS.items():
        value = raw_caps.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (kind is int and value != int(value)) or not low <= value <= high:
            raise ValueError(f"{path}: caps.{key} must be a {'whole ' if kind is int else ''}number from {low} to {high}, got {value!r}")
        caps[key] = kind(value)
    for key, (kind, low, high) in OPTIONAL_CAPS.items():
        value = raw_caps.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{path}: caps.{key} must be a whole number from {low} to {high}, got {value!r}")
        caps[key] = value
    unknown = set(raw_caps) - set(CAP_KINDS) - set(OPTIONAL_CAPS)
    if unknown:
        raise ValueError(f"{path}: unknown caps {', '.join(sorted(unknown))}; known: {', '.join(CAP_KINDS)}")
    kv_budget_mb = data.get("kv_budget_mb")
    if kv_budget_mb is not None:
        kv_budget_mb = check_budget_mb(kv_budget_mb, f"{path}: kv_budget_mb")
    swap = data.get("allow_model_swap", False)
    if not isinstance(swap, bool):
        raise ValueError(f"{path}: allow_model_swap must be true or false, got {swap!r}")
    preload = card.get("preload_from_hub", [])
    if served.reference != DEFAULT_MODEL and not any(str(line).split()[0] == served.reference for line in preload):
        raise ValueError(f"{path}: card.preload_from_hub must list {served.reference} (the Space downloads it at "
                         "build, not at every start)")
    return SpaceConfig(card=card, hardware=hardware, public=bool(need(data, "public", bool)), model=served,
                       allowed_models=tuple(dict.fromkeys(allowed)), caps=caps, path=path, kv_budget_mb=kv_budget_mb,
                       allow_model_swap=swap, allowed_adapters=adapters, allowed_checkpoints=checkpoints)


# ---------------------------------------------------------------------------------------------------------------
# README front matter


def front_matter(config: SpaceConfig) -> str:
    """The ``---`` block README.md must start with."""
    return f"---\n{config.card_data().to_yaml()}\n---\n"


def readme_with_front_matter(text: str, config: SpaceConfig) -> str:
    """README text with its front matter replaced (or added) by the one rendered from spaces.yaml."""
    from huggingface_hub import SpaceCard

    body = SpaceCard(text).text if text.startswith("---") else text
    return front_matter(config) + "\n" + body.lstrip("\n")


def readme_drift(config: SpaceConfig, readme: str | Path = README_FILE) -> list[str]:
    """How README.md's front matter differs from spaces.yaml (empty when they agree)."""
    from huggingface_hub import SpaceCard

    text = Path(readme).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return ["README.md does not start with a front matter block (---)"]
    found = SpaceCard(text).data.to_dict()
    wanted = config.card_data().to_dict()
    problems = [f"{key}: README has {found.get(key)!r}, spaces.yaml gives {wanted.get(key)!r}"
                for key in sorted(set(found) | set(wanted)) if found.get(key) != wanted.get(key)]
    return problems
