"""The Gradio page: wires the engine, charts and doctor to components. No decoding logic lives here."""

from __future__ import annotations

import html
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr

from . import charts
from .engine import Comparison, Settings, Variant
from .interventions import DESCRIPTIONS, INTERVENTION_NAMES, default_params, export_code, parse_interventions, unescape
from .models import LoadedModel, ModelLoadError, load_model
from .space import Policy, normalize_columns

MAX_COLUMNS = 4
RAMP = default_params("eos_reward")
DEFAULT_COLUMNS = [[], ["eos_reward"], ["seed_article"], ["stop_strings"]]
TRACE_MAX_AGE = 3600  # seconds a downloadable trace is kept
API_INTERVAL = 0.25  # seconds between /compare updates (each carries the whole trace so far)
CHART_INTERVAL = 0.3  # seconds between live chart redraws (at most ~3 a second; text refreshes every step)
EXAMPLES = [
    ["What can I do in Paris?"],  # the article's prompt: rambles to the limit
    ["Write a haiku about the sea."],  # short: a model that stops on its own
    ["List every country in Europe with its capital."],  # long list: looping and rambling
    ["Repeat after me forever: la la la"],  # repetition loop
    ["Say only 'yes' or 'no': is water wet?"],  # early stop
]
CSS = """
.token-view { font-family: ui-monospace, monospace; font-size: 0.9em; line-height: 1.7; white-space: pre-wrap;
              max-height: 420px; overflow-y: auto; padding: 6px; border: 1px solid #e5e7eb; border-radius: 6px; }
.token-view span { border-radius: 3px; }
.status { font-weight: 600; }
#banner { background: #fff7e6; border: 1px solid #f0b429; border-radius: 6px; padding: 4px 10px; }
"""


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


def _number(value, name: str):
    """Gradio hands over None for a cleared number box: say which field is empty (ranges are the engine's)."""
    if value is None or value == "":
        raise ValueError(f"{name} is empty: give a number")
    return value


def token_html(variant, color_by: str = "p") -> str:
    """The column's text, one span per token, shaded by the chosen token's probability or by p(EOS)."""
    parts = []
    # The EOS token itself is drawn as a badge, not as its text.
    steps = variant.steps[:-1] if variant.stop_reason == "eos" else variant.steps
    for s in steps:
        token = s.token
        if not token:
            continue
        value = s.p_eos if color_by == "p_eos" else s.p_chosen
        # Low probability (a surprising pick) is red, high is green; for p(EOS), darker orange = closer to stop.
        color = f"rgba(255,140,0,{min(value, 1):.2f})" if color_by == "p_eos" else f"hsla({120 * value:.0f},80%,70%,0.55)"
        title = f"step {s.step} · p={s.p_chosen:.3f} (raw {s.p_chosen_raw:.3f}) · p(EOS) raw {s.p_eos_raw:.3g}, final {s.p_eos:.3g}"
        parts.append(f'<span style="background:{color}" title="{html.escape(title)}">{html.escape(token)}</span>')
    if variant.stop_reason == "eos":
        parts.append('<span style="background:#444;color:white;padding:0 4px" title="end of sequence">⏹ EOS</span>')
    return f'<div class="token-view">{"".join(parts) or "&nbsp;"}</div>'


def stages_rows(trace, column: int, step: int) -> list[list]:
    """The teaching view: how the chosen column's distribution changed through each stage at one step."""
    if trace is None or column >= len(trace.variants) or step >= len(trace.variants[column].steps):
        return []
    record = trace.variants[column].steps[step]
    rows = [[stage.name, f"{stage.p_eos:.4g}", stage.kept, ", ".join(f"{token!r} {p:.3f}" for _, token, p in stage.top[:5])]
            for stage in record.stages]
    rows.append(["argmax" if trace.settings["temperature"] == 0 else "sampled", "", "", repr(record.token)])
    return rows


