"""Decode several variants of one prompt side by side and record, step by step, why each stops.

All variants share one batch — with every other comparison running on the model (``decoder.DecodeLoop``):
one forward pass per step for every row that is still running, a KV cache, left padding where prompts differ
(e.g. a concise-answer suffix). Rows finish independently and are dropped from the batch (and its cache) as
they do. Every row samples with its own generator seeded
identically, so a difference between columns comes only from the interventions.

At each step, per row::

    raw logits ─► generation config's processors ─► row's interventions ─► temperature ─► top-k ─► top-p
               ─► sample (or argmax if T = 0)

and the trace records the chosen token, p(EOS) before and after, the top-k both ways, entropy and the
distribution after each stage.

    >>> from playground.models import load_model
    >>> from playground.engine import Settings, Variant, compare
    >>> bundle = load_model()
    >>> trace = compare(bundle, "What can I do in Paris?",
    ...                 [Variant("baseline"), Variant("eos_reward", ["eos_reward"])], Settings(max_new_tokens=64))
    >>> [v.stop_reason for v in trace.variants]  # doctest: +SKIP
    ['max_new_tokens', 'eos']
"""

from __future__ import annotations

import collections
import copy
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .interventions import Intervention, build_interventions, parse_interventions
from .models import LoadedModel
from .prompts import encode_prompt
from .trace import Stage, StepRecord, TopToken, Trace, VariantTrace

MAX_NEW_TOKENS_CAP = 2048
MAX_TEMPERATURE = 100.0
MAX_VARIANTS = 8


@dataclass
class Settings:
    """Decoding settings shared by every variant. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = 0
    use_chat_template: bool = True
    system_prompt: str | None = None
    telemetry_top_k: int = 10
    timeout_seconds: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, *, vocab_size: int, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP) -> None:
        """Raise ValueError naming the first field out of range; normalise whole numbers given as floats."""

        def number(name: str, value, kind=float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return kind(value)

        max_new = self.max_new_tokens = number("max_new_tokens", self.max_new_tokens, int)
        if not 1 <= max_new <= max_new_tokens_cap:
            raise ValueError(f"max_new_tokens must be between 1 and {max_new_tokens_cap}, got {max_new}")
        temperature = self.temperature = number("temperature", self.temperature)
        if not 0 <= temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {temperature:g}")
        top_p = self.top_p = number("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p:g}")
        top_k = self.top_k = number("top_k", self.top_k, int)
        if not 0 <= top_k <= vocab_size:
            raise ValueError(f"top_k must be between 0 (off) and the vocabulary size {vocab_size}, got {top_k}")
        seed = self.seed = number("seed", self.seed, int)
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be between 0 and {2**32 - 1}, got {seed}")
        telemetry_top_k = self.telemetry_top_k = number("telemetry_top_k", self.telemetry_top_k, int)
        if not 1 <= telemetry_top_k <= 100:
            raise ValueError(f"telemetry_top_k must be between 1 and 100, got {telemetry_top_k}")
        if self.timeout_seconds is not None and not number("timeout_seconds", self.timeout_seconds) > 0:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds!r}")


@dataclass
class Variant:
    """One column: a name and the interventions applied to it (names, dicts or Intervention objects)."""

    name: str
    interventions: Sequence[Intervention | dict | str] = field(default_factory=list)


def _visible(text: str, stop_strings: Sequence[str]) -> str:
    """Text safe to show while running: hold back a tail that could still grow into a stop string."""
    hold = 0
    for stop in stop_strings:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold]


def generation_config_processors(model, prompt_length: int, max_new_tokens: int) -> LogitsProcessorList:
    """The processors ``generate()`` adds on its own from the model's generation config: repetition penalty,
    suppressed or banned tokens, a minimum length, no-repeat n-grams... so a baseline column decodes the way the
    user's own ``generate()`` call does. Sampling (temperature, top-k, top-p) stays the playground's, as in an
    explicit ``generate(temperature=..., top_k=..., top_p=...)``. Built with transformers' own (private)
    helpers, the same ones ``generate()`` calls."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(base.generation_config)
    config.update(do_sample=False, max_new_tokens=max_new_tokens)
    config.max_length = prompt_length + max_new_tokens
    base._prepare_special_tokens(config, kwargs_has_attention_mask=True, device="cpu")
    return base._get_logits_processor(config, input_ids_seq_length=prompt_length, encoder_input_ids=None,
                                      logits_processor=LogitsProcessorList(), device="cpu", model_kwargs={})


