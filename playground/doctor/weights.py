"""Checks on the weights: whether the rows of the end and chat tokens were ever trained, and what a LoRA adapter
trains."""

from __future__ import annotations

import torch

from .core import Context, Finding

# |z| of an embedding row norm against all rows; trained special tokens sit well inside +-4.
Z_WARNING = 4.0
Z_PROBLEM = 6.0
# A row this close to the mean row (relative to the median distance of all rows from it) was put there by
# resize_token_embeddings(mean_resizing=True) and never moved; trained rows sit at 0.7 or more (SmolLM2: 0.73).
MEAN_DISTANCE_PROBLEM = 0.05
_EMBEDDING_NAMES = {"embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings", "embeddings"}
_OUTPUT_NAMES = {"lm_head", "embed_out", "output"}
_CHUNK = 8192


def base_weight(module) -> torch.Tensor:
    """The plain weight under PEFT wrappers (LoRA layers, modules_to_save copies, trainable-token wrappers)."""
    while True:
        inner = getattr(module, "base_layer", None) or getattr(module, "original_module", None)
        if inner is None:
            return module.weight
        module = inner


def effective_rows(ctx: Context, kind: str, ids: list[int]) -> torch.Tensor:
    """The rows the model really uses for ``ids`` (through an adapter, if one is loaded), as float32."""
    embeddings = ctx.model.get_input_embeddings() if kind == "input" else ctx.model.get_output_embeddings()
    weight = base_weight(embeddings)
    index = torch.tensor(ids, device=weight.device)
    with torch.no_grad():
        if not ctx.has_adapter or type(embeddings) in (torch.nn.Embedding, torch.nn.Linear):
            return weight[index].detach().float()
        if kind == "input":
            return embeddings(index).detach().float()
        # A wrapped output layer has no single weight: row j is its (bias-free) response to the unit vectors.
        hidden = weight.shape[1]
        zero = embeddings(torch.zeros(1, hidden, dtype=weight.dtype, device=weight.device))[:, index]
        columns = []
        for start in range(0, hidden, 256):
            eye = torch.eye(hidden, dtype=weight.dtype, device=weight.device)[start:start + 256]
            columns.append(embeddings(eye)[:, index] - zero)
        return torch.cat(columns).T.detach().float()


