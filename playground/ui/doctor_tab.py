"""The EOS doctor tab: checks the loaded model and tokenizer, optionally against a training sample."""

from __future__ import annotations

import gradio as gr

from ..service import Playground
from .errors import from_page, refusal


def doctor_tab(playground: Playground) -> None:
    with gr.Tab("EOS doctor"):
        gr.Markdown("Checks the loaded model and tokenizer for the usual reasons a fine-tune never emits EOS. "
                    "Optionally add a JSONL training sample (`prompt`/`response` or `text` per line).")
        sample = gr.File(label="Training sample (JSONL, optional)", file_types=[".jsonl"])
        doctor_button = gr.Button("Examine the model")
        doctor_report = gr.Markdown()

    def on_doctor(sample_file, event: gr.EventData):
        from ..doctor import diagnose, report_markdown

        try:
            records = playground.read_sample(sample_file)  # size cap first; messages name no server path
        except ValueError as error:
            raise refusal(playground, "/doctor", error, page=from_page(event)) from None
        return report_markdown(diagnose(playground.bundle, sample=records))

    doctor_button.click(on_doctor, sample, doctor_report, concurrency_id="model", concurrency_limit=1,
                        api_name="doctor")
