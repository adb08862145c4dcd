"""The fine-tune lab's seconds per step (SFTTrainer as the lab configures it) against a plain PEFT loop that
trains the same adapter on the very batches the trainer took, step for step in the same run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .decoding import spread

# The Trainer's defaults the lab keeps, which the plain loop applies too so that it trains the same adapter.
TRAINER_WEIGHT_DECAY = 0.0
TRAINER_MAX_GRAD_NORM = 1.0


def bench_finetune(steps: int = 4) -> dict:
    """Seconds per step of the fine-tune lab's default ``correct`` recipe (LoRA r 16 on all linear layers, batch 4,
    the built-in set; the trainer :class:`~playground.finetune.train.FineTune` builds) against a plain PEFT loop —
    forward, backward, gradient clipping, AdamW — from the same LoRA initialisation on its own copy of the embedded
    model. After each trainer step the loop takes its step on the batch the trainer's collator just built, so both
    see the machine as it is at that moment (other processes come and go). A trainer step is timed from the end
    of the loop's previous step to its own end: it includes what the trainer does between steps (fetching and
    collating the batch, logging, callbacks). The first step of each warms up and is not timed. Same result: the
    loop's losses match the ones the trainer logged."""
    from peft import get_peft_model
    from transformers import TrainerCallback

    from playground.finetune.data import builtin_data
    from playground.finetune.train import FineTune, TrainConfig, lora_config
    from playground.models import load_model

    config = TrainConfig(steps=steps + 1)
    bundle = load_model()
    torch.manual_seed(config.seed)  # as the lab does before SFTTrainer adds the LoRA layers
    plain = get_peft_model(bundle.model, lora_config(config))
    plain.train()
    trained = [p for p in plain.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=TRAINER_WEIGHT_DECAY)
    batches, sft_steps, plain_steps, plain_losses, trainer_losses = [], [], [], [], []
    sft_cpu, plain_cpu = [], []  # the same steps in this process's CPU time, which other processes do not change

    def plain_step(batch) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        loss = plain(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, TRAINER_MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad()
        plain_steps.append(time.perf_counter() - started)
        plain_cpu.append(time.process_time() - cpu)
        plain_losses.append(loss.item())

    class Interleave(TrainerCallback):
        resumed = None  # when the trainer got the machine back after the loop's last step (wall, CPU time)

        def on_step_begin(self, args, state, control, **kwargs):
            if self.resumed is None:
                self.resumed = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            sft_steps.append(time.perf_counter() - self.resumed[0])
            sft_cpu.append(time.process_time() - self.resumed[1])
            plain_step(batches[state.global_step - 1])  # the collator may run a batch ahead of the step
            self.resumed = time.perf_counter(), time.process_time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                trainer_losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as folder:
        job = FineTune(load_model(), builtin_data(), config, Path(folder) / "adapter")
        collate = job.collator

        def recorded(examples):
            batch = collate(examples)
            batches.append({name: tensor.clone() for name, tensor in batch.items()})
            return batch

        job.collator = recorded
        # The trainer the lab runs, without the lab's thread (whose callback only queues a copy of the progress).
        job._trainer(Interleave()).train()
    sft_steps, plain_steps = sft_steps[1:], plain_steps[1:]
    cpu_ratio = sum(sft_cpu[1:]) / sum(plain_cpu[1:])
    ratios = [s / p for s, p in zip(sft_steps, plain_steps)]
    sft_seconds, plain_seconds = sorted(sft_steps)[len(sft_steps) // 2], sorted(plain_steps)[len(plain_steps) // 2]
    difference = max(abs(a - b) for a, b in zip(trainer_losses, plain_losses))
    return {"steps_timed": steps, "sft_seconds_per_step": round(sft_seconds, 3),
            "plain_lora_seconds_per_step": round(plain_seconds, 3),
            # the median of the step-by-step ratios: each compares two steps taken one after the other
            "sft_vs_plain_lora": round(sorted(ratios)[len(ratios) // 2], 3),  # target <= 1.2
            "sft_vs_plain_lora_spread": spread(ratios),
            # in CPU time: on a busy machine the wall-time ratio swings with other processes, this one much less
            "sft_vs_plain_lora_cpu_time": round(cpu_ratio, 3),
            "trainer_losses": [round(loss, 4) for loss in trainer_losses],
            "plain_losses": [round(loss, 4) for loss in plain_losses],
            "largest_loss_difference": round(difference, 5), "same_losses": difference < 1e-3 * max(plain_losses),
            "default_steps": TrainConfig().steps, "default_correct_seconds": round(sft_seconds * TrainConfig().steps, 1)}
