"""The fine-tune lab's seconds per step (SFTTrainer) against a plain PEFT loop on the same batches."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

def bench_finetune(steps: int = 4) -> dict:
    """Seconds per step of the fine-tune lab's default ``correct`` recipe (SFTTrainer, LoRA r 16 on all linear
    layers, batch 4, the built-in set) against a plain PEFT loop on the same batches (forward, backward, AdamW),
    each on a fresh copy of the embedded model, in the same run."""
    from peft import LoraConfig, get_peft_model

    from playground.finetune.data import builtin_data
    from playground.finetune.recipes import RECIPES, collator_for, encode
    from playground.finetune.train import FineTune, TrainConfig
    from playground.models import load_model

    config = TrainConfig()
    with tempfile.TemporaryDirectory() as folder:
        job = FineTune(load_model(), builtin_data(), TrainConfig(steps=steps + 1), Path(folder) / "adapter")
        marks = [(p.step, p.elapsed) for p in job.run()]
    first, last = marks[0], marks[-1]  # the first step warms up: time the rest
    sft_seconds = (last[1] - first[1]) / (last[0] - first[0])
    bundle = load_model()
    model = get_peft_model(bundle.model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    recipe = RECIPES["correct"]
    examples = [encode(bundle.tokenizer, e, recipe) for e in builtin_data().examples]
    collate = collator_for(bundle.tokenizer, recipe)
    times = []
    for step in range(steps + 1):
        batch = collate(examples[step * config.batch_size:(step + 1) * config.batch_size])
        started = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    plain_seconds = sum(times[1:]) / steps
    return {"steps_timed": steps, "sft_seconds_per_step": round(sft_seconds, 3),
            "plain_lora_seconds_per_step": round(plain_seconds, 3),
            "sft_vs_plain_lora": round(sft_seconds / plain_seconds, 3),
            "default_steps": config.steps, "default_correct_seconds": round(sft_seconds * config.steps, 1)}
