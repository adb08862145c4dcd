"""The fine-tune lab inside the app: one training at a time, on its own copy of the loaded model, so visitors keep
decoding while it runs (they share the CPU, nothing waits on a lock); a second training is refused with a sentence
until the first ends or is stopped. The training belongs to the server, not to the page that started it: it runs
in a thread of its own and writes its adapter whether or not a page follows it, and any page reads its state."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from pathlib import Path

from ..models import check_model_name
from ..service import Busy
from .data import builtin_data, parse_examples
from .recipes import collated_example, end_token_id, recipe_named
from .train import FineTune, TrainConfig

# Local mode writes adapters here, each in a folder named like the adapter ($PLAYGROUND_ADAPTERS_DIR: elsewhere).
ADAPTERS_DIR = Path(os.environ.get("PLAYGROUND_ADAPTERS_DIR") or "adapters")


class Lab:
    def __init__(self, playground, config: TrainConfig | None = None):
        """``config``: the settings of every training here but its recipe and steps (default: TrainConfig's)."""
        self.playground = playground
        self.config = config or TrainConfig()
        self._lock = threading.Lock()
        self.job: FineTune | None = None  # the last training started, running or finished
        self.name: str | None = None  # its adapter's name (a column's @NAME once served)

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

    def folder_for(self, name) -> tuple[str, Path]:
        """The adapter's name and new folder: ``name`` (a column's ``@NAME``), or ``name-2``, ``name-3``... when
        its folder exists or a served model has the name already (nothing is overwritten). Local mode writes under
        ./adapters, public mode under the server's temporary folder."""
        name = check_model_name(name.strip() if isinstance(name, str) else name, "adapter")
        policy = self.playground.policy
        root = ADAPTERS_DIR if policy.reveal_paths else Path(tempfile.gettempdir()) / "eos-playground-adapters"
        taken = set(self.playground.column_models())
        candidate, number = name, 1
        while (root / candidate).exists() or candidate in taken:
            number += 1
            candidate = f"{name}-{number}"
        return candidate, (root / candidate).absolute()

    def start(self, recipe_name: str, path, steps, name=None) -> FineTune:
        """A new job on a fresh copy of the loaded model, training in the background; ``name`` (default: the
        recipe's) names the adapter and its folder. ValueError naming the field when refused."""
        from ..models import load_model

        policy = self.playground.policy
        steps = policy.check_finetune(steps)
        data = self.data(path, recipe_name)
        with self._lock:
            if self.job is not None and self.job.running:
                p = self.job.progress
                raise Busy(f"finetune: a training is running (step {p.step} of {p.total}); wait for it to "
                                 "end or press Stop")
            blank = name is None or (isinstance(name, str) and not name.strip())
            adapter_name, out = self.folder_for(recipe_name if blank else name)
            reference = self.playground.reference
            options = policy.options_for(reference, self.playground.load_options)
            bundle = load_model(reference, **options)  # its own copy: decoding goes on with the served one
            job = FineTune(bundle, data, dataclasses.replace(self.config, recipe=recipe_name, steps=steps), out,
                           base_reference=self.playground.shown_reference)
            job.start()
            self.job, self.name = job, adapter_name
            return job

    def stop(self) -> bool:
        """Stop the running training after its current step; it writes what it learned so far."""
        job = self.job
        if job is None or not job.running:
            return False
        job.stop()
        return True

    def serve(self) -> str:
        """Put the last finished adapter on the served model under its name (unless it is there already) and
        return the name; ValueError when there is none, or the policy refuses it."""
        job = self.job
        if job is None or not job.progress.done:
            raise ValueError("adapter: no training has finished yet; train one first")
        if self.playground.bundle.adapters.get(self.name) != job.progress.adapter:
            self.playground.add_adapter(f"{self.name}={job.progress.adapter}", trained_here=True)
        return self.name
