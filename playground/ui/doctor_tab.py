"""The EOS doctor tab: checks the loaded model and tokenizer, optionally against a training sample."""

from __future__ import annotations

import gradio as gr

from ..service import Playground


def doctor_tab(playground: Playground) -> None:
    with gr.Tab("EOS doctor"):
        gr.Markdown("Checks the loaded model and tokenizer for the usual reasons a fine-tune never emits EOS. "
                    "Optionally add a JSONL training sample (`prompt`/`response` or `text` per line).")
        sample = gr.File(label="Training sample (JSONL, optional)", file_types=[".jsonl"])
        doctor_button = gr.Button("Examine the model")
        doctor_report = gr.Markdown()

    def on_doctor(sample_file):
        from ..doctor import diagnose, load_sample, report_markdown

        try:
            records = load_sample(sample_file) if sample_file else None
        except (OSError, ValueError) as error:
            raise gr.Error(f"training sample: {error}") from None
        return report_markdown(diagnose(playground.bundle, sample=records))

    doctor_button.click(on_doctor, sample, doctor_report, concurrency_id="model", concurrency_limit=1,
                        api_name="doctor")