class RowStats:
    """Norms and distances from the mean row over a whole embedding matrix, to judge single rows against."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        chunks = [weight[i:i + _CHUNK].detach().float() for i in range(0, weight.shape[0], _CHUNK)]
        self.norms = torch.cat([c.norm(dim=1) for c in chunks])
        self.mean_row = sum(c.sum(0) for c in chunks) / weight.shape[0]
        self.median_distance = torch.cat([(c - self.mean_row).norm(dim=1) for c in chunks]).median().item()
        self.norm_mean, self.norm_std = self.norms.mean().item(), self.norms.std().item()

    def identical(self, row: torch.Tensor, token_id: int) -> int:
        """How many other rows are bit-identical to ``row``."""
        row = row.to(self.weight.dtype)
        count = sum(int((self.weight[i:i + _CHUNK].detach() == row).all(dim=1).sum())
                    for i in range(0, self.weight.shape[0], _CHUNK))
        return count - int(token_id < self.weight.shape[0] and bool((self.weight[token_id] == row).all()))

    def judge(self, row: torch.Tensor, token_id: int) -> tuple[dict, str | None, str | None]:
        """(numbers, severe reason, mild reason): severe = untrained for sure, mild = worth a look."""
        norm = row.norm().item()
        z = (norm - self.norm_mean) / self.norm_std if self.norm_std > 0 else 0.0
        distance = (row - self.mean_row).norm().item() / self.median_distance if self.median_distance > 0 else 1.0
        copies = self.identical(row, token_id)
        stats = {"norm": round(norm, 4), "z": round(z, 2), "identical_rows": copies,
                 "mean_distance": round(distance, 4)}
        if norm == 0.0:
            return stats, "the row is all zeros", None
        if distance < MEAN_DISTANCE_PROBLEM:
            return stats, (f"it sits on the mean of all rows ({distance:.3f} of the usual distance), where "
                           "resize_token_embeddings(mean_resizing=True) puts new rows"), None
        if abs(z) >= Z_PROBLEM:
            return stats, "far outside every other row", None
        if abs(z) >= Z_WARNING:
            return stats, None, "unusual"
        if copies > 0:
            return stats, None, f"bit-identical to {copies} other row(s), as rows that were never trained are"
        return stats, None, None


def _layers(ctx: Context) -> tuple[list[str], bool]:
    """Which embedding matrices to inspect: input, and output unless it is the same (tied) matrix."""
    inputs = base_weight(ctx.base.get_input_embeddings())
    output = ctx.base.get_output_embeddings()
    tied = output is not None and base_weight(output).data_ptr() == inputs.data_ptr()
    return (["input"] if tied or output is None else ["input", "output"]), tied


def inspect_rows(ctx: Context, ids: list[int], problems: list, warnings: list, notes: list) -> dict:
    """Judge the effective input/output rows of ``ids``; output rows (or tied ones) count as problems, because
    they set the token's logit, input rows only as warnings. Returns the numbers per ``"kind:id"``."""
    kinds, tied = _layers(ctx)
    rows: dict = {}
    for kind in kinds:
        module = ctx.base.get_input_embeddings() if kind == "input" else ctx.base.get_output_embeddings()
        weight = base_weight(module)
        if weight.dim() != 2 or not weight.is_floating_point():
            notes.append(f"The {kind} embedding is quantized; its rows were not inspected.")
            continue
        present = [i for i in ids if i < weight.shape[0]]
        for token_id in ids:
            if token_id >= weight.shape[0]:
                problems.append(f"{ctx.named(token_id)} has no {kind} embedding row ({weight.shape[0]} rows).")
        if not present:
            continue
        if kind not in ctx.row_stats:
            ctx.row_stats[kind] = RowStats(weight)
        stats_of = ctx.row_stats[kind]
        for token_id, row in zip(present, effective_rows(ctx, kind, present)):
            stats, severe_reason, mild_reason = stats_of.judge(row, token_id)
            rows[f"{kind}:{token_id}"] = stats
            text = (f"{kind} row of {ctx.named(token_id)}: norm {stats['norm']:.3g} vs mean {stats_of.norm_mean:.3g} "
                    f"+- {stats_of.norm_std:.2g} (z = {stats['z']:+.1f})")
            severe = problems if kind == "output" or tied else warnings
            if severe_reason:
                if stats["norm"] == 0.0 and getattr(module, "padding_idx", None) == token_id:
                    severe_reason += (" (it is the embedding's padding_idx, which is never trained: pad_token_id is "
                                      "this token)")
                severe.append(f"{text} - {severe_reason}.")
            elif mild_reason:
                warnings.append(f"{text} - {mild_reason}.")
            else:
                notes.append(text + ".")
    return rows


