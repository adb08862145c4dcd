"""What a visitor may ask the server for: :class:`Policy`, checked server-side whatever a client sends, and the
checks every request field shares (a whole number in range, a client's value quoted short, valid Unicode).

Public mode (inside a Space, or ``python app.py --public``) gets the policy spaces.yaml gives
(:meth:`~playground.space.config.SpaceConfig.policy`). Local use gets :meth:`Policy.local`, which only guards
against inputs that would hang the server (a 100 000-character stop string builds tables for minutes). An app
reachable from other machines (:func:`exposed_by`) gets :meth:`~playground.space.config.SpaceConfig.shared_policy`.

No gradio here: ``playground.ui`` wires the policy into the page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..engine import MAX_NEW_TOKENS_CAP, MAX_VARIANTS
from ..models import looks_local
from ..request import check_whole, parse_bool, shown

# A Llama/SmolLM token is rarely longer than 8 characters of ordinary text, so a prompt this many characters
# per allowed token is refused before it is tokenized (a 200 000-character prompt costs time to tokenize).
CHARS_PER_TOKEN_BOUND = 8
# The doctor reads its whole training sample; a few hundred examples are plenty and 2.5 MB already takes ~12 s.
LOCAL_MAX_UPLOAD_MB = 1.0
PUBLIC_EVALUATION_PROMPTS = 100  # the built-in set has 30


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
    allowed_checkpoints: tuple[str, ...] = ()  # public mode: the second full checkpoints (hub ids) visitors may add

    @classmethod
    def local(cls) -> Policy:
        return cls()

    @property
    def allow_trust_remote_code(self) -> bool:
        return not self.public

    @property
    def allow_adapters(self) -> bool:
        return not self.public or bool(self.allowed_adapters)

    @property
    def allow_checkpoints(self) -> bool:
        return not self.public or bool(self.allowed_checkpoints)

    def check_adapter(self, reference: str) -> None:
        """Public mode adds only the adapters of spaces.yaml's ``allowed_adapters``."""
        _check_allowed(self.public, "adapter", reference, self.allowed_adapters)

    def check_checkpoint(self, reference: str) -> None:
        """Public mode adds only the second checkpoints of spaces.yaml's ``allowed_checkpoints``."""
        _check_allowed(self.public, "checkpoint", reference, self.allowed_checkpoints)

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
            "allowed_checkpoints": list(self.allowed_checkpoints),
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
            from ..models import adapter_spec

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
            if looks_local(reference):
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
        return check_whole(steps, "steps", 1, self.finetune_max_steps or 100_000)

    def check_evaluation_prompts(self, count: int) -> None:
        """Public mode: an evaluation holds at most PUBLIC_EVALUATION_PROMPTS prompts (each is prefilled once per
        column and seed, whatever its new tokens: the token budget alone let 1000 long prompts run for minutes)."""
        if self.public and count > PUBLIC_EVALUATION_PROMPTS:
            raise ValueError(f"prompts: this app evaluates at most {PUBLIC_EVALUATION_PROMPTS} prompts at once, "
                             f"got {count}; split them, or run the app yourself for more")

    def check_prompt_tokens(self, tokens: int) -> None:
        if self.max_prompt_tokens is not None and tokens > self.max_prompt_tokens:
            raise ValueError(f"prompt is {tokens} tokens with the chat template and system prompt; this app "
                             f"accepts at most {self.max_prompt_tokens}")


def _check_allowed(public: bool, field: str, reference: str, allowed: tuple[str, ...]) -> None:
    """In public mode, refuse a ``field`` (adapter, checkpoint) that is not on its spaces.yaml allowlist."""
    if public and reference not in allowed:
        raise ValueError(f"{field}: {shown(reference)} is not available on this app; pick one of: "
                         f"{', '.join(allowed) or 'none'}")


def check_encodable(text: str, name: str) -> None:
    """Refuse text that is not valid Unicode: a lone surrogate (half of an emoji's UTF-16 pair, e.g. "\\ud83d"
    sent through JSON) cannot be tokenized, and the tokenizer's own message names none of our fields."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{name} contains an invalid character at position {error.start} (U+{ord(text[error.start]):04X}, "
                         "half of a UTF-16 surrogate pair, e.g. a broken emoji): remove it or send the whole "
                         "character") from None
