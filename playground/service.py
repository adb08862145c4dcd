"""The app's state and requests, without any page: the loaded model, what visitors may ask for, and turning a
request into a validated :class:`~playground.engine.Comparison`. The page (``playground.ui``) and its API only
wire these to components."""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from .decoder import DecodeLoop, RunStopped, decode_loop
from .engine import Comparison, Settings, SplitComparison, Variant, comparison_for
from .export import export_column
from .kernels import DecodeKernels
from .request import (DEFAULTS, SETTINGS, Column, check_settings, check_whole, columns_from_json,
                      parse_bool, parse_column, resolve, shown, split_stop_strings)
from .models import LoadedModel, ModelLoadError, load_model
from .space.policy import Policy
from .trace import Trace, saved_json

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


class Busy(ValueError):
    """A refusal that is not the input's fault: the server is busy with something that must finish first (a
    training, other visitors' runs). Its sentence says what, and when to try again."""


class Playground:
    """The app's state: the loaded model (one at a time), how it was loaded, and what visitors may ask for.

    ``policy`` (default: :meth:`Policy.local`) is checked on every request, whichever page or API sent it;
    ``banner`` is a notice shown at the top of the page (e.g. the configured model could not be loaded).
    """

    def __init__(self, bundle: LoadedModel, reference: str = "default", load_options: dict | None = None, *,
                 policy: Policy | None = None, banner: str | None = None, kv_budget_mb: float | None = None):
        """``kv_budget_mb``: the decode loop's KV budget (None: $PLAYGROUND_KV_BUDGET_MB, else measured on the GPU
        after each load, or a fixed size on the CPU; see :func:`~playground.decoder.kv_budget_bytes`)."""
        self.bundle = bundle
        self.kv_budget_mb = kv_budget_mb
        for model in (bundle, *bundle.checkpoints.values()):  # each second checkpoint decodes in a loop of its own
            decode_loop(model, kv_budget_mb)
        self.reference = reference
        self.load_options = load_options or {}  # quantize / dtype / device / trust_remote_code for later loads
        self.policy = policy or Policy.local()
        self.banner = banner
        self._lock = threading.Lock()  # a load never swaps the model under a running comparison
        self._active = 0  # comparisons being decoded right now (a cancelled one leaves within one step)
        self._examinations = 0  # doctor runs working right now (a cancelled one stops before its next check)
        self._evaluations: dict[int, object] = {}  # the evaluations decoding now, whoever started them
        self._active_lock = threading.Lock()
        self._traces: collections.OrderedDict[str, tuple[float, Trace]] = collections.OrderedDict()

    # -- model -------------------------------------------------------------------------------------

    @property
    def shown_reference(self) -> str:
        """The loaded model's reference as visitors may see it: a stranger never sees a host path (they get the
        model's name, e.g. for the copied fix's ``from_pretrained``)."""
        if self.policy.reveal_paths or self.policy.allowed_models is None or self.reference in self.policy.allowed_models:
            return self.reference
        return self.bundle.info.name

    def load(self, reference: str, adapter: str | None = None, trust_remote_code: bool = False) -> dict:
        """Load another model (without the second checkpoints of the one it replaces: they were checked against
        its tokenizer); on failure the current one stays. Returns the new model's info.

        Raises ValueError (a refused request) or ModelLoadError (the load failed), each naming the field. In public
        mode the served model stays unless the policy allows swaps, and a swap never starts while runs decode."""
        trust_remote_code = parse_bool(trust_remote_code, "trust_remote_code")
        reference = self.policy.check_model(reference, adapter, trust_remote_code)
        if self.policy.public and reference == self.reference:
            return self.bundle.info.to_dict()  # already served: nothing to load (re-quantizing takes minutes)
        if not self.policy.model_swap:
            raise ValueError(f"model: this app serves {self.shown_reference} to everyone, and visitors cannot switch "
                             "it; duplicate the Space (or run the app yourself) to try another model")
        options = self.policy.options_for(reference, self.load_options, trust_remote_code)
        with self._lock:  # no comparison is built meanwhile; the rows in flight finish on the current model first
            loops = self._decode_loops()
            in_flight = sum(loop.rows_in_flight for loop in loops)
            if self.policy.public and in_flight:
                raise Busy(f"model: other visitors' runs are decoding on {self.shown_reference} "
                                 f"({in_flight} columns in flight); switch the model when they have finished")
            for loop in loops:
                loop.drain()
            bundle = load_model(reference, adapter=(adapter or "").strip() or None, **options)
            self.bundle, self.reference = bundle, reference
            decode_loop(bundle, self.kv_budget_mb)  # on a GPU the budget is what this model leaves free
        return bundle.info.to_dict()

    def default_columns(self, story: Sequence[Column] | None = None) -> list[Column]:
        """The columns of a request that names none: the story's (``story``, default baseline and eos_reward, on the
        model a column without @NAME runs), its baseline repeated once for every other served model — the base
        beside the fine-tune, each adapter or checkpoint the user added — and never one model's baseline twice:
        with adapters ``a`` and ``b`` on the base, ``baseline | baseline@a | baseline@b | eos_reward``; with ``a``
        alone, ``baseline@base | baseline | eos_reward``.
        """
        story = list(story if story is not None else (Column(), parse_column("eos_reward")))
        rest = story[1:] if story and story[0] == Column() else story
        default = self.bundle.default_model
        return [Column(model=None if model == default else model) for model in self.column_models()] + rest

    def add_adapter(self, spec: str, *, trained_here: bool = False) -> dict:
        """Load a LoRA adapter (``NAME=PATH`` or a path, named after its folder) on the loaded base, without
        reloading it; rows in flight finish first and runs submitted meanwhile wait (the model's owner:
        :meth:`LoadedModel.add_adapter`). Public mode: only adapters on spaces.yaml's allowlist, and the ones this
        server trained (``trained_here``: the Fine-tune tab's folder is the server's own, not a visitor's path, and
        public mode trains only when spaces.yaml allows it).
        Returns the model's info; ValueError (refused) or ModelLoadError (failed), each naming the field."""
        from .models import adapter_spec

        name, reference = adapter_spec(spec)
        if not trained_here:
            self.policy.check_adapter(reference)
        with self._lock:
            self.bundle.add_adapter(name, reference)
        return self.bundle.info.to_dict()

    def add_checkpoint(self, spec: str) -> dict:
        """Load a second full checkpoint (``NAME=PATH`` or a path, named after its folder) beside the loaded
        model, as the loaded model was loaded; a column picks it with ``@NAME`` and decodes on it in its own loop.
        Public mode: only checkpoints on spaces.yaml's allowlist. Returns the model's info; ValueError (refused:
        not allowed, another tokenizer) or ModelLoadError (failed), each naming the field."""
        from .models import checkpoint_spec

        name, reference = checkpoint_spec(spec)
        self.policy.check_checkpoint(reference)
        options = self.policy.options_for(self.reference, self.load_options)
        with self._lock:  # no comparison is built meanwhile; runs in flight go on, none decodes on it yet
            try:
                self.bundle.add_checkpoint(name, reference, **options)
            except ModelLoadError as error:
                if str(error).startswith("checkpoint"):
                    raise
                raise ModelLoadError(f"checkpoint {name!r}: {error}") from None
            decode_loop(self.bundle.checkpoints[name], self.kv_budget_mb)
        return self.bundle.info.to_dict()

    def remove_checkpoint(self, name: str) -> dict:
        """Unload the second checkpoint ``name``; rows in flight on it finish first."""
        with self._lock:
            self._check_loaded(name, "checkpoint", self.bundle.checkpoints)
            checkpoint = self.bundle.checkpoints.get(name)
            if checkpoint is not None:
                decode_loop(checkpoint).drain()
            self.bundle.remove_checkpoint(name)
        return self.bundle.info.to_dict()

    @staticmethod
    def _check_loaded(name, kind: str, loaded) -> None:
        """``name`` names one of the ``loaded`` adapters or checkpoints (whatever the page's list showed when it
        was drawn: any loaded one, added from the page, the API or the command line)."""
        if not isinstance(name, str) or name not in loaded:
            raise ValueError(f"{kind} {shown(name, 40)} is not loaded here; loaded {kind}s: {', '.join(loaded) or 'none'}")

    def _decode_loops(self) -> list[DecodeLoop]:
        """The decode loops of the loaded model and of each second checkpoint."""
        return [decode_loop(bundle) for bundle in (self.bundle, *self.bundle.checkpoints.values())]

    def remove_adapter(self, name: str) -> dict:
        """Unload the adapter ``name`` (the base and the other adapters stay); rows in flight finish first, and a
        run still waiting to decode on it stops with a sentence."""
        with self._lock:
            self._check_loaded(name, "adapter", self.bundle.adapters)
            self.bundle.remove_adapter(name)
        return self.bundle.info.to_dict()

    @property
    def active_generations(self) -> int:
        """Comparisons and evaluations decoding right now (a closed one leaves within one step)."""
        return self._active

    @property
    def active_examinations(self) -> int:
        """Doctor runs working right now (a cancelled one stops before its next check)."""
        return self._examinations

    def info(self) -> dict:
        """What the server is serving, its limits, and how many comparisons (and their rows, on the loaded model
        and its second checkpoints) are decoding now; the KV cache figures are the loaded model's loop's."""
        loop = decode_loop(self.bundle)
        checkpoints = {name: reference if self.policy.reveal_paths else hide_paths(reference)
                       for name, reference in self.bundle.info.checkpoints.items()}
        return {"model": self.bundle.info.name, "reference": self.shown_reference, "device": self.bundle.info.device,
                "models": self.column_models(), "default_model": self.bundle.default_model,
                "checkpoints": checkpoints, "banner": self.banner, "limits": self.policy.describe(),
                "active_generations": self.active_generations, "active_examinations": self.active_examinations,
                "rows_in_flight": sum(loop.rows_in_flight for loop in self._decode_loops()), **loop.memory(),
                "decode_kernels": DecodeKernels(self.bundle.model).describe()}

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

    def diagnose(self, model: str, sample: list[dict] | None = None, *, on_check=None,
                 cancel: threading.Event | None = None) -> list:
        """The EOS doctor's findings on the served ``model`` (``base``, an adapter, a second checkpoint), with an
        optional training ``sample`` (:meth:`read_sample`); ``on_check(index, count, words)`` before each check.
        Counted in :attr:`active_examinations` while it runs; once ``cancel`` is set (its client left) it stops
        before its next check or forward pass, raising RunStopped."""
        from .doctor import diagnose

        with self._active_lock:
            self._examinations += 1
        try:
            return diagnose(self.bundle, sample=sample, on_check=on_check, model=model, cancel=cancel)
        except RunStopped:
            log.info("doctor stopped: its client left")
            raise
        finally:
            with self._active_lock:
                self._examinations -= 1

    # -- comparisons -------------------------------------------------------------------------------

    def column_models(self) -> list[str]:
        """The models a column may pick (``eos_reward@NAME``; no name = the default model): ``base``, every
        loaded adapter's name and every second checkpoint's."""
        return self.bundle.column_models()

    def variants(self, columns, settings: dict) -> list[Variant]:
        """One :class:`Variant` per column (text, JSON or :class:`~playground.request.Column`, see
        :func:`~playground.request.columns_from_json`), named by its text form, its parameters resolved with the
        shared ``settings``. A repeated name gets a prime (′): the API keys columns by name."""
        parsed = columns_from_json(self.default_columns() if columns is None else columns)
        allowed = self.column_models()
        for index, column in enumerate(parsed, start=1):
            if column.model is not None and column.model not in allowed:
                raise ValueError(f"column {index}: model {column.model!r} is not loaded here; a column may use "
                                 f"{', '.join(allowed)} (or no @model: the loaded model)")
        return [Variant(name, resolve(column, settings), model=column.model)
                for name, column in zip(column_names(parsed), parsed)]

    def comparison(self, prompt=DEFAULTS["prompt"], columns=None, *, branches: list | None = None,
                   **settings) -> Comparison | SplitComparison:
        """Validate a request and build its comparison (ValueError with the field's name on bad input).

        ``columns``: one column each, as text (``"eos_reward(strength=8)+stop_strings"``), a list of
        interventions (names or ``{"name", "params"}``) or ``{"model", "interventions"}``; None: baseline and
        eos_reward. ``settings``: any of :data:`~playground.request.SETTINGS` (the rest take their defaults).
        ``branches``: ``[column, step, token_id]`` triples (column from 1 in the order of ``columns``, step from
        0) decoded in one second batch once the columns have finished; :meth:`stream` runs them. Columns on
        second checkpoints make it a :class:`~playground.engine.SplitComparison`, one part per model."""
        values = check_settings({"prompt": prompt, **settings})
        variants = self.variants(columns, values)
        self.policy.check_request(values["prompt"], values["system_prompt"], variants, stop_strings_of(values, variants))
        if branches is not None and (isinstance(branches, str) or not isinstance(branches, list | tuple)):
            raise ValueError(f"branches must be a list of [column, step, token_id], got {branches!r}")
        with self._lock:
            comparison = comparison_for(self.bundle, values["prompt"], variants, engine_settings(values, self.policy),
                                        max_new_tokens_cap=self.policy.max_new_tokens, branches=branches or ())
        self.policy.check_prompt_tokens(comparison.padded_length)
        for part in comparison.parts:
            decode_loop(part.bundle).check_fits(part)
        return comparison

    def branch(self, trace: Trace, column: int, step: int, token_id: int) -> Comparison | SplitComparison:
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

    def stream(self, run) -> Iterator:
        """A comparison's traces (see :meth:`_stream_comparison`) or an evaluation's progress (rows done, also
        every half second while rows decode: see ``Evaluation.progress``), counted as active while it decodes;
        closing this closes the decode."""
        comparison = isinstance(run, Comparison | SplitComparison)
        with self._active_lock:
            self._active += 1
            if not comparison:
                self._evaluations[id(run)] = run
        try:
            yield from self._stream_comparison(run) if comparison else run.run(heartbeat=0.5)
        finally:
            with self._active_lock:
                self._active -= 1
                self._evaluations.pop(id(run), None)

    def running_evaluations(self) -> list:
        """The evaluations decoding now, from any page or program, in the order they started (a page shows the
        ones it may stop)."""
        with self._active_lock:
            return list(self._evaluations.values())

    def _stream_comparison(self, comparison: Comparison | SplitComparison) -> Iterator[Trace]:
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
    def _decode(comparison: Comparison | SplitComparison) -> Iterator[Trace]:
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

    def evaluation(self, prompts="builtin", columns=None, *, sweep: str = "", seeds: int = 1, **settings):
        """Validate an evaluation request and build it (ValueError naming the field on bad input).

        ``prompts``: "builtin", a file (:class:`~pathlib.Path`) or a list of strings / ``{"prompt"}`` /
        ``{"messages"}`` objects. Columns and parameters follow :meth:`comparison`; with a ``sweep``
        ("reward_start_ratio=0.3,0.5 strength=4,8") the columns are the baseline and one per cell, built on the
        first column that uses eos_reward.

        Checked in this order, before any work: every field's type and range (the settings, seeds, the flag),
        then the sizes — sweep cells (counted before the grid is built) and rows in every mode, and in public
        mode prompts × columns × seeds × new tokens. The evaluation stops at the policy's time limit."""
        from .evaluate.prompt_files import (MAX_FILE_BYTES, MAX_PROMPT_CHARS, builtin_prompts, prompts_from_items,
                                            read_prompts)
        from .evaluate.runner import MAX_SEEDS, Evaluation, check_budget
        from .evaluate.sweep import Sweep

        policy = self.policy
        values = check_settings(settings)
        engine = engine_settings(values, policy)
        with self._lock:
            bundle = self.bundle
        engine.validate(vocab_size=bundle.info.vocab_size, max_new_tokens_cap=policy.max_new_tokens)
        seeds = check_whole(seeds, "seeds", 1, MAX_SEEDS)
        if sweep is None:
            sweep = ""
        if not isinstance(sweep, (str, list, tuple)):
            raise ValueError(f"sweep must be text such as \"strength=4,8\", got {shown(sweep)}")
        if not (isinstance(prompts, Path) or prompts == "builtin" or isinstance(prompts, (list, tuple))):
            raise ValueError(f"prompts must be \"builtin\" or a list of strings or {{\"prompt\"/\"messages\"}} "
                             f"objects, got {shown(prompts)}")
        if isinstance(prompts, (list, tuple)):
            policy.check_evaluation_prompts(len(prompts))  # before a thousand prompts are read
        variants = self.variants(columns, values)
        policy.check_request("", values["system_prompt"], variants, stop_strings_of(values, variants))
        grid = Sweep.parse(sweep) if (sweep.strip() if isinstance(sweep, str) else sweep) else None
        if grid is not None:
            base = next((v for v in variants if any(i.name == "eos_reward" for i in v.interventions)),
                        Variant("eos_reward", resolve(parse_column("eos_reward"), values)))
            variants = grid.variants(base)
        max_chars = policy.max_prompt_chars or MAX_PROMPT_CHARS
        if isinstance(prompts, Path):
            max_bytes = int(policy.max_upload_mb * 1024 * 1024) if policy.max_upload_mb else MAX_FILE_BYTES
            prompt_set = read_prompts(prompts, max_bytes=max_bytes, max_chars=max_chars)
        elif prompts == "builtin":
            prompt_set = builtin_prompts()
        else:
            prompt_set = prompts_from_items(prompts, max_chars=max_chars)
        policy.check_evaluation_prompts(len(prompt_set.prompts))
        if policy.public:
            check_budget(len(prompt_set.prompts), len(variants), seeds, values["max_new_tokens"])
        return Evaluation(bundle, prompt_set, variants, engine, seeds=seeds, sweep=grid,
                          model_reference=self.reference, max_new_tokens_cap=policy.max_new_tokens,
                          prompt_token_check=policy.check_prompt_tokens,
                          time_limit_seconds=policy.time_limit_seconds, reveal_paths=policy.reveal_paths)

    def export(self, comparison: Comparison | SplitComparison, kind: str = "generate") -> str:
        """"Copy this fix" for the comparison's first column (a second checkpoint's column loads that checkpoint);
        a stranger's copy names the model by what they can load (its hub id), never by a path on this host."""
        return export_column(comparison, kind=kind, model_reference=self.reference,
                             reveal_paths=self.policy.reveal_paths)


