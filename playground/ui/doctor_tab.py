"""The EOS doctor tab: checks the loaded model and tokenizer, optionally against a training sample, and hands out
the repaired config/tokenizer files as a zip."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from ..service import TRACE_MAX_AGE, Playground
from .errors import from_page, refusal


def doctor_tab(playground: Playground) -> None:
    with gr.Tab("EOS doctor"):
        gr.Markdown("Checks the loaded model and tokenizer for the usual reasons a fine-tune never emits EOS. "
                    "Optionally add a JSONL training sample (`prompt`/`response`, `text`, `messages` or "
                    "`input_ids`/`labels` per line).")
        sample = gr.File(label="Training sample (JSONL, optional)", file_types=[".jsonl"], height=120,
                         elem_id="doctor-sample")
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

    def shown(progress: gr.Progress):
        """The doctor's on_check: the page's progress bar names the check that is running."""
        return lambda index, count, words: progress((index, count), desc=f"checking: {words}", unit="checks")

    def on_doctor(sample_file, event: gr.EventData, progress=gr.Progress()):
        from ..doctor import diagnose, report_markdown

        return report_markdown(diagnose(playground.bundle, sample=read_sample(sample_file, event), on_check=shown(progress)),
                               page=from_page(event))

    def on_fix(sample_file, event: gr.EventData, progress=gr.Progress()):
        from ..doctor import diagnose, report_markdown, zip_fixes

        bundle = playground.bundle
        findings = diagnose(bundle, sample=read_sample(sample_file, event), on_check=shown(progress))
        archive = zip_fixes(bundle, findings, Path(tempfile.gettempdir()) / "eos-playground-fixes",
                            max_age_seconds=TRACE_MAX_AGE, reveal_paths=playground.policy.reveal_paths)
        fixes = (archive.parent / "repaired" / "FIXES.md").read_text(encoding="utf-8")
        return gr.update(value=str(archive), visible=True), fixes, report_markdown(findings, page=from_page(event))

    def on_example(sample_file, number, event: gr.EventData):
        from ..doctor import example_view
        from ..supervision import STYLE, to_html

        sample = read_sample(sample_file, event)
        try:
            if sample is None:
                raise ValueError("example: upload a training sample first")
            tokens, how = example_view(playground.bundle, sample, int(number) if number is not None else 0)
        except ValueError as error:
            raise refusal(playground, "/doctor_example", error, page=from_page(event)) from None
        return f"<style>{STYLE}</style><p>{html.escape(how)}</p>{to_html(tokens)}"

    example_button.click(on_example, [sample, example_number], example_html, concurrency_id="model",
                         concurrency_limit=1, api_name="doctor_example")
    doctor_button.click(on_doctor, sample, doctor_report, concurrency_id="model", concurrency_limit=1,
                        api_name="doctor")
    fix_button.click(on_fix, sample, [fixes_file, fixes_summary, doctor_report], concurrency_id="model",
                     concurrency_limit=1, api_name="doctor_fix")
