"""Endpoints for programs (gradio_client, REST): /compare streams a comparison as deltas (the event schema is in
:mod:`playground.stream`), /trace returns a finished one whole, /info says what is served, /evaluate runs columns
over a prompt set, /export_code writes one column's fix as code,
/export_html a comparison as one HTML file. Their parameters are the run settings of
:mod:`playground.request` (same names, defaults and rules as the page, the links and the CLI;
tests/engine/test_request.py checks that none is missing)."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from ..request import DEFAULTS as D
from ..request import SETTINGS, parse_bool
from ..handover import export_html
from ..service import RUNS_AT_ONCE, Playground, write_downloads
from ..stream import DeltaStream
from ..decoder import RunStopped
from .errors import refusal, stopped
from .streaming import API_INTERVAL, PROGRESS_INTERVAL, paced

COMPARE_FIELDS = (*SETTINGS, "columns", "branches")
COLUMNS_HELP = """columns: one column each, as text ("baseline", "eos_reward(strength=8)+stop_strings",
        "ban_eos@base") or JSON (a list of names or {"name": ..., "params": {...}}, or {"model": ..., "interventions":
        [...]}); parameters a column leaves out take the shared settings (default: baseline and eos_reward)."""


def api_endpoints(playground: Playground) -> None:
    def compare(prompt: str = D["prompt"], columns: list | None = None, max_new_tokens: int = D["max_new_tokens"],
                temperature: float = D["temperature"], top_p: float = D["top_p"], top_k: int = D["top_k"],
                seed: int = D["seed"], reward_start_ratio: float = D["reward_start_ratio"],
                strength: float = D["strength"], stop_strings: str = D["stop_strings"],
                min_new_tokens: int = D["min_new_tokens"], use_chat_template: bool = D["use_chat_template"],
                system_prompt: str = D["system_prompt"], repetition_penalty: float = D["repetition_penalty"],
                no_repeat_ngram_size: int = D["no_repeat_ngram_size"], min_p: float = D["min_p"],
                typical_p: float = D["typical_p"], branches: list | None = None) -> Iterator[dict]:
        """Stream a comparison. Each event carries, per column, only the steps and text added since the previous
        one and the column's status; the first also says what is decoded (model, prompt, settings, columns), the
        last ("done": true) each column's summary and a trace_id for /trace. Columns are keyed by their name, the
        column's text form.

        {columns} With adapters loaded, the default puts the base model's baseline first.
        branches: [column, step, token_id] triples decoded once the columns have finished.
        """
        request = {name: value for name, value in locals().items() if name in COMPARE_FIELDS}
        try:
            comparison = playground.comparison(**request)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "/compare", error, page=False) from None
        try:
            traces = paced(playground.stream(comparison), API_INTERVAL, final=lambda trace: comparison.done)
            yield from DeltaStream(comparison).events(traces, playground.keep_trace)
        except RunStopped as error:  # out of memory, or a failed step: this run only, said in a sentence
            raise stopped(playground, error, page=False) from None

    compare.__doc__ = compare.__doc__.format(columns=COLUMNS_HELP)
    # Runs share the model's decode loop (one batch, one forward pass per step for every visitor's rows): they do
    # not queue behind each other; /load_model and /doctor keep the "model" group and wait for rows in flight.
    gr.api(compare, api_name="compare", concurrency_id="decode", concurrency_limit=RUNS_AT_ONCE)

    def trace(trace_id: str, stages: bool = False) -> dict:
        """A finished comparison's whole trace (the CLI's --json schema), by the trace_id of /compare's last
        event; stages=True adds the distribution after each stage of every step (large)."""
        try:
            stages = parse_bool(stages, "stages")
            return playground.trace(trace_id).to_dict(stages=stages)
        except ValueError as error:
            raise refusal(playground, "/trace", error, page=False) from None

    gr.api(trace, api_name="trace", queue=False)

    def info() -> dict:
        """The model being served, the models a column may pick (models; checkpoints: the second full checkpoints,
        name -> reference), this app's limits, how many comparisons and evaluations are decoding right now
        (active_generations) and doctor runs working (active_examinations), and the KV cache
        against its budget: kv_budget_mb, kv_in_use_mb, kv_peak_mb (since start), kv_padding_fraction, rows_waiting."""
        return playground.info()

    gr.api(info, api_name="info", queue=False)

    def evaluate(prompts: list | str = "builtin", columns: list | None = None, sweep: str = "", seeds: int = 1,
                 max_new_tokens: int = D["max_new_tokens"], temperature: float = D["temperature"],
                 top_p: float = D["top_p"], top_k: int = D["top_k"], seed: int = D["seed"],
                 reward_start_ratio: float = D["reward_start_ratio"], strength: float = D["strength"],
                 stop_strings: str = D["stop_strings"], min_new_tokens: int = D["min_new_tokens"],
                 use_chat_template: bool = D["use_chat_template"], system_prompt: str = D["system_prompt"],
                 repetition_penalty: float = D["repetition_penalty"], no_repeat_ngram_size: int = D["no_repeat_ngram_size"],
                 min_p: float = D["min_p"], typical_p: float = D["typical_p"]) -> Iterator[dict]:
        """Evaluate columns over a prompt set. Streams {"done", "total", "problems"} as rows finish, then one last
        event with "report" (the CLI's --json object).

        prompts: "builtin" or a list of strings / {"prompt": ...} / {"messages": [...]} objects.
        columns: as /compare's (default: baseline and eos_reward).
        sweep: e.g. "reward_start_ratio=0.3,0.5,0.7 strength=4,8,12,16" (columns become baseline + one per cell).
        """
        settings = {name: value for name, value in locals().items() if name in SETTINGS}
        try:
            evaluation = playground.evaluation(prompts, columns, sweep=sweep, seeds=seeds, **settings)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "/evaluate", error, page=False) from None
        yield {"done": 0, "total": evaluation.total, "problems": evaluation.problems, "report": None}
        try:
            for done in paced(playground.stream(evaluation), PROGRESS_INTERVAL):
                if done < evaluation.total:  # the last event carries the report
                    yield {"done": done, "total": evaluation.total, "problems": evaluation.problems, "report": None}
        except RunStopped as error:  # out of memory, a failed step, the server shutting down: said in a sentence
            raise stopped(playground, error, page=False) from None
        report = evaluation.report()
        yield {"done": len(report.rows), "total": evaluation.total, "problems": report.problems,
               "report": report.to_dict()}

    gr.api(evaluate, api_name="evaluate", concurrency_id="model", concurrency_limit=1)


def export_endpoint(playground: Playground) -> None:
    def export_code(prompt: str = D["prompt"], interventions: list | str | None = None, kind: str = "generate",
                    max_new_tokens: int = D["max_new_tokens"], temperature: float = D["temperature"],
                    top_p: float = D["top_p"], top_k: int = D["top_k"], seed: int = D["seed"],
                    reward_start_ratio: float = D["reward_start_ratio"], strength: float = D["strength"],
                    stop_strings: str = D["stop_strings"], min_new_tokens: int = D["min_new_tokens"],
                    use_chat_template: bool = D["use_chat_template"], system_prompt: str = D["system_prompt"],
                    repetition_penalty: float = D["repetition_penalty"],
                    no_repeat_ngram_size: int = D["no_repeat_ngram_size"], min_p: float = D["min_p"],
                    typical_p: float = D["typical_p"]) -> str:
        """The page's "Copy this fix" for one column: Python that needs only torch and transformers.

        interventions: the column, in any form one of /compare's columns takes (none = baseline); kind:
        "generate" (a script), "pipeline" (a script) or "kwargs" (the arguments for your own generate() call).
        The other fields are /compare's.
        """
        settings = {name: value for name, value in locals().items() if name in SETTINGS}
        try:
            comparison = playground.comparison(columns=[interventions], **settings)
            return playground.export(comparison, kind)
        except (ValueError, TypeError) as error:
            raise refusal(playground, "/export_code", error, page=False) from None

    gr.api(export_code, api_name="export_code", queue=False)


def handover_endpoint(playground: Playground) -> None:
    """/export_html: a finished comparison as one self-contained HTML file (see :mod:`playground.handover`), by
    the trace_id of /compare's last event. A file, so it is an event with a file output (gradio_client saves it
    and returns its path); the components are hidden, the page has its own button."""
    trace_id_box = gr.Textbox(visible=False)
    html_file = gr.File(visible=False)

    def export_html(trace_id: str) -> str:
        """The comparison of trace_id (from /compare's last event) as one HTML file that opens offline: the columns,
        the chart, every step's inspector, Copy this fix per column and Replay; the app opens it again."""
        try:
            trace = playground.trace(trace_id)
        except ValueError as error:
            raise refusal(playground, "/export_html", error, page=False) from None
        return write_html(playground, trace)

    button = gr.Button(visible=False)
    button.click(export_html, trace_id_box, html_file, api_name="export_html", concurrency_id="handover",
                 concurrency_limit=2)


def write_html(playground: Playground, trace) -> str:
    """The trace's HTML file written for download (aged out with the trace files); its path."""
    [path] = write_downloads({"eos-playground.html": export_html(playground, trace)}, "handover-")
    return path