class _Row:
    """Decoding state of one variant that the trace does not need to carry."""

    def __init__(self, variant: Variant, interventions: list[Intervention], prompt_ids: list[int]):
        self.variant = variant
        self.interventions = interventions
        self.prompt_ids = prompt_ids
        self.built = None  # BuiltInterventions, once the padded prompt length is known
        self.generator: torch.Generator | None = None
        self.decoded = ""  # decode() of the generated ids so far, EOS excluded
        self.attributed = 0  # characters of `decoded` already shown as some step's token text


class Comparison:
    """One prompt, several variants, decoded together. Validates everything before any decoding.

    Iterate :meth:`run` to decode; it yields the (same, updated) :class:`Trace` as rows advance. The rows are
    decoded by the model's :class:`~playground.decoder.DecodeLoop`, in one batch with every other comparison
    running on that model. :meth:`cancel` (from any thread) stops all rows within one step. A reader that needs
    a consistent view of a running trace (every column at the same step) holds :attr:`lock` while reading.
    """

    def __init__(self, bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings,
                 *, max_new_tokens_cap: int = MAX_NEW_TOKENS_CAP):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt is empty: type a question or some text for the model to continue")
        if not 1 <= len(variants) <= MAX_VARIANTS:
            raise ValueError(f"variants: give between 1 and {MAX_VARIANTS}, got {len(variants)}")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        settings.validate(vocab_size=bundle.info.vocab_size, max_new_tokens_cap=max_new_tokens_cap)
        self.bundle, self.settings = bundle, settings
        self._cancel = threading.Event()
        self.lock = threading.Lock()  # held by the decode loop while it steps this comparison's rows
        self._progress = threading.Condition()
        self._version, self._done, self._error = 0, False, None
        self._on_done = None
        self._started = 0.0
        tokenizer = bundle.tokenizer
        # Stop where generate() would stop (the generation config's EOS ids), so a column behaves like the
        # user's own code; an EOS the tokenizer knows but generation ignores is the doctor's business.
        self.eos_ids = list(bundle.info.stop_token_ids)

        rows = []
        for variant in variants:
            interventions = parse_interventions(list(variant.interventions))
            prompt_side = build_interventions(interventions, tokenizer=tokenizer, eos_token_ids=self.eos_ids,
                                              max_new_tokens=settings.max_new_tokens, prompt_length=None)
            use_template = settings.use_chat_template if prompt_side.use_chat_template is None else prompt_side.use_chat_template
            ids = encode_prompt(tokenizer, prompt + prompt_side.prompt_suffix, use_chat_template=use_template,
                                system_prompt=settings.system_prompt)
            rows.append(_Row(variant, interventions, ids))
        context = bundle.info.context_length
        longest = max(len(r.prompt_ids) for r in rows)
        if context and longest + settings.max_new_tokens > context:
            raise ValueError(
                f"prompt is {longest} tokens; with max_new_tokens {settings.max_new_tokens} that exceeds the "
                f"model's context window of {context} tokens. Shorten the prompt or lower max_new_tokens "
                f"to at most {max(context - longest, 0)}."
            )
        self.padded_length = longest
        for row in rows:
            row.built = build_interventions(row.interventions, tokenizer=tokenizer, eos_token_ids=self.eos_ids,
                                            max_new_tokens=settings.max_new_tokens, prompt_length=longest)
        self._rows = rows
        self._model_defaults = generation_config_processors(bundle.model, longest, settings.max_new_tokens)
        # The sampling stages, in generate()'s order; greedy decoding skips them as generate() does.
        self._warpers = []
        if not settings.greedy:
            self._warpers.append(("temperature", TemperatureLogitsWarper(float(settings.temperature))))
            if settings.top_k:
                self._warpers.append(("top_k", TopKLogitsWarper(int(settings.top_k))))
            if settings.top_p < 1:
                self._warpers.append(("top_p", TopPLogitsWarper(float(settings.top_p))))
        self._token_text: dict[int, str] = {}
        self.trace = Trace(
            model=bundle.info.name,
            prompt=prompt,
            settings=settings.to_dict(),
            variants=[VariantTrace(r.variant.name, [i.to_dict() for i in r.interventions], len(r.prompt_ids)) for r in rows],
        )

    def cancel(self) -> None:
        self._cancel.set()

    # -- one step's telemetry -------------------------------------------------------------------------

    def _token(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.bundle.tokenizer.decode([token_id])
        return self._token_text[token_id]

    def _stage(self, name: str, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        probs = torch.softmax(logits, dim=-1)
        top = torch.topk(probs, self.settings.telemetry_top_k, dim=-1)
        return probs, {
            "name": name,
            "p_eos": probs[:, self.eos_ids].sum(-1),
            "kept": (probs > 0).sum(-1),
            "top_ids": top.indices,
            "top_p": top.values,
        }

    def _telemetry(self, raw: torch.Tensor, stages: list[tuple[str, torch.Tensor]], chosen: torch.Tensor) -> list[StepRecord]:
        """Turn one step's tensors (rows × vocab) into a StepRecord per row, with one .tolist() per tensor."""
        p_raw, raw_stage = self._stage("raw", raw)
        stage_data = [raw_stage]
        p_final = p_raw
        for name, logits in stages:
            p_final, data = self._stage(name, logits)
            stage_data.append(data)
        # Top-k of whichever is larger, so a token the interventions promoted (EOS) shows beside the raw favourites.
        top_ids = torch.topk(torch.maximum(p_raw, p_final), self.settings.telemetry_top_k, dim=-1).indices
        columns = {
            "chosen": chosen,
            "p_eos_raw": raw_stage["p_eos"],
            "p_eos": stage_data[-1]["p_eos"],
            "entropy_raw": torch.special.entr(p_raw).sum(-1),
            "entropy": torch.special.entr(p_final).sum(-1),
            "top_ids": top_ids,
            "top_p_raw": p_raw.gather(-1, top_ids),
            "top_p": p_final.gather(-1, top_ids),
            "p_chosen_raw": p_raw.gather(-1, chosen[:, None])[:, 0],
            "p_chosen": p_final.gather(-1, chosen[:, None])[:, 0],
        }
        columns = {k: v.tolist() for k, v in columns.items()}
        stage_lists = [{k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in s.items()} for s in stage_data]
        records = []
        for r in range(raw.shape[0]):
            records.append(StepRecord(
                step=0,
                token_id=columns["chosen"][r],
                token=self._token(columns["chosen"][r]),
                p_eos_raw=columns["p_eos_raw"][r],
                p_eos=columns["p_eos"][r],
                p_chosen_raw=columns["p_chosen_raw"][r],
                p_chosen=columns["p_chosen"][r],
                entropy_raw=columns["entropy_raw"][r],
                entropy=columns["entropy"][r],
                top_k=[TopToken(t, self._token(t), pr, p) for t, pr, p in
                       zip(columns["top_ids"][r], columns["top_p_raw"][r], columns["top_p"][r])],
                stages=[Stage(s["name"], s["p_eos"][r], s["kept"][r],
                              [(t, self._token(t), p) for t, p in zip(s["top_ids"][r], s["top_p"][r])])
                        for s in stage_lists],
            ))
        return records

    # -- decoding: the model's DecodeLoop calls _begin, then _step until no row is left; _publish wakes run() --

    def _prefill(self):
        pad = self.bundle.tokenizer.pad_token_id
        width = self.padded_length
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in self._rows])
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in self._rows])
        return ids, mask

    def submit(self, on_done=None) -> None:
        """Hand this comparison's rows to its model's decode loop; ``on_done(self)`` is called when they finish."""
        from .decoder import decode_loop

        self._on_done = on_done
        decode_loop(self.bundle).submit(self)

    @property
    def done(self) -> bool:
        return self._done

    def run(self) -> Iterator[Trace]:
        """Decode every variant to its end, yielding the (same) trace whenever rows have advanced: after every step
        for a fast consumer, several steps at once for a slow one (decoding never waits on the consumer). The last
        yield is the finished trace. Closing the generator early cancels the rows."""
        self.submit()
        seen = 0
        try:
            while True:
                with self._progress:
                    self._progress.wait_for(lambda: self._version != seen)
                    seen = self._version
                if self._done:
                    break
                yield self.trace
        finally:
            if not self._done:  # closed early (a UI Stop, a closed page): cancel and wait for the loop to let go
                self.cancel()
                with self._progress:
                    self._progress.wait_for(lambda: self._done)
        if self._error is not None:
            raise self._error
        yield self.trace

    def _begin(self):
        """The rows join the batch: reset per-row state; return the prefill's (ids, mask)."""
        sequences, mask = self._prefill()
        self._sequences = sequences  # every row's ids so far (finished rows padded)
        for row in self._rows:
            row.generator = torch.Generator().manual_seed(int(self.settings.seed))
        self._started = time.perf_counter()
        self._step_index = 0
        return sequences, mask

    def _step(self, raw: torch.Tensor, active: list[int]) -> tuple[torch.Tensor | None, list[int]]:
        """One step for the rows ``active`` (original indices, in batch order) given their next-token logits
        ``raw``: choose, record, advance. Returns the chosen tokens and the slots (positions in ``active``) of
        the rows that keep decoding."""
        settings, step = self.settings, self._step_index
        reason = "cancelled" if self._cancel.is_set() else None
        if settings.timeout_seconds and time.perf_counter() - self._started > settings.timeout_seconds:
            reason = "timeout"
        if reason:
            for i in active:
                variant = self.trace.variants[i]
                variant.stop_reason, variant.wall_seconds = reason, time.perf_counter() - self._started
            return None, []
        sequences = self._sequences
        chosen, stages = self._choose(raw, [sequences[i:i + 1] for i in active], active)
        records = self._telemetry(raw, stages, chosen)
        sequences = self._sequences = torch.cat(
            [sequences, torch.full((len(self._rows), 1), self.bundle.tokenizer.pad_token_id)], dim=1)
        sequences[active, -1] = chosen
        still = []
        for slot, (i, record) in enumerate(zip(active, records)):
            record.step = step
            if self._advance(i, record, sequences[i:i + 1], raw[slot:slot + 1], self._started):
                still.append(slot)
        self._mark_divergence(step)
        self._step_index += 1
        return chosen, still

    def _publish(self, *, done: bool = False, error: BaseException | None = None) -> None:
        """Wake the consumer: rows advanced, or (``done``) every row has left the batch."""
        if done:
            for variant in self.trace.variants:
                if variant.stop_reason is None:  # left without a reason of its own: the loop was told to stop
                    variant.stop_reason = "cancelled"
                    variant.wall_seconds = time.perf_counter() - self._started if self._started else 0.0
        with self._progress:
            self._version += 1
            self._done, self._error = done, error
            self._progress.notify_all()
        if done and self._on_done is not None:
            self._on_done(self)

    def _choose(self, raw: torch.Tensor, row_ids: list[torch.Tensor], active: list[int]):
        """generate()'s own processors from the generation config, each row's interventions, then the shared
        sampling warpers; pick the next token per row."""
        processed = raw.clone()  # some processors (the seed article's) write into their input
        stages = []
        if self._model_defaults:  # generate() runs these before any custom processor
            processed = self._model_defaults(torch.cat(row_ids), processed)
            stages.append(("generation config", processed))
            processed = processed.clone()
        for slot, (i, ids) in enumerate(zip(active, row_ids)):
            processors = self._rows[i].built.logits_processors
            if processors:
                processed[slot:slot + 1] = processors(ids, processed[slot:slot + 1])
        stages.append(("interventions", processed))
        if self.settings.greedy:
            return processed.argmax(-1), stages
        logits = processed
        for name, warper in self._warpers:
            logits = warper(None, logits)
            stages.append((name, logits))
        probs = torch.softmax(logits, dim=-1)
        chosen = torch.cat([torch.multinomial(probs[slot], 1, generator=self._rows[i].generator)
                            for slot, i in enumerate(active)])
        return chosen, stages

    def _advance(self, i: int, record: StepRecord, ids: torch.Tensor, scores: torch.Tensor, started: float) -> bool:
        """Record one step for row ``i``; return whether the row keeps decoding. The record joins the trace last:
        a reader on another thread never sees a step whose text is not final yet."""
        row, variant = self._rows[i], self.trace.variants[i]
        variant.token_ids.append(record.token_id)
        variant.wall_seconds = time.perf_counter() - started
        stop_strings = row.built.stop_strings
        if record.token_id in self.eos_ids:
            variant.stop_reason = "eos"
        else:
            row.decoded = self.bundle.tokenizer.decode([t for t in variant.token_ids if t not in self.eos_ids])
            # The step's text is what it added to the whole decoded text: decoding a token alone drops
            # SentencePiece's leading space, and an emoji or CJK character split over several byte tokens
            # decodes to U+FFFD until its last byte arrives, so that text waits for the completing token.
            if row.decoded.endswith("\ufffd"):
                record.token = ""
            else:
                record.token, row.attributed = row.decoded[row.attributed:], len(row.decoded)
            fired = row.built.stop_reason(ids, scores)
            if fired:
                variant.stop_reason, variant.stop_detail = fired
            elif len(variant.token_ids) >= self.settings.max_new_tokens:
                variant.stop_reason = "max_new_tokens"
        if variant.stop_reason == "stop_string" and variant.stop_detail in row.decoded:
            variant.text = row.decoded[: row.decoded.rfind(variant.stop_detail)]
        elif variant.stop_reason is None:
            variant.text = _visible(row.decoded, stop_strings)
        else:
            variant.text = row.decoded
        variant.steps.append(record)
        return variant.stop_reason is None

    def _mark_divergence(self, step: int) -> None:
        """Rows advance in lockstep, so comparing this step's tokens finds the first difference."""
        base = self.trace.variants[0].token_ids
        for variant in self.trace.variants[1:]:
            ids = variant.token_ids
            if variant.diverges_at is None and step < min(len(ids), len(base)) and ids[step] != base[step]:
                variant.diverges_at = step


