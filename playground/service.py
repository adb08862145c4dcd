"""The app's state and requests, without any page: the loaded model, what visitors may ask for, and turning a
request into a validated :class:`~playground.engine.Comparison`. The page (``playground.ui``) and its API only
wire these to components."""

from __future__ import annotations

import collections
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .decoder import decode_loop
from .engine import Comparison, Settings, Variant
from .interventions import unescape
from .models import LoadedModel, load_model
from .space import Policy
from .trace import Trace

TRACE_MAX_AGE = 3600  # seconds a downloadable trace is kept
TRACES_KEPT = 32  # finished traces /trace can return
RUNS_AT_ONCE = 16  # runs (page or API) decoding at once; their rows share one batch, more wait in the queue


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

    def model_markdown(self) -> str:
        i = self.bundle.info
        eos = ", ".join(f"`{t}` {self.bundle.tokenizer.convert_ids_to_tokens(t)!r}" for t in i.eos_token_ids)
        return (f"**{i.name}** · {i.num_parameters / 1e6:.1f} M parameters · {i.dtype} on {i.device} · "
                f"context {i.context_length} · EOS ids {eos} · pad id `{i.pad_token_id}` · "
                f"chat template {'yes' if i.has_chat_template else 'no'}"
                + (f" · adapter `{i.adapter}`" if i.adapter else "")
                + f"  \n<small>from {i.source}, loaded in {i.load_seconds:.1f} s</small>")

    def load(self, reference: str, adapter: str | None = None, trust_remote_code: bool = False) -> dict:
        """Load another model; on failure the current one stays. Returns the new model's info."""
        reference = self.policy.check_model(reference, adapter, trust_remote_code)
        options = self.policy.options_for(reference, self.load_options, trust_remote_code)
        with self._lock:  # no comparison is built meanwhile; the rows in flight finish on the current model first
            decode_loop(self.bundle).drain()
            bundle = load_model(reference, adapter=(adapter or "").strip() or None, **options)
            self.bundle, self.reference = bundle, reference
        return bundle.info.to_dict()

    def info(self) -> dict:
        """What the server is serving, its limits, and how many comparisons (and their rows) are decoding now."""
        return {"model": self.bundle.info.name, "reference": self.reference, "device": self.bundle.info.device,
                "banner": self.banner, "limits": self.policy.describe(), "active_generations": self._active,
                "rows_in_flight": decode_loop(self.bundle).rows_in_flight}

    # -- comparisons -------------------------------------------------------------------------------

    def comparison(self, prompt: str, columns: list[list[str]], *, max_new_tokens: int, temperature: float,
                   top_p: float, top_k: int, seed: int, reward_start_ratio: float, strength: float,
                   stop_strings: str = "\\n\\n", min_new_tokens: int = 32, use_chat_template: bool = True,
                   system_prompt: str = "") -> Comparison:
        """Validate the inputs and build a comparison (ValueError with the field's name on bad input)."""
        if stop_strings is not None and not isinstance(stop_strings, str):
            raise ValueError("stop_strings must be text: comma-separated strings (\\n = newline)")
        strings = [unescape(s) for s in (stop_strings or "").split(",") if s.strip(" ")]
        self.policy.check_request(prompt, system_prompt, columns, strings)
        params = {
            "eos_reward": {"reward_start_ratio": reward_start_ratio, "strength": strength},
            "stop_strings": {"strings": strings},
            "min_new_tokens": {"n": min_new_tokens},
        }
        variants, seen = [], set()
        for names in columns:
            name = " + ".join(names) or "baseline"
            while name in seen:
                name += "′"
            seen.add(name)
            variants.append(Variant(name, [{"name": n, "params": params.get(n, {})} for n in names]))
        settings = Settings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                            seed=seed, use_chat_template=use_chat_template, system_prompt=system_prompt or None,
                            timeout_seconds=self.policy.time_limit_seconds)
        with self._lock:
            comparison = Comparison(self.bundle, prompt, variants, settings, max_new_tokens_cap=self.policy.max_new_tokens)
        self.policy.check_prompt_tokens(comparison.padded_length)
        return comparison

    def stream(self, comparison: Comparison) -> Iterator:
        """``comparison.run()``, counted as active while it decodes; closing this closes the decode."""
        with self._active_lock:
            self._active += 1
        try:
            yield from comparison.run()
        finally:
            with self._active_lock:
                self._active -= 1

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



def write_trace_files(trace, root: Path | None = None, max_age_seconds: float = TRACE_MAX_AGE) -> tuple[str, str]:
    """Write the trace for download; traces older than ``max_age_seconds`` are removed, so a long-running
    public app does not fill its disk (Gradio serves its own copy, and `delete_cache` ages that out too)."""
    root = root or Path(tempfile.gettempdir()) / "eos-playground-traces"
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age_seconds
    for old in root.iterdir():
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix="trace-", dir=root))
    (directory / "trace.json").write_text(trace.to_json(stages=True), encoding="utf-8")
    (directory / "trace.csv").write_text(trace.to_csv(), encoding="utf-8")
    return str(directory / "trace.json"), str(directory / "trace.csv")