def stop_strings_of(values: dict, variants: Sequence[Variant]) -> list[str]:
    """Every stop string of a request, for the policy's caps: the shared setting's (checked whether or not a column
    uses it: a value no door accepts is refused at every door) and each column's own."""
    strings = split_stop_strings(values["stop_strings"])
    strings += [s for v in variants for i in v.interventions if i.name == "stop_strings" for s in i.params["strings"]]
    return list(dict.fromkeys(strings))


def engine_settings(values: dict, policy: Policy | None = None) -> Settings:
    """The engine's :class:`Settings` from checked request settings (and the policy's time limit)."""
    given = {name: values[name] for name in ENGINE_SETTINGS}
    return Settings(**given | {"system_prompt": given["system_prompt"] or None},  # empty: no system turn
                    timeout_seconds=policy.time_limit_seconds if policy else None)


# The run settings the engine reads (the rest belong to interventions: the shared strength, stop strings...).
ENGINE_SETTINGS = tuple(f.name for f in dataclasses.fields(Settings) if f.name in SETTINGS)


def column_names(columns: Sequence[Column]) -> list[str]:
    """Each column's name: its text form (see :mod:`~playground.request`), a repeat marked ′ (the API keys
    columns by name).

    >>> column_names([Column(), parse_column("eos_reward"), parse_column("eos_reward")])
    ['baseline', 'eos_reward', 'eos_reward′']
    """
    names, seen = [], set()
    for column in columns:
        name = column.name
        while name in seen:
            name += "′"
        seen.add(name)
        names.append(name)
    return names


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
    """The trace as JSON (with per-stage distributions and its schema version: the page opens it again) and CSV,
    for download."""
    json_path, csv_path = write_downloads({"trace.json": saved_json(trace), "trace.csv": trace.to_csv()},
                                          "trace-", root, max_age_seconds)
    return json_path, csv_path