def run_all(comparisons: Sequence[Comparison], *, max_rows: int = 32) -> Iterator[Comparison]:
    """Decode many comparisons, at most ``max_rows`` rows at once (more join as rows finish), sharing forward
    passes; yield each comparison as it finishes, in finishing order. Closing the iterator cancels the rest.

        >>> for done in run_all([Comparison(bundle, p, variants, settings) for p in prompts]):  # doctest: +SKIP
        ...     print(done.trace.prompt, [v.stop_reason for v in done.trace.variants])
    """
    waiting = collections.deque(comparisons)
    finished: queue.SimpleQueue[Comparison] = queue.SimpleQueue()
    running: set[Comparison] = set()
    rows = 0
    try:
        while waiting or running:
            # A comparison wider than max_rows still runs, alone.
            while waiting and (not running or rows + len(waiting[0]._rows) <= max_rows):
                comparison = waiting.popleft()
                running.add(comparison)
                rows += len(comparison._rows)
                comparison.submit(on_done=finished.put)
            comparison = finished.get()
            running.discard(comparison)
            rows -= len(comparison._rows)
            if comparison._error is not None:
                raise comparison._error
            yield comparison
    finally:
        for comparison in running:
            comparison.cancel()


def compare(bundle: LoadedModel, prompt: str, variants: Sequence[Variant], settings: Settings | None = None,
            **kwargs) -> Trace:
    """Run a comparison to the end and return its trace."""
    comparison = Comparison(bundle, prompt, variants, settings or Settings(), **kwargs)
    for trace in comparison.run():
        pass
    return trace
