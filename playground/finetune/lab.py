"""The fine-tune lab inside the app: one training at a time, on its own copy of the loaded model, so visitors keep
decoding while it runs (they share the CPU, nothing waits on a lock); a second training is refused with a sentence
until the first ends or is stopped."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from ..service import Busy
from .data import builtin_data, parse_examples
from .recipes import collated_example, end_token_id, recipe_named
from .train import FineTune, TrainConfig

ADAPTERS_DIR = Path("adapters")  # local mode: adapters are written here, named by recipe and time


class Lab:
    def __init__(self, playground):
        self.playground = playground
        self._lock = threading.Lock()
        self.job: FineTune | None = None

    def data(self, path, recipe_name: str):
        """The uploaded file (capped by the policy's upload size) or the built-in set."""
        recipe = recipe_named(recipe_name)
        if not path:
            return builtin_data(conversations=recipe.conversations)
        path = Path(path)
        limit = self.playground.policy.max_upload_mb * 1024 * 1024
        if path.stat().st_size > limit:
            raise ValueError(f"data: the file is larger than {self.playground.policy.max_upload_mb:g} MB")
        kind = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        return parse_examples(path.read_bytes(), kind, path.name)

    def preview(self, recipe_name: str, path=None) -> tuple[list[int], list[int], set[int]]:
        """The first example as the recipe feeds it (after its collator): input ids, labels, end ids."""
        recipe = recipe_named(recipe_name)
        tokenizer = self.playground.bundle.tokenizer
        example = self.data(path, recipe_name).examples[0]
        fed = collated_example(tokenizer, example, recipe)
        return fed["input_ids"], fed["labels"], {end_token_id(tokenizer), *self.playground.bundle.info.eos_token_ids}

    def start(self, recipe_name: str, path, steps) -> FineTune:
        """A new job on a fresh copy of the loaded model (ValueError naming the field when refused)."""
        from ..models import load_model

        policy = self.playground.policy
        steps = policy.check_finetune(steps)
        data = self.data(path, recipe_name)
        with self._lock:
            if self.job is not None and not self.job.progress.done and self.job.thread_alive:
                p = self.job.progress
                raise Busy(f"finetune: a training is running (step {p.step} of {p.total}); wait for it to "
                                 "end or press Stop")
            root = ADAPTERS_DIR if policy.reveal_paths else Path(tempfile.gettempdir()) / "eos-playground-adapters"
            out = root / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"
            reference = self.playground.reference
            options = policy.options_for(reference, self.playground.load_options)
            bundle = load_model(reference, **options)  # its own copy: decoding goes on with the served one
            self.job = FineTune(bundle, data, TrainConfig(recipe=recipe_name, steps=steps), out,
                                base_reference=self.playground.shown_reference)
            return self.job

    def stop(self) -> bool:
        job = self.job
        if job is None or job.progress.done:
            return False
        job.stop()
        return True