def check_eos_embedding(ctx: Context) -> Finding:
    """EOS rows of the input/output embeddings look trained, and the tokenizer fits the embeddings."""
    title = "EOS embedding rows look trained"
    why = (
        "A newly added EOS starts with an untrained embedding row (zeros, the mean of all rows, a copy of other "
        "rows, or an outlier norm). Its output row decides p(EOS): if it was never trained, the model cannot put "
        "probability on stopping. Token ids at or beyond the number of embedding rows crash or read garbage."
    )
    tokenizer = ctx.tokenizer
    rows = base_weight(ctx.base.get_input_embeddings()).shape[0]
    base_vocab = getattr(tokenizer, "vocab_size", None)
    problems, warnings, notes = [], [], []
    data = {"tokenizer_length": len(tokenizer), "embedding_rows": rows, "base_vocab_size": base_vocab}
    if len(tokenizer) > rows:
        problems.append(f"The tokenizer has {len(tokenizer)} tokens but the embeddings only {rows} rows: "
                        f"ids {rows}..{len(tokenizer) - 1} are out of range.")
    elif len(tokenizer) < rows:
        notes.append(f"{rows} embedding rows for {len(tokenizer)} tokens (padding rows are normal).")
    if _layers(ctx)[1]:
        notes.append("Input and output embeddings are tied (one matrix).")
    ids = list(ctx.end_ids)
    data["rows"] = inspect_rows(ctx, ids, problems, warnings, notes)
    added = [i for i in ids if base_vocab is not None and i >= base_vocab]
    if added:
        notes.append(f"{ctx.named_list(added)} were added after the base vocabulary ({base_vocab} tokens): their "
                     "rows only learn what fine-tuning teaches them.")
    data["added_end_ids"] = added
    found = " ".join(problems + warnings + notes)
    fix = ("Make the tokenizer and embeddings agree and train the EOS rows:\n```python\n"
           "model.resize_token_embeddings(len(tokenizer))\n# full fine-tune, or with LoRA:\n"
           "LoraConfig(..., modules_to_save=['embed_tokens', 'lm_head'])\n```\n"
           "A row that was zeroed or copied needs training (or re-initialising from the mean of the trained rows).")
    status = "problem" if problems else "warning" if warnings else "ok"
    if status == "ok":
        return Finding("eos_embedding", title, status, found, why, "Nothing to fix.", data)
    return Finding("eos_embedding", "EOS embedding rows look untrained or out of range", status, found, why, fix,
                   data, action="retrain")


def check_chat_tokens_trained(ctx: Context) -> Finding:
    """The chat template's special tokens (role markers, turn starts) have trained embedding rows."""
    title = "Chat tokens of the template have trained embeddings"
    why = (
        "Fine-tunes often add chat tokens (<|im_start|>, <|user|>, <|assistant|>...) to a base model. Their rows "
        "start untrained (zeros, the mean of all rows, random) and only train if the embeddings do: a LoRA without "
        "embed_tokens/lm_head in modules_to_save (or trainable_token_indices) leaves them as they were. The model "
        "then cannot tell where turns start, cannot produce the turn markers, and runs on into invented turns."
    )
    end_ids = set(ctx.end_ids)
    ids = [i for i in ctx.template_special_ids if i not in end_ids]
    if not ids:
        return Finding("chat_tokens_trained", title, "not_applicable",
                       "The chat template writes no special tokens besides the end token (eos_embedding checks that "
                       "one)." if ctx.template_ok else "No chat template that renders.", why, "Nothing to check.")
    problems, warnings, notes = [], [], []
    rows = inspect_rows(ctx, ids, problems, warnings, notes)
    # Through an adapter, an untrained input row of a turn marker matters as much as its output row.
    problems += [w for w in warnings if " - the row is all zeros" in w or "sits on the mean" in w]
    warnings = [w for w in warnings if w not in problems]
    base_vocab = getattr(ctx.tokenizer, "vocab_size", None) or 0
    added = [i for i in ids if i >= base_vocab]
    data = {"template_token_ids": ids, "added_after_base_vocabulary": added, "rows": rows,
            "through_adapter": ctx.has_adapter}
    found = (f"The template writes {ctx.named_list(ids)} (end tokens: see eos_embedding)"
             + (f"; {ctx.named_list(added)} come after the base vocabulary of {base_vocab}" if added else "")
             + (", read through the loaded adapter" if ctx.has_adapter else "") + ". ")
    found += " ".join(problems + warnings + notes)
    if not problems and not warnings:
        return Finding("chat_tokens_trained", title, "ok", found, why, "Nothing to fix.", data)
    fix = ("Train their rows, then retrain:\n```python\n"
           "LoraConfig(..., modules_to_save=['embed_tokens', 'lm_head'])\n"
           f"# or only these tokens:\nLoraConfig(..., trainable_token_indices={ids[:8]})\n```\n"
           "In a full fine-tune, do not freeze the embeddings.")
    return Finding("chat_tokens_trained", "Chat tokens of the template look untrained",
                   "problem" if problems else "warning", found, why, fix, data,
                   action="retrain")


