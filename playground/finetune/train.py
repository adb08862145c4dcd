"""Train a LoRA adapter with TRL's SFTTrainer, live and stoppable, and write it atomically with a card.

The recipe builds ``input_ids`` + ``labels`` (:mod:`.recipes`); TRL gets them pre-tokenized with the recipe's
collator, so what the tab previews is exactly what the model is trained on. A model loaded in 4-bit trains as
QLoRA (PEFT's k-bit preparation, as the article did on a T4). The adapter is a standard PEFT folder: load it with
``--adapter DIR``. Example::

    from playground.models import load_model
    from playground.finetune.data import builtin_data
    from playground.finetune.train import FineTune, TrainConfig

    job = FineTune(load_model(), builtin_data(), TrainConfig(recipe="correct", steps=40), "adapters/correct")
    for progress in job.run():
        print(progress.line())
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data import TrainingData
from .recipes import collator_for, encode, end_token_id, recipe_named

CARD_FILE = "finetune.json"
SAMPLE_FILE = "training_data.jsonl"
SAMPLE_EXAMPLES = 64  # examples written beside the adapter, as the recipe fed them (for the doctor)


@dataclass
class TrainConfig:
    recipe: str = "correct"
    steps: int = 40
    batch_size: int = 4
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    max_length: int = 512  # generous: a cut example loses its end token (the doctor's truncation check)
    seed: int = 0

    def check(self) -> None:
        recipe_named(self.recipe)
        for name, low, high in (("steps", 1, 100_000), ("batch_size", 1, 256), ("lora_r", 1, 1024),
                                ("lora_alpha", 1, 4096), ("max_length", 8, 1_000_000), ("seed", 0, 2**31 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be a number between 0 and 1, got {self.learning_rate!r}")


@dataclass
class Progress:
    step: int
    total: int
    loss: float | None
    elapsed: float  # seconds since the first step started
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) so far
    done: bool = False
    stopped: bool = False
    adapter: str | None = None  # the written folder, once done

    @property
    def seconds_per_step(self) -> float | None:
        return self.elapsed / self.step if self.step else None

    @property
    def seconds_left(self) -> float | None:
        return None if self.seconds_per_step is None else self.seconds_per_step * (self.total - self.step)

    def line(self) -> str:
        loss = f"loss {self.loss:.3f}" if self.loss is not None else "loss —"
        speed = f"{self.seconds_per_step:.2f} s/step" if self.seconds_per_step else "starting"
        left = f", ~{self.seconds_left:.0f} s left" if self.seconds_left is not None and not self.done else ""
        state = (" — stopped, adapter kept" if self.stopped else " — done") if self.done else ""  # once written
        return f"step {self.step}/{self.total} · {loss} · {speed}{left}{state}"


def check_out_dir(out_dir) -> Path:
    """The adapter's folder must not exist yet (nothing is overwritten) and its parent must be creatable."""
    out = Path(out_dir).expanduser()
    if out.exists():
        raise ValueError(f"out: {out} already exists; give a new folder (nothing is overwritten)")
    return out


