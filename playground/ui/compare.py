"""The Compare tab: the prompt, the decoding settings, one column per set of interventions streaming side by
side, the p(EOS) chart, the step inspector and the fix to copy."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator

import gradio as gr

from .. import charts
from ..interventions import DESCRIPTIONS, INTERVENTION_NAMES, default_params, export_code, parse_interventions
from ..service import RUNS_AT_ONCE, Playground, write_trace_files
from .views import require_number, stages_rows, token_html

MAX_COLUMNS = 4
RAMP = default_params("eos_reward")
DEFAULT_COLUMNS = [[], ["eos_reward"], ["seed_article"], ["stop_strings"]]
CHART_INTERVAL = 0.3  # seconds between live chart redraws (at most ~3 a second; text refreshes every step)
EXAMPLES = [
    ["What can I do in Paris?"],  # the article's prompt: rambles to the limit
    ["Write a haiku about the sea."],  # short: a model that stops on its own
    ["List every country in Europe with its capital."],  # long list: looping and rambling
    ["Repeat after me forever: la la la"],  # repetition loop
    ["Say only 'yes' or 'no': is water wet?"],  # early stop
]


def compare_tab(playground: Playground, demo: gr.Blocks) -> None:
    choices = [(f"{name} — {DESCRIPTIONS[name]}", name) for name in INTERVENTION_NAMES]
    policy = playground.policy
    max_columns = min(MAX_COLUMNS, policy.max_columns)
    column_choices = [n for n in range(2, MAX_COLUMNS + 1) if n <= max_columns] or [1]
    holder = gr.State({})  # per session: the running comparison (for Stop) and the last trace
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


    # ---- handlers -------------------------------------------------------------------------------
    inputs = [prompt, max_new, temperature, top_p, top_k, seed, ratio, strength, stop_strings, min_new,
              use_template, system_prompt, n_columns, *pickers]

    def make_comparison(prompt_, max_new_, temperature_, top_p_, top_k_, seed_, ratio_, strength_, stops_,
                        min_new_, template_, system_, n_columns_, *picked):
        try:
            return playground.comparison(
                prompt_, [list(p or []) for p in picked[: int(n_columns_)]],
                max_new_tokens=require_number(max_new_, "max new tokens"), temperature=require_number(temperature_, "temperature"),
                top_p=require_number(top_p_, "top-p"), top_k=require_number(top_k_, "top-k"), seed=require_number(seed_, "seed"),
                reward_start_ratio=require_number(ratio_, "reward start ratio"), strength=require_number(strength_, "strength"),
                stop_strings=stops_, min_new_tokens=require_number(min_new_, "min new tokens"),
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
        files = write_trace_files(trace)
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

    chart_outputs = [p_eos_plot, top_k_plot, heatmap_plot, stages]
    column_outputs = [c for pair in zip(statuses, views) for c in pair]
    run_event = run.click(on_run, [holder, color_by, log_scale, step, inspect_column, *inputs],
                          [*column_outputs, *chart_outputs, step, download_json, download_csv, holder],
                          concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE, api_name="run",
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