def check_adapter_trains_new_tokens(ctx: Context) -> Finding:
    """With a LoRA adapter, added special tokens need trained embedding/lm_head rows (modules_to_save)."""
    title = "LoRA adapter trains the rows of added special tokens"
    why = (
        "LoRA only trains low-rank deltas of the target layers. A special token added for fine-tuning (a new EOS, "
        "<|im_end|> on a base model...) keeps its untrained embedding and lm_head rows unless those modules are "
        "saved in full (modules_to_save) or the token rows are trained (trainable_token_indices), so the model "
        "never learns to emit it."
    )
    if not ctx.has_adapter:
        return Finding("adapter_trains_new_tokens", title, "not_applicable", "No adapter is loaded.", why,
                       "Nothing to check.")
    model, tokenizer = ctx.model, ctx.tokenizer
    name = ctx.model_name if ctx.model_name in model.peft_config else getattr(model, "active_adapter", None) or "default"
    if isinstance(name, (list, tuple)):
        name = name[0]
    config = model.peft_config[name]
    modules = set(getattr(config, "modules_to_save", None) or [])
    targets = getattr(config, "target_modules", None) or []
    targets = {targets} if isinstance(targets, str) else set(targets)
    trainable = getattr(config, "trainable_token_indices", None) or []
    trainable_ids = set()
    for value in (trainable.values() if isinstance(trainable, dict) else [trainable]):
        trainable_ids |= set(value)
    saved_in = any(m.split(".")[-1] in _EMBEDDING_NAMES for m in modules)
    saved_out = any(m.split(".")[-1] in _OUTPUT_NAMES for m in modules)
    tied = bool(getattr(ctx.base.config, "tie_word_embeddings", False))
    base_vocab = getattr(tokenizer, "vocab_size", None) or 0
    rows = base_weight(ctx.base.get_input_embeddings()).shape[0]
    added_ids = sorted(i for i in getattr(tokenizer, "added_tokens_decoder", {}) if i >= base_vocab)
    new_end = [i for i in ctx.end_ids if i >= base_vocab]
    data = {"adapter": ctx.adapter_reference, "modules_to_save": sorted(modules), "target_modules": sorted(targets),
            "trainable_token_indices": sorted(trainable_ids), "added_token_ids": added_ids, "new_end_ids": new_end}
    found = (f"Adapter {ctx.adapter_reference!r}: modules_to_save = {sorted(modules) or None}, target_modules = "
             f"{sorted(targets)}, trainable_token_indices = {sorted(trainable_ids) or None}. Tokenizer has "
             f"{len(tokenizer)} tokens, base vocabulary {base_vocab}, {rows} embedding rows.")
    if not added_ids and not new_end:
        return Finding("adapter_trains_new_tokens", title, "ok",
                       found + " No tokens were added beyond the base vocabulary, so nothing new needs training.",
                       why, "Nothing to fix.", data)
    covered = (saved_in and (saved_out or tied)) or all(i in trainable_ids for i in (new_end or added_ids))
    lora_on_embeddings = any(t.split(".")[-1] in _EMBEDDING_NAMES | _OUTPUT_NAMES for t in targets)
    found += f" Added tokens: {ctx.named_list(added_ids[:8])}" + (" ..." if len(added_ids) > 8 else "") + "."
    if covered:
        return Finding("adapter_trains_new_tokens", title, "ok",
                       found + " Their embedding and output rows are trained by the adapter.", why,
                       "Nothing to fix.", data)
    fix = ("Train the new rows with the adapter:\n```python\nLoraConfig(..., modules_to_save=['embed_tokens', 'lm_head'])\n"
           f"# or only the new tokens:\nLoraConfig(..., trainable_token_indices={(new_end or added_ids)[:8]})\n```")
    if lora_on_embeddings:
        return Finding("adapter_trains_new_tokens", "LoRA adapter reaches added tokens' rows only through a low-rank update",
                       "warning",
                       found + " The embeddings are LoRA targets, so only a low-rank update reaches the new rows.",
                       why, fix, data, action="retrain")
    return Finding("adapter_trains_new_tokens", "LoRA adapter leaves the rows of added special tokens untrained",
                   "problem",
                   found + " Neither modules_to_save nor trainable_token_indices cover them: their rows are still the "
                   "untrained initial values.", why, fix, data, action="retrain")