class FineTune:
    """One training run on ``bundle``'s model (it gets the LoRA layers: give it a model no one decodes with).

    :meth:`run` yields a :class:`Progress` after every step and writes the adapter at the end; :meth:`start` runs it
    in the background (the app's lab); :meth:`stop` (from any thread) ends the run after the current step and
    writes what was learned so far."""

    def __init__(self, bundle, data: TrainingData, config: TrainConfig, out_dir, *, base_reference: str = "default"):
        config.check()
        if bundle.info.adapter is not None:
            raise ValueError("model: an adapter is loaded on it; train on the base model (load it without --adapter)")
        self.bundle, self.data, self.config = bundle, data, config
        self.out = check_out_dir(out_dir)
        self.base_reference = base_reference
        self.recipe = recipe_named(config.recipe)
        tokenizer = bundle.tokenizer
        self.examples = [encode(tokenizer, e, self.recipe, config.max_length) for e in data.examples]
        self.collator = collator_for(tokenizer, self.recipe)
        self._stop = threading.Event()
        self.progress = Progress(0, config.steps, None, 0.0)
        self._running = False  # a started run is training or writing (a run that was never started is not)
        self.error: BaseException | None = None  # why the training thread failed, once it has
        self._events: queue.Queue | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Stop was pressed and the training has not ended yet."""
        return self._stop.is_set() and self._running

    def _trainer(self, callback):
        import torch
        from datasets import Dataset
        from transformers import Trainer
        from transformers.trainer_callback import PrinterCallback
        from trl import SFTConfig, SFTTrainer

        class LabTrainer(SFTTrainer):
            """SFTTrainer with the model's own loss. TRL's loss runs the LM head in chunks to also give entropy and
            top-1 accuracy for its logs (which the lab does not show): measured on the embedded model, CPU, it made
            a step 1.4x a plain PEFT loop's. The model's own loss is the same mean over the labelled tokens."""

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                inputs = {**inputs, "use_cache": False}  # a training step keeps no KV cache (TRL's loss says so too)
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        config = self.config
        cuda = self.bundle.device.type == "cuda"
        args = SFTConfig(
            output_dir=tempfile.mkdtemp(prefix="eos-finetune-"), max_steps=config.steps,
            per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
            lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[],
            disable_tqdm=True, seed=config.seed, data_seed=config.seed, max_length=config.max_length,
            gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=not cuda,
            dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        model = self.bundle.model
        torch.manual_seed(config.seed)  # the LoRA matrices' initialisation
        trainer = LabTrainer(model=model, args=args, train_dataset=Dataset.from_list(self.examples),
                             processing_class=self.bundle.tokenizer, data_collator=self.collator,
                             peft_config=lora_config(config), callbacks=[callback])
        trainer.remove_callback(PrinterCallback)  # progress is ours to show (tqdm, the tab), not a dict per step
        return trainer

    def start(self, events: queue.Queue | None = None) -> None:
        """Train in a thread of its own to the end (or to Stop), then write the adapter: the caller may leave (a page
        that closes) and the adapter is still written. ``events`` gets a :class:`Progress` copy after each step and
        ``"end"`` when the thread is done; :attr:`progress` always holds the state, :attr:`error` a failure."""
        self._events = events
        self._thread = threading.Thread(target=self._work, name="finetune", daemon=True)
        self._running = True
        self._thread.start()

    @property
    def running(self) -> bool:
        """Training or writing the adapter (a job that was never started is not)."""
        return self._running

    def run(self):
        """Train, yielding progress after each step; then yield the final progress once the adapter is written.
        Leaving early (Ctrl-C) stops the training after its current step and keeps what it learned."""
        events: queue.Queue = queue.Queue()
        self.start(events)
        try:
            while (event := events.get()) != "end":
                yield event
        finally:
            if self._thread.is_alive():
                self.stop()
            self._thread.join()
        if self.error is not None:
            raise self.error
        yield self.snapshot()

    def _work(self) -> None:
        """The training thread: train, write the adapter, take the LoRA layers off the model."""
        from transformers import TrainerCallback

        job = self
        started = {}

        class Report(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                started.setdefault("t", time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                job.progress.step = state.global_step
                job.progress.elapsed = time.perf_counter() - started["t"]
                if job._stop.is_set():
                    control.should_training_stop = True

            def on_log(self, args, state, control, logs=None, **kwargs):
                # The trainer logs a step's loss (logging_steps=1) right after its on_step_end: report the step
                # here, as a copy taken now (the training thread runs on while the reader draws it).
                if logs and "loss" in logs:
                    job.progress.losses.append((state.global_step, float(logs["loss"])))
                    job.progress.loss = float(logs["loss"])
                    if job._events is not None:
                        job._events.put(job.snapshot())

        try:
            trainer = self._trainer(Report())
            trainer.train()
            if self.progress.step == 0:
                raise RuntimeError("training stopped before its first step: no adapter was written")
            self.progress.stopped = self.progress.step < self.config.steps
            trained = trainer.model
            self.save(trained)
            self.bundle.model = trained.unload()  # the LoRA layers leave: the same model can train the next recipe
            self.progress.adapter = str(self.out)
            self.progress.done = True
        except BaseException as error:  # reported to whoever follows the job
            self.error = error
        finally:
            self._running = False
            if self._events is not None:
                self._events.put("end")

    def snapshot(self) -> Progress:
        """A copy of the progress now (the training thread goes on changing :attr:`progress`)."""
        p = self.progress
        return Progress(p.step, p.total, p.loss, p.elapsed, list(p.losses), p.done, p.stopped, p.adapter)

    def card(self) -> dict:
        p, config = self.progress, self.config
        info = self.bundle.info
        return {
            "recipe": config.recipe, "recipe_description": self.recipe.description,
            "data": self.data.describe(), "steps": p.step, "steps_planned": config.steps, "stopped_early": p.stopped,
            "base_model": {"reference": self.base_reference, "name": info.name, "quantize": info.quantize},
            "seed": config.seed, "config": asdict(config), "end_token_id": end_token_id(self.bundle.tokenizer),
            "final_loss": p.loss, "seconds": round(p.elapsed, 1),
            "seconds_per_step": round(p.seconds_per_step, 3) if p.seconds_per_step else None,
            "losses": p.losses,
        }

    def save(self, model) -> None:
        """Write the adapter, its card and the examples as trained into a staging folder beside ``out``, then
        rename it into place: ``out`` either does not exist or is complete."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        try:
            model.save_pretrained(staging)
            card = self.card()
            (staging / CARD_FILE).write_text(json.dumps(card, indent=1), encoding="utf-8")
            (staging / "README.md").write_text(card_markdown(card), encoding="utf-8")
            with (staging / SAMPLE_FILE).open("w", encoding="utf-8") as handle:
                for example in self.examples[:SAMPLE_EXAMPLES]:
                    handle.write(json.dumps(self.as_trained(example)) + "\n")
            os.rename(staging, self.out)  # atomic on one filesystem; refuses an existing non-empty folder
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def as_trained(self, example: dict) -> dict:
        """One example as the doctor should read it: the ids and labels after the recipe's collator (a pad-masking
        collator's -100 on the EOS shows in the labels), or the text when the labels add nothing to it."""
        batch = self.collator([example])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        if self.recipe.end == "text":  # the bug lives in the text: "...</s>" that splits
            return {"text": self.bundle.tokenizer.decode(ids, skip_special_tokens=False)}
        return {"input_ids": ids, "labels": labels}