def build_app(playground: Playground) -> gr.Blocks:
    choices = [(f"{name} — {DESCRIPTIONS[name]}", name) for name in INTERVENTION_NAMES]
    policy = playground.policy
    max_columns = min(MAX_COLUMNS, policy.max_columns)
    column_choices = [n for n in range(2, MAX_COLUMNS + 1) if n <= max_columns] or [1]
    with gr.Blocks(title="EOS Playground", delete_cache=(TRACE_MAX_AGE, TRACE_MAX_AGE)) as demo:
        holder = gr.State({})  # per session: the running comparison (for Stop) and the last trace
        gr.Markdown("# EOS Playground\nWhy does a language model (not) stop? The same prompt, decoded side "
                    "by side with and without stop interventions, with p(EOS) and the next-token distribution "
                    "at every step.")
        if playground.banner:
            gr.Markdown(f"⚠️ {playground.banner}", elem_id="banner")
        with gr.Accordion("Model", open=False):
            model_info = gr.Markdown(playground.model_markdown())
            with gr.Row():
                if policy.allowed_models is None:
                    model_ref = gr.Textbox(label="Load another model", placeholder="hub id, local directory, .gguf file or 'default'", scale=3)
                else:  # public: only the allowlist (anything else sent to /load_model is refused with a sentence)
                    model_ref = gr.Dropdown(list(policy.allowed_models), value=playground.reference,
                                            allow_custom_value=True, label="Load another model", scale=3)
                adapter_ref = gr.Textbox(label="LoRA adapter (optional)", scale=2, visible=policy.allow_adapters)
                trust_code = gr.Checkbox(label="Trust remote code (runs the model's own Python code)", value=False,
                                         visible=policy.allow_trust_remote_code, scale=1)
                load_button = gr.Button("Load", scale=1)
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0][0], lines=3)
                    with gr.Row():
                        use_template = gr.Checkbox(label="Use the chat template", value=True)
                        system_prompt = gr.Textbox(label="System prompt (optional)", lines=1, scale=3)
                    gr.Examples(EXAMPLES, inputs=[prompt], label="Examples")
                with gr.Column(scale=2):
                    max_new = gr.Slider(1, min(1024, playground.policy.max_new_tokens), value=128, step=1, label="Max new tokens")
                    ratio = gr.Slider(0, 1, value=RAMP["reward_start_ratio"], step=0.05, label="Reward start ratio (EOS ramp starts at ratio × max new tokens)")
                    temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)")
                    with gr.Accordion("More decoding settings", open=False):
                        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p (1 = off)")
                        top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
                        seed = gr.Number(value=0, precision=0, label="Seed")
                        strength = gr.Slider(0, 40, value=RAMP["strength"], step=0.5, label="EOS reward strength (largest bonus, in logits)")
                        stop_strings = gr.Textbox(value="\\n\\n", label="Stop strings (comma-separated, \\n = newline)")
                        min_new = gr.Slider(0, 256, value=32, step=1, label="Min new tokens (for the min_new_tokens intervention)")
            n_columns = gr.Radio(column_choices, value=min(2, max_columns), label="Columns")
            with gr.Row():
                run = gr.Button("Run", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            column_boxes, pickers, statuses, views = [], [], [], []
            with gr.Row(equal_height=False):
                for index in range(MAX_COLUMNS):
                    with gr.Column(visible=index < min(2, max_columns), min_width=240) as box:
                        pickers.append(gr.Dropdown(choices, value=DEFAULT_COLUMNS[index], multiselect=True,
                                                   label=f"Column {index + 1} interventions (none = baseline)"))
                        statuses.append(gr.Markdown("idle", elem_id=f"status-{index}", elem_classes="status"))
                        views.append(gr.HTML('<div class="token-view">&nbsp;</div>', elem_id=f"tokens-{index}"))
                    column_boxes.append(box)
            color_by = gr.Radio([("chosen token's probability", "p"), ("p(EOS)", "p_eos")], value="p",
                                label="Shade tokens by")
            log_scale = gr.Checkbox(label="Log scale (p(EOS) of a rambling model is tiny)", value=True)
            p_eos_plot = gr.Plot(label="p(EOS) per step")
            step = gr.Slider(0, 127, value=0, step=1, label="Step to inspect")
            top_k_plot = gr.Plot(label="Top next tokens at the chosen step")
            with gr.Row():
                inspect_column = gr.Dropdown([(f"Column {i + 1}", i) for i in range(MAX_COLUMNS)], value=0, label="Column to inspect")
            heatmap_plot = gr.Plot(label="Top-k over all steps")
            stages = gr.Dataframe(headers=["stage", "p(EOS)", "tokens kept", "top tokens"], label="Stage by stage at the chosen step: raw → interventions → temperature → top-k → top-p → choice", interactive=False)
            with gr.Accordion("Copy this fix", open=False):
                with gr.Row():
                    fix_column = gr.Dropdown([(f"Column {i + 1}", i) for i in range(MAX_COLUMNS)], value=1, label="Column")
                    fix_kind = gr.Radio(["generate", "pipeline"], value="generate", label="Use with")
                snippet = gr.Code(language="python", label="Runnable Python that reproduces this column")
            with gr.Row():
                download_json = gr.DownloadButton("Download trace (JSON)", visible=False)
                download_csv = gr.DownloadButton("Download trace (CSV)", visible=False)

        with gr.Tab("EOS doctor"):
            gr.Markdown("Checks the loaded model and tokenizer for the usual reasons a fine-tune never emits EOS. "
                        "Optionally add a JSONL training sample (`prompt`/`response` or `text` per line).")
            sample = gr.File(label="Training sample (JSONL, optional)", file_types=[".jsonl"])
            doctor_button = gr.Button("Examine the model")
            doctor_report = gr.Markdown()

        # ---- handlers -------------------------------------------------------------------------------
        inputs = [prompt, max_new, temperature, top_p, top_k, seed, ratio, strength, stop_strings, min_new,
                  use_template, system_prompt, n_columns, *pickers]

        def make_comparison(prompt_, max_new_, temperature_, top_p_, top_k_, seed_, ratio_, strength_, stops_,
                            min_new_, template_, system_, n_columns_, *picked):
            try:
                return playground.comparison(
                    prompt_, [list(p or []) for p in picked[: int(n_columns_)]],
                    max_new_tokens=_number(max_new_, "max new tokens"), temperature=_number(temperature_, "temperature"),
                    top_p=_number(top_p_, "top-p"), top_k=_number(top_k_, "top-k"), seed=_number(seed_, "seed"),
                    reward_start_ratio=_number(ratio_, "reward start ratio"), strength=_number(strength_, "strength"),
                    stop_strings=stops_, min_new_tokens=_number(min_new_, "min new tokens"),
                    use_chat_template=bool(template_), system_prompt=system_ or "")
            except ValueError as error:
                raise gr.Error(str(error), title="Check your input") from None

        def column_updates(trace, color):
            out = []
            for index in range(MAX_COLUMNS):
                if index < len(trace.variants):
                    variant = trace.variants[index]
                    out += [f"**{html.escape(variant.name)}** — {variant.status()}", token_html(variant, color)]
                else:
                    out += [gr.skip(), gr.skip()]
            return out

        def figures(trace, log, step_, column):
            column = min(int(column or 0), len(trace.variants) - 1)
            longest = max(len(v.steps) for v in trace.variants)
            step_ = min(int(step_ or 0), max(longest - 1, 0))
            return [charts.p_eos_figure(trace, bool(log)), charts.top_k_figure(trace, step_),
                    charts.heatmap_figure(trace, column), stages_rows(trace, column, step_)]

        def on_run(state, color, log, step_, column, *args) -> Iterator[list]:
            comparison = make_comparison(*args)
            state["comparison"] = comparison
            last_chart = 0.0
            trace = comparison.trace
            for trace in playground.stream(comparison):
                # Text every step; the live p(EOS) chart at most every CHART_INTERVAL. The per-step views
                # (top-k, heatmap, stages) are drawn once at the end and whenever a step is picked.
                now = time.monotonic()
                chart = gr.skip()
                if now - last_chart >= CHART_INTERVAL:
                    last_chart, chart = now, charts.p_eos_figure(trace, bool(log))
                yield [*column_updates(trace, color), chart, *[gr.skip()] * 3, gr.skip(), gr.skip(), gr.skip(), state]
            state["trace"] = trace
            state.pop("comparison", None)
            longest = max(len(v.steps) for v in trace.variants)
            files = _write_trace_files(trace)
            yield [*column_updates(trace, color), *figures(trace, log, step_, column),
                   gr.update(maximum=max(longest - 1, 1), value=min(int(step_ or 0), max(longest - 1, 0))),
                   gr.update(value=files[0], visible=True), gr.update(value=files[1], visible=True), state]

        def on_stop(state):
            comparison = state.get("comparison")
            if comparison is not None:
                comparison.cancel()

        def redraw(state, color, log, step_, column):
            trace = state.get("trace")
            if trace is None:
                return [gr.skip()] * (2 * MAX_COLUMNS + 4)
            return [*column_updates(trace, color), *figures(trace, log, step_, column)]

        def on_columns(n):
            return [gr.update(visible=i < int(n)) for i in range(MAX_COLUMNS)]

        def on_snippet(column, kind, prompt_, max_new_, temperature_, top_p_, top_k_, seed_, ratio_, strength_,
                       stops_, min_new_, template_, system_, n_columns_, *picked):
            column = min(int(column or 0), len(picked) - 1)
            try:  # only the chosen column: another column's bad settings must not block its snippet
                comparison = make_comparison(prompt_, max_new_, temperature_, top_p_, top_k_, seed_, ratio_, strength_,
                                             stops_, min_new_, template_, system_, 1, picked[column])
            except gr.Error as error:
                return f"# {error.message}"
            variant = comparison.trace.variants[0]
            s = comparison.settings
            return export_code(parse_interventions(variant.interventions), model_reference=playground.reference,
                               prompt=prompt_, system_prompt=s.system_prompt, use_chat_template=s.use_chat_template,
                               max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                               top_k=s.top_k, seed=s.seed, variant=kind)

        def on_load(reference, adapter, trust_remote_code):
            try:
                playground.load(reference, adapter, bool(trust_remote_code))
            except (ModelLoadError, ValueError) as error:
                raise gr.Error(str(error), title="Model not loaded — the previous model is still in use") from None
            return playground.model_markdown()

        def on_doctor(sample_file):
            from .doctor import diagnose, load_sample, report_markdown

            try:
                records = load_sample(sample_file) if sample_file else None
            except (OSError, ValueError) as error:
                raise gr.Error(f"training sample: {error}") from None
            return report_markdown(diagnose(playground.bundle, sample=records))

        chart_outputs = [p_eos_plot, top_k_plot, heatmap_plot, stages]
        column_outputs = [c for pair in zip(statuses, views) for c in pair]
        run_event = run.click(on_run, [holder, color_by, log_scale, step, inspect_column, *inputs],
                              [*column_outputs, *chart_outputs, step, download_json, download_csv, holder],
                              concurrency_id="model", concurrency_limit=1, api_name="run",
                              api_visibility="undocumented")  # the benchmark streams the page's own handler
        stop.click(on_stop, holder, None, queue=False, api_visibility="private")
        for control in (color_by, log_scale, step, inspect_column):
            control.change(redraw, [holder, color_by, log_scale, step, inspect_column],
                           [*column_outputs, *chart_outputs], api_visibility="private", queue=False)
        n_columns.change(on_columns, n_columns, column_boxes, api_visibility="private", queue=False)
        snippet_inputs = [fix_column, fix_kind, *inputs]
        for control in (fix_column, fix_kind, *inputs):
            control.change(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
        demo.load(on_snippet, snippet_inputs, snippet, api_visibility="private", queue=False)
        run_event.then(on_snippet, snippet_inputs, snippet, api_visibility="private")
        load_button.click(on_load, [model_ref, adapter_ref, trust_code], model_info, concurrency_id="model",
                          concurrency_limit=1, api_name="load_model")
        doctor_button.click(on_doctor, sample, doctor_report, concurrency_id="model", concurrency_limit=1,
                            api_name="doctor")

        def compare(prompt: str, columns: list | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
                    top_p: float = 1.0, top_k: int = 0, seed: int = 0, reward_start_ratio: float = RAMP["reward_start_ratio"],
                    strength: float = RAMP["strength"], stop_strings: str = "\\n\\n", min_new_tokens: int = 32,
                    use_chat_template: bool = True, system_prompt: str = "") -> Iterator[dict]:
            """Stream a comparison: the CLI's --json object plus each column's text and status, after every step.

            columns: one list of intervention names per column (default: baseline and eos_reward).
            """
            try:
                columns = normalize_columns(columns)
                comparison = playground.comparison(
                    prompt, columns, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                    seed=seed, reward_start_ratio=reward_start_ratio, strength=strength, stop_strings=stop_strings,
                    min_new_tokens=min_new_tokens, use_chat_template=use_chat_template, system_prompt=system_prompt)
            except (ValueError, TypeError) as error:
                raise gr.Error(str(error)) from None
            last = 0.0
            for trace in playground.stream(comparison):
                done = all(v.finished for v in trace.variants)
                # Each update is the whole trace so far; at most API_INTERVAL apart keeps a fast model's stream
                # from spending its time re-sending the same steps.
                if not done and time.monotonic() - last < API_INTERVAL:
                    continue
                last = time.monotonic()
                data = trace.to_dict()
                data["texts"] = [v.text for v in trace.variants]
                data["statuses"] = [v.status() for v in trace.variants]
                data["done"] = done
                yield data

        gr.api(compare, api_name="compare", concurrency_id="model", concurrency_limit=1)

        def info() -> dict:
            """The model being served, this app's limits, and how many comparisons are decoding right now."""
            return playground.info()

        gr.api(info, api_name="info", queue=False)
    return demo


def _write_trace_files(trace, root: Path | None = None, max_age_seconds: float = TRACE_MAX_AGE) -> tuple[str, str]:
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


def launch(playground: Playground, *, host: str | None = None, port: int | None = None, share: bool = False,
           auth: tuple[str, str] | None = None, **kwargs):
    """Serve the page; a public policy bounds the queue, uploads and sessions kept in memory (runs stop at its time
    limit in the engine: Gradio's own ``time_limit=`` only applies to ``.stream()`` events)."""
    policy = playground.policy
    demo = build_app(playground)
    demo.queue(default_concurrency_limit=1, max_size=policy.queue_size)
    if policy.max_upload_mb is not None:
        kwargs.setdefault("max_file_size", int(policy.max_upload_mb * 1024 * 1024))
    if policy.max_sessions is not None:
        kwargs.setdefault("state_session_capacity", policy.max_sessions)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth, css=CSS, **kwargs)
