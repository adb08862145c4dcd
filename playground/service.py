"""The app's state and requests, without any page: the loaded model, what visitors may ask for, and turning a
request into a validated :class:`~playground.engine.Comparison`. The page (``playground.ui``) and its API only
wire these to components."""

from __future__ import annotations

import collections
import copy
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from .decoder import decode_loop
from .engine import Comparison, Settings, Variant
from .interventions import unescape
from .models import LoadedModel, load_model
from .space import Policy, require_flag, shown
from .trace import Trace

TRACE_MAX_AGE = 3600  # seconds a downloadable trace is kept
TRACES_KEPT = 32  # finished traces /trace can return
RUNS_AT_ONCE = 16  # runs (page or API) decoding at once; their rows share one batch, more wait in the queue
log = logging.getLogger("playground")
# An absolute or home path in a message ("/root/.cache/x", "~/models"); not a hub id ("owner/name"), a URL
# ("https://...") or a fraction, where the slash follows a letter, digit, colon or slash.
HOST_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`),;]+")


def hide_paths(text: str) -> str:
    """``text`` with every host path replaced by "<path>" (for messages to strangers)."""
    return HOST_PATH.sub("<path>", text)


class Playground:
    """The app's state: the loaded model (one at a time), how it was loaded, and what visitors may ask for.

    ``policy`` (default: :meth:`Policy.local`) is checked on every request, whichever page or API sent it;
    ``banner`` is a notice shown at the top of the page (e.g. the configured model could not be loaded).
    """

    def __init__(self, bundle: LoadedModel, reference: str = "default", load_options: dict | None = None, *,
                 policy: Policy | None = None, banner: str | None = None):
        self.bundle = bundle
        self.reference = reference
        self.load_options = load_options or {}  # quantize / dtype / device / trust_remote_code for later loads
        self.policy = policy or Policy.local()
        self.banner = banner
        self._lock = threading.Lock()  # a load never swaps the model under a running comparison
        self._active = 0  # comparisons being decoded right now (a cancelled one leaves within one step)
        self._active_lock = threading.Lock()
        self._traces: collections.OrderedDict[str, tuple[float, Trace]] = collections.OrderedDict()

    # -- model -------------------------------------------------------------------------------------

    def model_label(self) -> str:
        """The Model panel's title: what is loaded, at a glance."""
        i = self.bundle.info
        return f"Model: {i.name} · {i.num_parameters / 1e6:.0f} M parameters · {i.dtype} on {i.device}"

    @property
    def shown_reference(self) -> str:
        """The loaded model's reference as visitors may see it: a stranger never sees a host path (they get the
        model's name, e.g. for the copied fix's ``from_pretrained``)."""
        if self.policy.reveal_paths or self.policy.allowed_models is None or self.reference in self.policy.allowed_models:
            return self.reference
        return self.bundle.info.name

    def model_markdown(self) -> str:
        i = self.bundle.info
        eos = ", ".join(f"`{t}` {self.bundle.tokenizer.convert_ids_to_tokens(t)!r}" for t in i.eos_token_ids)
        source = i.source if self.policy.reveal_paths else i.origin
        return (f"**{i.name}** · {i.num_parameters / 1e6:.1f} M parameters · {i.dtype} on {i.device} · "
                f"context {i.context_length} · EOS ids {eos} · pad id `{i.pad_token_id}` · "
                f"chat template {'yes' if i.has_chat_template else 'no'}"
                + "".join(f" · adapter **{name}**" + (f" `{path}`" if self.policy.reveal_paths else "")
                          for name, path in i.adapters.items())
                + (" — a column picks `@base` or `@NAME`" if i.adapters else "")
                + f"  \n<small>from {source}, loaded in {i.load_seconds:.1f} s</small>")

    def load(self, reference: str, adapter: str | None = None, trust_remote_code: bool = False) -> dict:
        """Load another model; on failure the current one stays. Returns the new model's info.

        Raises ValueError (a refused request) or ModelLoadError (the load failed), each naming the field."""
        trust_remote_code = require_flag(trust_remote_code, "trust_remote_code")
        reference = self.policy.check_model(reference, adapter, trust_remote_code)
        options = self.policy.options_for(reference, self.load_options, trust_remote_code)
        with self._lock:  # no comparison is built meanwhile; the rows in flight finish on the current model first
            decode_loop(self.bundle).drain()
            bundle = load_model(reference, adapter=(adapter or "").strip() or None, **options)
            self.bundle, self.reference = bundle, reference
        return bundle.info.to_dict()

    def column_models(self) -> list[str]:
        """The models a column may pick: ``base`` and every loaded adapter's name."""
        return self.bundle.column_models()

    def default_columns(self) -> list[list[str]]:
        """The API's columns when a request names none: baseline and eos_reward, after the base model's baseline
        when an adapter is loaded (base beside the fine-tune)."""
        return ([["@base"]] if self.bundle.adapters else []) + [[], ["eos_reward"]]

    def add_adapter(self, spec: str) -> dict:
        """Load a LoRA adapter (``NAME=PATH`` or a path, named after its folder) on the loaded base, without
        reloading it; rows in flight finish first. Public mode: only adapters on spaces.yaml's allowlist.
        Returns the model's info; ValueError (refused) or ModelLoadError (failed), each naming the field."""
        from .models import adapter_spec

        name, reference = adapter_spec(spec)
        self.policy.check_adapter(reference)
        with self._lock:
            decode_loop(self.bundle).drain()
            self.bundle.add_adapter(name, reference)
        return self.bundle.info.to_dict()

    def remove_adapter(self, name: str) -> dict:
        """Unload the adapter ``name`` (the base and the other adapters stay); rows in flight finish first."""
        with self._lock:
            decode_loop(self.bundle).drain()
            self.bundle.remove_adapter(name)
        return self.bundle.info.to_dict()

    def info(self) -> dict:
        """What the server is serving, its limits, and how many comparisons (and their rows) are decoding now."""
        return {"model": self.bundle.info.name, "reference": self.shown_reference, "device": self.bundle.info.device,
                "models": self.column_models(), "default_model": self.bundle.default_model,
                "banner": self.banner, "limits": self.policy.describe(), "active_generations": self._active,
                "rows_in_flight": decode_loop(self.bundle).rows_in_flight}

    def user_message(self, error: BaseException) -> str:
        """What a visitor is told about a refused request: the error's sentence, without host paths for strangers."""
        text = str(error) or type(error).__name__
        return text if self.policy.reveal_paths else hide_paths(text)

    def refused(self, endpoint: str, error: BaseException) -> str:
        """Log a handled input error as one line (no traceback: nothing is wrong with the server) and return the
        message for the visitor."""
        message = self.user_message(error)
        cause = f" (cause: {type(error.__cause__).__name__})" if error.__cause__ is not None else ""
        log.warning("%s refused: %s%s", endpoint, message.splitlines()[0][:300] if message else "", cause)
        return message

    # -- the EOS doctor ----------------------------------------------------------------------------

    def read_sample(self, path) -> list[dict] | None:
        """The doctor's training sample from an upload (None: no sample). Its size is checked before it is parsed;
        messages name the file, never where the server keeps it."""
        from .doctor import load_sample

        if path is None or path == "":
            return None
        if not isinstance(path, (str, Path)):
            raise ValueError(f"training sample must be an uploaded JSONL file, got {type(path).__name__}")
        path = Path(path)
        limit = self.policy.max_upload_mb
        try:
            size = path.stat().st_size
        except OSError:
            raise ValueError(f"training sample {path.name!r} could not be read: upload it again") from None
        if size > limit * 1024 * 1024:
            raise ValueError(f"training sample is {size / 1024 / 1024:.1f} MB; this app reads at most {limit:g} MB "
                             "(a few hundred examples are plenty: e.g. head -n 300 train.jsonl > sample.jsonl)")
        try:
            return load_sample(path)
        except UnicodeDecodeError:
            raise ValueError(f"training sample {path.name}: not UTF-8 text (upload a JSONL file)") from None
        except (OSError, ValueError) as error:
            raise ValueError("training sample " + str(error).replace(str(path), path.name)) from None

    # -- comparisons -------------------------------------------------------------------------------

    def comparison(self, prompt: str, columns: list[list[str]], *, max_new_tokens: int, temperature: float,
                   top_p: float, top_k: int, seed: int, reward_start_ratio: float, strength: float,
                   stop_strings: str = "\\n\\n", min_new_tokens: int = 32, use_chat_template: bool = True,
                   system_prompt: str = "", repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                   min_p: float = 0.0, typical_p: float = 1.0, branches: list | None = None) -> Comparison:
        """Validate the inputs and build a comparison (ValueError with the field's name on bad input).

        ``branches``: ``[column, step, token_id]`` triples (column from 1 in the order of ``columns``, step from
        0) decoded in one second batch once the columns have finished; :meth:`stream` runs them."""
        use_chat_template = require_flag(use_chat_template, "use_chat_template")
        strings = split_stop_strings(stop_strings)
        self.policy.check_request(prompt, system_prompt, columns, strings)
        if branches is not None and (isinstance(branches, str) or not isinstance(branches, list | tuple)):
            raise ValueError(f"branches must be a list of [column, step, token_id], got {branches!r}")
        variants = column_variants(columns, reward_start_ratio=reward_start_ratio, strength=strength,
                                   stop_strings=strings, min_new_tokens=min_new_tokens)
        settings = Settings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                            min_p=min_p, typical_p=typical_p, repetition_penalty=repetition_penalty,
                            no_repeat_ngram_size=no_repeat_ngram_size, seed=seed, use_chat_template=use_chat_template,
                            system_prompt=system_prompt or None, timeout_seconds=self.policy.time_limit_seconds)
        with self._lock:
            comparison = Comparison(self.bundle, prompt, variants, settings, max_new_tokens_cap=self.policy.max_new_tokens,
                                    branches=branches or ())
        self.policy.check_prompt_tokens(comparison.padded_length)
        return comparison

    def branch(self, trace: Trace, column: int, step: int, token_id: int) -> Comparison:
        """A comparison decoding one new column: ``trace``'s column number ``column`` (from 1) continued from
        ``step`` with ``token_id`` (a token of that step's top-k, or EOS), with the trace's settings and
        interventions. :meth:`stream` yields ``trace`` with the branch appended as its last column."""
        settings = Settings(**{**trace.settings, "timeout_seconds": self.policy.time_limit_seconds})
        with self._lock:
            if trace.model != self.bundle.info.name:
                raise ValueError(f"this trace was decoded by {trace.model}, and {self.bundle.info.name} is loaded now: "
                                 "run the comparison again to branch it")
            return Comparison.of_branches(self.bundle, trace, [(column, step, token_id)], settings,
                                          max_new_tokens_cap=self.policy.max_new_tokens)

    def page_columns(self, n_columns, pickers: Sequence) -> list[list[str]]:
        """The page's columns: the first ``n_columns`` pickers, each a list of intervention names."""
        if isinstance(n_columns, str) and n_columns.strip().isdigit():
            n_columns = int(n_columns)
        if isinstance(n_columns, bool) or not isinstance(n_columns, (int, float)) or n_columns != int(n_columns) \
                or not 1 <= n_columns <= len(pickers):
            raise ValueError(f"Columns must be a whole number from 1 to {len(pickers)}, got {shown(n_columns)}")
        columns = []
        for index, picked in enumerate(pickers[: int(n_columns)]):
            picked = [] if picked is None else [picked] if isinstance(picked, str) else picked
            if not isinstance(picked, (list, tuple)) or not all(isinstance(name, str) for name in picked):
                raise ValueError(f"Column {index + 1} interventions must be a list of intervention names, "
                                 f"got {shown(picked)}")
            columns.append(list(picked))
        return columns

    def stream(self, run) -> Iterator:
        """A comparison's traces (see :meth:`_stream_comparison`) or an evaluation's progress (rows done),
        counted as active while it decodes; closing this closes the decode."""
        with self._active_lock:
            self._active += 1
        try:
            yield from self._stream_comparison(run) if isinstance(run, Comparison) else run.run()
        finally:
            with self._active_lock:
                self._active -= 1

    def _stream_comparison(self, comparison: Comparison) -> Iterator[Trace]:
        """``comparison.run()``'s traces. A branch comparison yields the trace it branches from with its columns
        appended; a comparison with ``branches`` then decodes them in one second batch (within what is left of
        the time limit) and yields the whole trace, branches appended."""
        started = time.perf_counter()
        trace = yield from self._decode(comparison)
        if comparison.branches and not comparison.cancelled:
            settings = copy.copy(comparison.settings)
            if settings.timeout_seconds:
                settings.timeout_seconds = max(settings.timeout_seconds - (time.perf_counter() - started), 1e-3)
            with self._lock:
                branches = Comparison.of_branches(self.bundle, trace, comparison.branches, settings,
                                                  max_new_tokens_cap=self.policy.max_new_tokens)
            yield from self._decode(branches)

    @staticmethod
    def _decode(comparison: Comparison) -> Iterator[Trace]:
        """Yield the comparison's trace after every step, appended to the trace it branches from if any;
        return the last one."""
        trace = comparison.trace
        for trace in comparison.run():
            if comparison.appends_to is not None:
                trace = comparison.appends_to.with_branches(trace)
            yield trace
        return trace

    def keep_trace(self, trace: Trace) -> str:
        """Keep a finished trace for :meth:`trace` (the latest TRACES_KEPT, for TRACE_MAX_AGE); returns its id."""
        trace_id = uuid.uuid4().hex
        with self._active_lock:
            self._traces[trace_id] = (time.time(), trace)
            cutoff = time.time() - TRACE_MAX_AGE
            while self._traces and (len(self._traces) > TRACES_KEPT or next(iter(self._traces.values()))[0] < cutoff):
                self._traces.popitem(last=False)
        return trace_id

    def trace(self, trace_id: str) -> Trace:
        """A trace kept by :meth:`keep_trace`; ValueError naming trace_id when it is unknown or too old."""
        with self._active_lock:
            kept = self._traces.get(trace_id) if isinstance(trace_id, str) else None
        if kept is None or kept[0] < time.time() - TRACE_MAX_AGE:
            raise ValueError(f"trace_id: no trace {str(trace_id)[:64]!r} here (the last {TRACES_KEPT} traces are "
                             f"kept for {TRACE_MAX_AGE // 60} minutes)")
        return kept[1]


    # -- evaluations -------------------------------------------------------------------------------

    def evaluation(self, prompts, columns: list[list[str]], *, sweep: str = "", seeds: int = 1, max_new_tokens: int,
                   temperature: float, top_p: float, top_k: int, seed: int, reward_start_ratio: float, strength: float,
                   stop_strings: str = "\\n\\n", min_new_tokens: int = 32, use_chat_template: bool = True,
                   system_prompt: str = ""):
        """Validate an evaluation request and build it (ValueError naming the field on bad input).

        ``prompts``: "builtin", a file (:class:`~pathlib.Path`) or a list of strings / ``{"prompt"}`` /
        ``{"messages"}`` objects. Columns and parameters follow :meth:`comparison`; with a ``sweep``
        ("reward_start_ratio=0.3,0.5 strength=4,8") the columns are the baseline and one per cell, built on the
        first column that uses eos_reward. The policy caps file size, prompt length, new tokens and, in public
        mode, prompts × columns × seeds × new tokens."""
        from . import evaluate

        policy = self.policy
        max_chars = policy.max_prompt_chars or evaluate.MAX_PROMPT_CHARS
        if isinstance(prompts, Path):
            max_bytes = int(policy.max_upload_mb * 1024 * 1024) if policy.max_upload_mb else evaluate.MAX_FILE_BYTES
            prompt_set = evaluate.read_prompts(prompts, max_bytes=max_bytes, max_chars=max_chars)
        elif prompts == "builtin":
            prompt_set = evaluate.builtin_prompts()
        else:
            prompt_set = evaluate.prompts_from_items(prompts, max_chars=max_chars)
        strings = split_stop_strings(stop_strings)
        policy.check_request("", system_prompt, columns, strings)
        variants = column_variants(columns, reward_start_ratio=reward_start_ratio, strength=strength,
                                   stop_strings=strings, min_new_tokens=min_new_tokens)
        grid = None
        if isinstance(sweep, str):
            sweep = sweep.split()
        if sweep:
            grid = evaluate.Sweep.parse(sweep)
            base = next((v for v in variants if any(i["name"] == "eos_reward" for i in v.interventions)),
                        Variant("eos_reward", [{"name": "eos_reward", "params": {}}]))
            variants = grid.variants(base)
        if policy.public:
            evaluate.check_budget(len(prompt_set.prompts), len(variants), seeds, max_new_tokens)
        settings = Settings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                            seed=seed, use_chat_template=use_chat_template, system_prompt=system_prompt or None,
                            timeout_seconds=policy.time_limit_seconds)
        with self._lock:
            bundle = self.bundle
        return evaluate.Evaluation(bundle, prompt_set, variants, settings, seeds=seeds, sweep=grid,
                                   model_reference=self.reference, max_new_tokens_cap=policy.max_new_tokens,
                                   prompt_token_check=policy.check_prompt_tokens)



def split_stop_strings(text: str | None) -> list[str]:
    """The stop-strings box: comma-separated, \\n typed for a newline."""
    if text is not None and not isinstance(text, str):
        raise ValueError("stop_strings must be text: comma-separated strings (\\n = newline)")
    return [unescape(s) for s in (text or "").split(",") if s.strip(" ")]


def split_column_model(column: Sequence[str]) -> tuple[list[str], str | None]:
    """A column's intervention names and its model, ``base`` or a loaded adapter: ``@NAME`` at the end of the
    column's last name (``["baseline@base"]``, ``["eos_reward", "stop_strings@my-run"]``) or an item of its own
    (``"@my-run"``, as the page's picker adds it); None when it names no model.

    >>> split_column_model(["eos_reward@my-run"])
    (['eos_reward'], 'my-run')
    >>> split_column_model(["baseline@base"]), split_column_model(["@base", "ban_eos"])
    (([], 'base'), (['ban_eos'], 'base'))
    """
    names, models = [], []
    for name in column:
        body, at, model = name.rpartition("@")
        if not at:
            if name != "baseline":
                names.append(name)
            continue
        if not model.strip():
            raise ValueError(f"a column's model goes after '@' (e.g. baseline@base), got {name!r}")
        models.append(model.strip())
        if body and body != "baseline":
            names.append(body)
    if len(models) > 1:
        raise ValueError(f"a column uses one model, got {', '.join(map(repr, models))}")
    return names, (models[0] if models else None)


def column_variants(columns: list[list[str]], *, reward_start_ratio: float, strength: float, stop_strings: list[str],
                    min_new_tokens: int) -> list[Variant]:
    """One Variant per column, named by its interventions joined with " + " (or "baseline") and its model
    (``@NAME``, see :func:`split_column_model`), with the page's shared parameters for the interventions that
    take them."""
    params = {
        "eos_reward": {"reward_start_ratio": reward_start_ratio, "strength": strength},
        "stop_strings": {"strings": stop_strings},
        "min_new_tokens": {"n": min_new_tokens},
    }
    variants, seen = [], set()
    for column in columns:
        names, model = split_column_model(column)
        name = (" + ".join(names) or "baseline") + (f" @{model}" if model else "")
        while name in seen:
            name += "′"
        seen.add(name)
        variants.append(Variant(name, [{"name": n, "params": params.get(n, {})} for n in names], model=model))
    return variants


def write_downloads(files: dict[str, str], prefix: str, root: Path | None = None,
                    max_age_seconds: float = TRACE_MAX_AGE) -> list[str]:
    """Write files (name -> text) for download, in a new folder; folders older than ``max_age_seconds`` are
    removed, so a long-running public app does not fill its disk (Gradio serves its own copy, and
    `delete_cache` ages that out too)."""
    root = root or Path(tempfile.gettempdir()) / "eos-playground-traces"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age_seconds
    for old in root.iterdir():
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return [str(directory / name) for name in files]


def write_trace_files(trace, root: Path | None = None, max_age_seconds: float = TRACE_MAX_AGE) -> tuple[str, str]:
    """The trace as JSON (with per-stage distributions) and CSV, for download."""
    json_path, csv_path = write_downloads({"trace.json": trace.to_json(stages=True), "trace.csv": trace.to_csv()},
                                          "trace-", root, max_age_seconds)
    return json_path, csv_path


