"""The EOS doctor tab: checks the loaded model and tokenizer, optionally against a training sample, and hands out
the repaired config/tokenizer files as a zip."""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..service import TRACE_MAX_AGE, Playground
from .errors import from_page, refusal
from .page_input import picked_model
from .streaming import until_closed


@dataclass
class DoctorTab:
    """What other tabs drive: the Fine-tune tab's Diagnose opens this tab on an adapter with its sample."""

    tab: gr.Tab
    model: gr.Dropdown
    sample: gr.File
    report: gr.Markdown
    examine: Callable  # the Examine button's handler: (sample file, model, event, progress) -> report, a generator


def model_choices(playground: Playground) -> list[str]:
    """The models the doctor can examine, as a column picks them: @base, each adapter, each second checkpoint."""
    return [f"@{model}" for model in playground.column_models()]


def doctor_tab(playground: Playground, demo: gr.Blocks | None = None) -> DoctorTab:
    with gr.Tab("EOS doctor", id="doctor") as tab:
        gr.Markdown("Checks a served model and its tokenizer for the usual reasons a fine-tune never emits EOS. "
                    "Pick the model as a Compare column does (`@base`, a loaded adapter or checkpoint). "
                    "Optionally add a JSONL training sample (`prompt`/`response`, `text`, `messages` or "
                    "`input_ids`/`labels` per line; an adapter trained here has its own: `training_data.jsonl`).")
        with gr.Row():
            # Custom values: a program may name an adapter added after the page was built (checked by the handler).
            model = gr.Dropdown(model_choices(playground), value=f"@{playground.bundle.default_model}",
                                allow_custom_value=True, label="Model to examine", elem_id="doctor-model", scale=1)
            sample = gr.File(label="Training sample (JSONL, optional)", file_types=[".jsonl"], height=120,
                             elem_id="doctor-sample", scale=3)
        with gr.Row():
            doctor_button = gr.Button("Examine the model")
            fix_button = gr.Button("Download the repaired files (zip)")
        fixes_file = gr.File(label="Repaired files: generation_config.json, config.json, tokenizer files, FIXES.md",
                             visible=False)
        fixes_summary = gr.Markdown()
        # Room for the progress bar (which check is running) before the report arrives.
        doctor_report = gr.Markdown(min_height=120, elem_id="doctor-report")
        gr.Markdown("**Training-example view**: which tokens of one example are supervised, and is the end token one "
                    "of them? Read exactly as the checks read it.")
        with gr.Row():
            example_number = gr.Number(label="Example (from 1)", value=1, precision=0, minimum=1,
                                       elem_id="doctor-example-number")
            example_button = gr.Button("Show the example's tokens", elem_id="doctor-example-button")
        example_html = gr.HTML(elem_id="doctor-example")

    def read_sample(sample_file, event: gr.EventData | None):
        try:
            return playground.read_sample(sample_file)  # size cap first; messages name no server path
        except ValueError as error:
            raise refusal(playground, "/doctor", error, page=from_page(event)) from None

    def examined(model, endpoint: str, event: gr.EventData | None) -> str:
        """The picked model's name (base, an adapter, a checkpoint), or a refusal naming the field."""
        try:
            return picked_model(playground, model)
        except ValueError as error:
            raise refusal(playground, endpoint, error, page=from_page(event)) from None

    def diagnosis(sample_file, model, endpoint: str, event, progress, unchanged):
        """The picked model's findings and the report's title (which model it examined). A generator: the checks
        run in the background while it yields ``unchanged`` (the handler's outputs as they are) and moves the
        page's progress bar to the check that is running; a client that leaves closes it, and the doctor stops
        before its next check."""
        name = examined(model, endpoint, event)
        sample = read_sample(sample_file, event)
        running = {"check": (0, 1, "starting")}

        def checking(index: int, count: int, words: str) -> None:
            running["check"] = (index, count, words)

        def beat():
            index, count, words = running["check"]
            progress((index, count), desc=f"checking: {words}", unit="checks")
            return unchanged

        findings = yield from until_closed(
            lambda cancel: playground.diagnose(name, sample, on_check=checking, cancel=cancel), beat)
        return name, findings, f"EOS doctor — {playground.bundle.info.name} @{name}"

    def on_doctor(sample_file, model=None, event: gr.EventData = None, progress=gr.Progress()):
        from ..doctor import report_markdown

        _, findings, title = yield from diagnosis(sample_file, model, "/doctor", event, progress, gr.skip())
        yield report_markdown(findings, title=title, page=from_page(event))

    def on_fix(sample_file, model=None, event: gr.EventData = None, progress=gr.Progress()):
        from ..doctor import report_markdown, zip_fixes

        name, findings, title = yield from diagnosis(sample_file, model, "/doctor_fix", event, progress,
                                                     (gr.skip(),) * 3)
        archive = zip_fixes(playground.bundle.bundle_for(name), findings,
                            Path(tempfile.gettempdir()) / "eos-playground-fixes",
                            max_age_seconds=TRACE_MAX_AGE, reveal_paths=playground.policy.reveal_paths)
        fixes = (archive.parent / "repaired" / "FIXES.md").read_text(encoding="utf-8")
        yield (gr.update(value=str(archive), visible=True), fixes,
               report_markdown(findings, title=title, page=from_page(event)))

    def on_example(sample_file, number, model=None, event: gr.EventData = None):
        from ..doctor import example_view
        from ..supervision import STYLE, to_html

        sample = read_sample(sample_file, event)
        bundle = playground.bundle.bundle_for(examined(model, "/doctor_example", event))
        try:
            if sample is None:
                raise ValueError("example: upload a training sample first")
            tokens, how = example_view(bundle, sample, int(number) if number is not None else 0)
        except ValueError as error:
            raise refusal(playground, "/doctor_example", error, page=from_page(event)) from None
        return f"<style>{STYLE}</style><p>{html.escape(how)}</p>{to_html(tokens)}"

    def on_models(current):
        """The picker's choices as served now (adapters come and go); the pick stays while it is loaded."""
        choices = model_choices(playground)
        return gr.update(choices=choices, value=current if current in choices else f"@{playground.bundle.default_model}")

    example_button.click(on_example, [sample, example_number, model], example_html, concurrency_id="model",
                         concurrency_limit=1, api_name="doctor_example")
    doctor_button.click(on_doctor, [sample, model], doctor_report, concurrency_id="model", concurrency_limit=1,
                        api_name="doctor")
    fix_button.click(on_fix, [sample, model], [fixes_file, fixes_summary, doctor_report], concurrency_id="model",
                     concurrency_limit=1, api_name="doctor_fix")
    tab.select(on_models, model, model, queue=False, api_visibility="private")
    if demo is not None:
        demo.load(on_models, model, model, queue=False, api_visibility="private")
    return DoctorTab(tab, model, sample, doctor_report, on_doctor)
