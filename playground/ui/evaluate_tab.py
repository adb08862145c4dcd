"""The Evaluate tab: columns over a prompt set, rates and lengths per column, the sweep's
heatmap, every answer per prompt (each openable in Compare) and the report to download."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from ..engine import Settings
from ..evaluate.charts import length_figure, stop_reasons_figure, sweep_figure
from ..evaluate.report import SUMMARY_HEADERS, Report, compare_query
from ..interventions import INTERVENTION_NAMES
from ..markup import md_text
from ..request import DEFAULTS as D
from ..request import SETTINGS, check_whole
from ..service import Playground, write_downloads
from .compare import MAX_COLUMNS
from .controls import control, max_new_tokens_control
from .errors import refusal
from .page_input import page_columns
from .streaming import PROGRESS_INTERVAL, paced

# The Evaluate tab's settings: every run setting but the prompt (the prompt set replaces it), in this order.
EVALUATE_SETTINGS = [name for name in SETTINGS if name != "prompt"]
PREVIEW_CHARS = 160
TABLE_CSS = """<style>
.evaluate-prompts { border-collapse: collapse; font-size: 0.9em; width: 100%; }
.evaluate-prompts th, .evaluate-prompts td { border: 1px solid #e5e7eb; padding: 4px 6px; vertical-align: top; text-align: left; }
.evaluate-prompts .answer { white-space: pre-wrap; max-height: 240px; overflow-y: auto; font-family: ui-monospace, monospace; }
</style>"""


def prompts_html(report: Report, compare_columns: int = MAX_COLUMNS) -> str:
    """One table row per prompt and seed: the prompt, each column's stop reason and length (the text unfolds), and
    a link that opens the prompt in Compare with the same columns (or, for a sweep, the baseline and the best
    cell)."""
    settings = Settings(**report.settings)
    link_columns = report.columns
    if report.sweep is not None:
        best = report.best_cell()
        link_columns = [report.columns[0]] + ([report.columns[best["column"]]] if best else [])
    head = "".join(f"<th>{html.escape(c.name)}</th>" for c in report.columns)
    body = []
    by_key = {(r.prompt, r.seed, r.column): r for r in report.rows}
    for index, prompt in enumerate(report.prompts):
        for seed in report.seeds:
            rows = [by_key.get((index, seed, c)) for c in range(len(report.columns))]
            if not any(rows):
                continue
            query = compare_query(prompt, link_columns, settings, seed, compare_columns)
            link = (f'<a href="{html.escape(query)}" target="_blank" class="open-compare">open in Compare</a>'
                    if query else "<small>multi-turn: Compare takes one turn</small>" if prompt.history
                    else "<small>columns do not fit Compare</small>")
            text = prompt.text if len(prompt.text) <= PREVIEW_CHARS else prompt.text[:PREVIEW_CHARS] + "…"
            turns = f" <small>({len(prompt.history) + 1} turns)</small>" if prompt.history else ""
            seed_note = f" <small>seed {seed}</small>" if len(report.seeds) > 1 else ""
            cells = []
            for row in rows:
                if row is None:
                    cells.append("<td>—</td>")
                    continue
                answer = html.escape(row.text) or "<i>(empty)</i>"
                cells.append(f'<td><details><summary>{html.escape(row.stop_reason)} · {row.length} tok'
                             f'{"" if row.ends_sentence else " · mid-sentence"}</summary>'
                             f'<div class="answer">{answer}</div></details></td>')
            body.append(f"<tr><td><small>{html.escape(prompt.where)}</small>{seed_note}<br>{html.escape(text)}{turns}"
                        f"<br>{link}</td>{''.join(cells)}</tr>")
    return (f'{TABLE_CSS}<table class="evaluate-prompts"><thead><tr><th>prompt</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def progress_of(evaluation) -> tuple:
    """gr.Progress arguments for a running evaluation: rows done of the total, and in words the tokens decoded,
    the rows in flight and the time left."""
    now = evaluation.progress()
    left = "estimating the time left" if now["seconds_left"] is None else f"about {now['seconds_left']:.0f} s left"
    return ((now["done"], now["total"]), f"{now['tokens']} tokens decoded · {now['in_flight']} rows in flight · {left}")


def evaluate_tab(playground: Playground) -> None:
    choices = list(INTERVENTION_NAMES)  # short chips, as in Compare (its accordion says what each does)
    policy = playground.policy
    max_columns = min(MAX_COLUMNS, policy.max_columns)

    def model_chips() -> list[str]:
        """A column's model as one more chip of its picker, as in Compare: "@base" or "@NAME"."""
        models = playground.column_models()
        return [f"@{model}" for model in models] if len(models) > 1 else []

    with gr.Tab("Evaluate") as tab:
        holder = gr.State({})  # per session: the running evaluation (for Stop)
        gr.Markdown("Run columns over many prompts and compare them in numbers: how often each ends with EOS, "
                    "hits the limit, loops or stops mid-sentence, how long the answers are, and how far the fix "
                    "bends the model (NLL per token under the raw model). A **sweep** tunes the EOS ramp over a "
                    "grid and names the best cell.")
        with gr.Row():
            with gr.Column(scale=3):
                upload = gr.File(height=120, label="Prompt file (empty: the built-in set of 30 prompts) — .jsonl with 'prompt' "
                                       "or 'messages' per line, .csv with a 'prompt' column, or one prompt per line",
                                 file_types=[".jsonl", ".json", ".csv", ".txt"], elem_id="evaluate-file")
                sweep = gr.Textbox(label="Sweep eos_reward (optional; columns become baseline + one per cell)",
                                   placeholder="reward_start_ratio=0.3,0.5,0.7 strength=4,8,12,16 at_boundary=true,false")
            with gr.Column(scale=2):
                controls = {"max_new_tokens": max_new_tokens_control(
                                policy.max_new_tokens, min(D["max_new_tokens"], policy.max_new_tokens), "evaluate-max-new"),
                            "temperature": control("temperature")}
                with gr.Accordion("More settings", open=False):
                    seeds = gr.Number(value=1, precision=0, label="Seeds per prompt (when sampling)")
                    controls.update({name: control(name) for name in EVALUATE_SETTINGS if name not in controls})
        n_columns = gr.Radio([n for n in range(1, max_columns + 1)], value=min(2, max_columns), label="Columns")
        pickers, boxes = [], []
        with gr.Row(equal_height=False):
            for index in range(max_columns):
                with gr.Column(visible=index < 2, min_width=200) as box:
                    pickers.append(gr.Dropdown([*choices, *model_chips()],
                                               value=[[], ["eos_reward"], ["stop_strings"], ["ban_eos"]][index],
                                               multiselect=True, label=f"Column {index + 1} (none = baseline; "
                                               "@NAME: the model)", elem_id=f"evaluate-picker-{index}"))
                boxes.append(box)
        # As on the Compare tab: a column's own parameters; what it leaves out takes the settings above.
        with gr.Accordion("Each column's own parameters", open=False, elem_id="evaluate-column-params"):
            param_boxes = [gr.Textbox("", label=f"Column {index + 1}", max_lines=1, visible=index < 2,
                                      placeholder="e.g. strength=8, reward_start_ratio=0.4 (empty: shared)",
                                      elem_id=f"evaluate-params-{index}")
                           for index in range(max_columns)]
        with gr.Row():
            run = gr.Button("Evaluate", variant="primary", elem_id="evaluate-run")
            stop = gr.Button("Stop (keeps what finished)", variant="stop", elem_id="evaluate-stop")
        elsewhere = gr.Markdown(elem_id="evaluate-elsewhere")  # an evaluation another page started
        status = gr.Markdown(elem_id="evaluate-status")
        summary = gr.Dataframe(headers=SUMMARY_HEADERS, label="Per column — rates: share of rows [95 % Wilson interval]",
                               interactive=False, wrap=True, elem_id="evaluate-summary")
        with gr.Row():
            lengths_plot = gr.Plot(label="Answer lengths", elem_id="evaluate-lengths")
            reasons_plot = gr.Plot(label="Stop reasons", elem_id="evaluate-reasons")
        sweep_plot = gr.Plot(label="Sweep", visible=False)
        best_code = gr.Code(language="python", label="The best cell as code", visible=False)
        prompts_view = gr.HTML(elem_id="evaluate-prompts")
        with gr.Row():
            download_json = gr.DownloadButton("Download report (JSON)", visible=False, elem_id="evaluate-json")
            download_csv = gr.DownloadButton("Download rows (CSV)", visible=False, elem_id="evaluate-csv")

    def on_run(state, upload_, sweep_, seeds_, n_columns_, *values, progress=gr.Progress()):
        """The evaluation with the progress bar moving, then the report. A generator, so that a page that leaves
        closes it (Gradio does, at a yield), which stops the evaluation and frees its rows."""
        settings, rest = dict(zip(EVALUATE_SETTINGS, values)), values[len(EVALUATE_SETTINGS):]
        picked, params = rest[:max_columns], rest[max_columns:]
        try:
            evaluation = playground.evaluation(
                Path(upload_) if upload_ else "builtin", page_columns(n_columns_, picked, params),
                sweep=sweep_ or "", seeds=seeds_, **settings)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "Evaluate", error, page=True) from None
        state["evaluation"] = evaluation
        progress((0, evaluation.total), desc="starting", unit="rows")
        try:
            for _ in paced(playground.stream(evaluation), PROGRESS_INTERVAL):
                progress(*progress_of(evaluation), unit="rows")
                yield {holder: state}  # nothing new on the page: the bar shows the progress
        finally:
            state.pop("evaluation", None)
        report = evaluation.report()
        files = write_downloads({"evaluation.json": report.to_json(indent=1), "evaluation.csv": report.rows_csv()},
                                "evaluation-")
        best = report.best_cell()
        lines = [f"**{len(report.rows)} of {report.expected_rows} rows** · {len(report.prompts)} prompts × "
                 f"{len(report.columns)} columns × {len(report.seeds)} seed(s) in {report.wall_seconds:.1f} s"
                 + ("" if report.complete else " · **stopped**: the report holds the rows that finished")]
        if best:
            lines.append(f"**Best cell: {md_text(best['name'])}** — clean stop "
                         f"{best['clean_stop_rate']['rate']:.0%}, mean length {best['mean_length']:.1f} tokens "
                         f"(rule: {best['rule']}).")
        models = report.models()
        if models:
            lines.append("**Stops best, per model** (its cleanest column): " + "; ".join(
                f"{md_text(m['model'])} {m['clean_stop_rate']['rate']:.0%} ({md_text(m['column'])})"
                for m in models))
        lines += [f"- skipped: {md_text(p)}" for p in report.problems]
        yield [state, "\n\n".join(lines), report.summary_rows(), length_figure(report),
                stop_reasons_figure(report),
                gr.update(value=sweep_figure(report), visible=report.sweep is not None),
                gr.update(value=best["code"] if best else "", visible=best is not None),
                prompts_html(report, max_columns),
                gr.update(value=files[0], visible=True), gr.update(value=files[1], visible=True)]

    def others(state) -> list:
        """The running evaluations this page may see and stop besides its own: every other page's and program's on
        a local app, none on a public one (a stranger's evaluation is theirs)."""
        own = state.get("evaluation") if isinstance(state, dict) else None
        return [] if policy.public else [e for e in playground.running_evaluations() if e is not own and not e.cancelled]

    def on_stop(state):
        """Stop this page's evaluation, else (local app) the ones other pages left running."""
        evaluation = state.get("evaluation")
        for stopped in [evaluation] if evaluation is not None else others(state):
            stopped.cancel()

    def on_elsewhere(state):
        """What runs elsewhere (Stop stops it), and the pickers' model chips as served now."""
        lines = []
        for evaluation in others(state):
            now = evaluation.progress()
            lines.append(f"An evaluation started elsewhere (another page or a program) is running: {now['done']} of "
                         f"{now['total']} rows done. **Stop** stops it (the rows that finished are kept).")
        return ["\n\n".join(lines), *[gr.update(choices=[*choices, *model_chips()]) for _ in pickers]]

    def on_columns(n):
        try:
            n = check_whole(n, "Columns", 1, max_columns)
        except ValueError as error:
            raise refusal(playground, "Evaluate columns", error, page=True) from None
        return [gr.update(visible=i < n) for i in range(max_columns)] * 2  # the pickers' boxes, the parameter boxes

    run.click(on_run, [holder, upload, sweep, seeds, n_columns, *[controls[name] for name in EVALUATE_SETTINGS], *pickers,
                       *param_boxes],
              [holder, status, summary, lengths_plot, reasons_plot, sweep_plot, best_code, prompts_view,
               download_json, download_csv],
              concurrency_id="model", concurrency_limit=1, api_visibility="private")
    stop.click(on_stop, holder, None, queue=False, api_visibility="private").then(
        on_elsewhere, holder, [elsewhere, *pickers], queue=False, api_visibility="private")
    tab.select(on_elsewhere, holder, [elsewhere, *pickers], queue=False, api_visibility="private")
    n_columns.change(on_columns, n_columns, [*boxes, *param_boxes], queue=False, api_visibility="private")
