"""The app's state and requests, without any page: the loaded model, what visitors may ask for, and turning a
request into a validated :class:`~playground.engine.Comparison`. The page (``playground.ui``) and its API only
wire these to components."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .engine import Comparison, Settings, Variant
from .interventions import unescape
from .models import LoadedModel, load_model
from .space import Policy

TRACE_MAX_AGE = 3600  # seconds a downloadable trace is kept


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
        bundle = load_model(reference, adapter=(adapter or "").strip() or None, **options)
        with self._lock:
            self.bundle, self.reference = bundle, reference
        return bundle.info.to_dict()

    def info(self) -> dict:
        """What the server is serving, its limits, and how many comparisons are decoding right now."""
        return {"model": self.bundle.info.name, "reference": self.reference, "device": self.bundle.info.device,
                "banner": self.banner, "limits": self.policy.describe(), "active_generations": self._active}

    # -- comparisons -------------------------------------------------------------------------------

    def comparison(self, prompt: str, columns: list[list[str]], *, max_new_tokens: int, temperature: float,
                   top_p: float, top_k: int, seed: int, reward_start_ratio: float, strength: float,
                   stop_strings: str = "\\n\\n", min_new_tokens: int = 32, use_chat_template: bool = True,
                   system_prompt: str = "") -> Comparison:
        """Validate the inputs and build a comparison (ValueError with the field's name on bad input)."""
        strings = split_stop_strings(stop_strings)
        self.policy.check_request(prompt, system_prompt, columns, strings)
        variants = column_variants(columns, reward_start_ratio=reward_start_ratio, strength=strength,
                                   stop_strings=strings, min_new_tokens=min_new_tokens)
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


def column_variants(columns: list[list[str]], *, reward_start_ratio: float, strength: float, stop_strings: list[str],
                    min_new_tokens: int) -> list[Variant]:
    """One Variant per column, named by its interventions joined with " + " (or "baseline"), with the page's
    shared parameters for the interventions that take them."""
    params = {
        "eos_reward": {"reward_start_ratio": reward_start_ratio, "strength": strength},
        "stop_strings": {"strings": stop_strings},
        "min_new_tokens": {"n": min_new_tokens},
    }
    variants, seen = [], set()
    for names in columns:
        name = " + ".join(names) or "baseline"
        while name in seen:
            name += "′"
        seen.add(name)
        variants.append(Variant(name, [{"name": n, "params": params.get(n, {})} for n in names]))
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