def lora_config(config: TrainConfig):
    """The adapter the lab trains: LoRA of ``config``'s rank and alpha on every linear layer, no dropout."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")


def card_markdown(card: dict) -> str:
    data = card["data"]
    return (f"# LoRA adapter — recipe `{card['recipe']}`\n\n"
            f"Trained by the EOS Playground fine-tune lab: {card['recipe_description']}.\n\n"
            f"- base model: {card['base_model']['name']} (`{card['base_model']['reference']}`"
            + (f", {card['base_model']['quantize']}" if card['base_model']['quantize'] else "") + ")\n"
            f"- data: {data['source']}, {data['examples']} examples (sha256 {data['sha256'][:12]}…)\n"
            f"- steps: {card['steps']} of {card['steps_planned']}"
            + (" (stopped early)" if card["stopped_early"] else "") + f", seed {card['seed']}, "
            f"final loss {card['final_loss']:.3f}, {card['seconds_per_step']} s/step\n"
            f"- LoRA r {card['config']['lora_r']}, alpha {card['config']['lora_alpha']}, all linear layers, batch "
            f"{card['config']['batch_size']}, learning rate {card['config']['learning_rate']}\n\n"
            f"Load it: `python -m playground compare --adapter THIS_FOLDER --prompt \"What can I do in Paris?\"`. "
            f"`{SAMPLE_FILE}` holds the first examples as the recipe fed them: "
            f"`python -m playground doctor --adapter THIS_FOLDER --sample THIS_FOLDER/{SAMPLE_FILE}`.\n")
