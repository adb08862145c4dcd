"""Checks on generation: the generation config, stop strings, and the model's own p(EOS) at an answer's end."""

from __future__ import annotations

import statistics

import torch

from ..models import BASE
from .core import Context, Example, Finding, as_list

# Teacher forcing runs one forward pass per example; a few dozen are plenty for a distribution.
MAX_FORCED_EXAMPLES = 16
# Below these median p(EOS) values the model has (practically) not learned to stop after an answer.
P_EOS_PROBLEM = 0.01
P_EOS_WARNING = 0.1


def check_generation_config_blocks_eos(ctx: Context) -> Finding:
    """Generation config settings that ban EOS (suppress_tokens, bad_words_ids) or delay it (min lengths)."""
    gc = ctx.generation_config
    title = "Generation config does not ban or delay EOS"
    why = (
        "suppress_tokens and bad_words_ids set the EOS logit to -inf, so the model can never stop; "
        "min_length/min_new_tokens do the same for the first N tokens; a negative sequence_bias or a "
        "repetition_penalty > 1 (the EOS already appears in a chat prompt) make stopping less likely."
    )
    if gc is None:
        return Finding("generation_config_blocks_eos", title, "not_applicable", "The model has no generation config.",
                       why, "Nothing to check.")
    eos_ids = set(ctx.end_ids)
    problems, warnings = [], []
    repair: dict = {}  # the generation-config fields that unblock EOS, with their repaired values
    suppress = as_list(getattr(gc, "suppress_tokens", None))
    suppressed = [i for i in suppress if i in eos_ids]
    if suppressed:
        problems.append(f"suppress_tokens contains {ctx.named_list(suppressed)}: EOS can never be generated.")
        repair["suppress_tokens"] = [i for i in suppress if i not in eos_ids] or None
    bad_words = getattr(gc, "bad_words_ids", None) or []
    bad = [seq for seq in bad_words if len(seq) == 1 and seq[0] in eos_ids]
    if bad:
        problems.append(f"bad_words_ids bans {ctx.named_list([s[0] for s in bad])}: EOS can never be generated.")
        repair["bad_words_ids"] = [seq for seq in bad_words if seq not in bad] or None
    begin_suppress = as_list(getattr(gc, "begin_suppress_tokens", None))
    begin = [i for i in begin_suppress if i in eos_ids]
    if begin:
        warnings.append(f"begin_suppress_tokens contains {ctx.named_list(begin)}: EOS is banned at the first step.")
        repair["begin_suppress_tokens"] = [i for i in begin_suppress if i not in eos_ids] or None
    min_new = getattr(gc, "min_new_tokens", None) or 0
    if min_new > 0:
        warnings.append(f"min_new_tokens = {min_new}: EOS is banned for the first {min_new} new tokens.")
        repair["min_new_tokens"] = None
    min_length = getattr(gc, "min_length", None) or 0
    if min_length > 0:
        warnings.append(f"min_length = {min_length}: EOS is banned until prompt + output reach {min_length} tokens.")
        repair["min_length"] = 0
    bias = getattr(gc, "sequence_bias", None) or {}
    items = list(bias.items() if isinstance(bias, dict) else [(tuple(k), v) for k, v in bias])
    for key, value in items:
        if len(key) == 1 and key[0] in eos_ids and value < 0:
            (problems if value <= -10 else warnings).append(f"sequence_bias gives {ctx.named(key[0])} {value}.")
            repair["sequence_bias"] = [[list(k), v] for k, v in items
                                       if not (len(k) == 1 and k[0] in eos_ids and v < 0)] or None
    penalty = getattr(gc, "repetition_penalty", None) or 1.0
    if penalty > 1.0:
        warnings.append(f"repetition_penalty = {penalty}: once an EOS/end token is in the prompt (every chat turn "
                        "ends with one) its logit is divided by it.")
    data = {"problems": problems, "warnings": warnings}
    if repair:  # repetition_penalty stays: it is a sampling choice, and the warning says what it costs
        data["repair"] = {"generation_config": repair}
    fields = ("suppress_tokens, bad_words_ids, begin_suppress_tokens, min_new_tokens, min_length, sequence_bias, "
              "repetition_penalty")
    if not problems and not warnings:
        return Finding("generation_config_blocks_eos", title, "ok", f"None of {fields} touches the EOS ids "
                       f"{ctx.named_list(sorted(eos_ids))}.", why, "Nothing to fix.", data)
    fix = ("Remove the EOS ids from these settings, e.g.\n```python\ngc = model.generation_config\n"
           "gc.suppress_tokens = [t for t in (gc.suppress_tokens or []) if t not in eos_ids] or None\n"
           "gc.bad_words_ids = None\ngc.min_new_tokens = None\ngc.min_length = 0\n"
           "gc.save_pretrained(output_dir)\n```")
    return Finding("generation_config_blocks_eos", "Generation config bans or delays EOS",
                   "problem" if problems else "warning",
                   " ".join(problems + warnings), why, fix, data, action="files" if repair else "generation")


def _answer_end_scores(ctx: Context, examples: list[Example], bundle, model: str | None) -> list[torch.Tensor]:
    """The next-token logits right after each answer (teacher-forced) on ``model`` (``base`` or an adapter of
    ``bundle``), in batches of 8. Each batch holds the model (:meth:`LoadedModel.using`): no decode step of the
    served model runs meanwhile, and no other caller switches its adapter."""
    device = bundle.device
    sequences = [example.prefix_ids[-ctx.max_length:] for example in examples]
    scores = []
    for start in range(0, len(sequences), 8):
        batch = sequences[start:start + 8]
        width = max(len(ids) for ids in batch)
        # Right padding under a zero attention mask leaves every real position's logits unchanged.
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        with bundle.using(model), torch.inference_mode(), ctx.stoppable(bundle.model):
            logits = bundle.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        scores += [logits[row, len(ids) - 1].float() for row, ids in enumerate(batch)]
    return scores


def _p_stop(ctx: Context, examples: list[Example], stop_ids: list[int], other_ids: list[int], *,
            bundle=None, model: str | None = None,
            penalty: float | None = None) -> tuple[list[float], dict[int, list[float]]]:
    """Teacher-forced next-token probability after each answer: summed over stop ids, and per other end id.
    ``bundle``: another loaded model with the same vocabulary; ``model``: ``base`` or one of its adapters (default:
    the examined one, or for another bundle its default model, or with no named adapter the model as it is);
    ``penalty``: a repetition penalty applied over the answer's own ids first, as generate() does. The logits are
    computed once per model (adapter included) and diagnosis."""
    from transformers import RepetitionPenaltyLogitsProcessor

    bundle = bundle or ctx.bundle
    if model is None and bundle.adapters:
        model = ctx.model_name if bundle is ctx.bundle else bundle.default_model
    key = (id(bundle), model, tuple(id(e) for e in examples))
    scores = ctx.answer_end_scores.get(key)
    if scores is None:
        scores = ctx.answer_end_scores[key] = _answer_end_scores(ctx, examples, bundle, model)
    vocab = scores[0].shape[0] if scores else None
    valid = [i for i in stop_ids if vocab is None or i < vocab]
    others = [i for i in other_ids if vocab is None or i < vocab]
    p_stop, p_other = [], {i: [] for i in others}
    for example, row in zip(examples, scores):
        if penalty is not None:
            ids = torch.tensor([example.prefix_ids[-ctx.max_length:]], device=row.device)
            row = RepetitionPenaltyLogitsProcessor(penalty)(ids, row[None].clone())[0]
        probabilities = row.softmax(-1)
        p_stop.append(float(probabilities[valid].sum()) if valid else 0.0)
        for token_id in others:
            p_other[token_id].append(float(probabilities[token_id]))
    return p_stop, p_other


def _figure(p: float) -> float:
    """A probability kept to 4 significant digits: a broken adapter's 6.5e-08 stays a number, not 0."""
    return float(f"{p:.4g}")


def _summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _fmt(summary: dict) -> str:
    return f"min {summary['min']:.3g} / median {summary['median']:.3g} / max {summary['max']:.3g}"


def check_p_eos_at_answer_end(ctx: Context) -> Finding:
    """Teacher-forced p(EOS) right after complete answers: near zero means stopping was never learned."""
    title = "Model puts probability on EOS where an answer ends"
    why = (
        "Feeding a complete answer and reading the next-token distribution shows whether the model learned to "
        "stop there. A chat model typically gives the stop token tens of percent; near zero means it will go on "
        "(lack of EOS in training, masked EOS labels, an untrained EOS row, or a base model)."
    )
    stop = ctx.stop_ids or ([ctx.tokenizer_eos_id] if ctx.tokenizer_eos_id is not None else [])
    if not stop:
        return Finding("p_eos_at_answer_end", title, "not_applicable", "There is no EOS id to measure.", why,
                       "See eos_ids_agree.")
    examples = [e for e in ctx.examples if e.prefix_ids][:MAX_FORCED_EXAMPLES]
    source = (f"{len(examples)} answer(s) from your sample" if ctx.sample is not None
              else f"{len(examples)} built-in question/answer pairs"
              + (" rendered with the chat template" if ctx.template and "error" not in ctx.template else ""))
    template_end = ctx.template.get("end_id") if ctx.template else None
    template_other = template_end if template_end is not None and template_end not in stop and (
        template_end in ctx.end_like or template_end in ctx.all_eos_ids) else None
    other_ids = [i for i in [template_other, *ctx.end_like, *ctx.all_eos_ids] if i is not None and i not in stop]
    other_ids = list(dict.fromkeys(other_ids))
    bundle = ctx.bundle
    p_stop, p_other = _p_stop(ctx, examples, stop, other_ids)
    summary = _summary(p_stop)
    lowest = min(range(len(p_stop)), key=p_stop.__getitem__)
    data = {"model": ctx.model_name, "p_eos": [_figure(p) for p in p_stop],
            **{k: _figure(v) for k, v in summary.items()},
            "examples": [e.label for e in examples], "stop_ids": stop, "other_end_ids": {}}
    found = [f"p({', '.join(ctx.token(i) for i in stop)}) right after the answer, over {source}: {_fmt(summary)} "
             f"(lowest: {examples[lowest].label})."]
    for token_id, values in p_other.items():
        other_summary = _summary(values)
        data["other_end_ids"][token_id] = {k: _figure(v) for k, v in other_summary.items()}
        role = "the template's turn end, not a stop id" if token_id == template_other else "not a stop id"
        found.append(f"{ctx.named(token_id)} ({role}) gets {_fmt(other_summary)}.")
    if ctx.has_adapter:
        p_base, _ = _p_stop(ctx, examples, stop, [], model=BASE)
        base_summary = _summary(p_base)
        data["without_adapter"] = {k: _figure(v) for k, v in base_summary.items()}
        found.append(f"With the adapter switched off: {_fmt(base_summary)}.")
    if len(bundle.adapters) > 1:  # several adapters on one base: each against the base
        data["per_model"] = {}
        for model in (BASE, *bundle.adapters):
            values, _ = _p_stop(ctx, examples, stop, [], model=model)
            data["per_model"][model] = {k: _figure(v) for k, v in _summary(values).items()}
        found.append("Per model: " + "; ".join(f"{model} {_fmt(numbers)}"
                                               for model, numbers in data["per_model"].items()) + ".")
    median = summary["median"]
    if median >= P_EOS_WARNING:
        return Finding("p_eos_at_answer_end", title, "ok", " ".join(found) + " The model has learned to stop.", why,
                       "Nothing to fix. If it still rambles on open questions, cap max_new_tokens or bias EOS up "
                       "with an EOS-reward logits processor.", data)
    fix = ("Find the cause above (EOS missing from training data, pad == EOS masking, untrained EOS rows), fix it and "
           "fine-tune again. Until then stop it at inference: set max_new_tokens, add stop strings "
           "(generate(..., stop_strings=['\\n\\n'], tokenizer=tokenizer)) or raise the EOS logit with a logits "
           "processor.")
    preferred = [i for i, values in p_other.items() if statistics.median(values) > max(median, P_EOS_PROBLEM)]
    action = "retrain"
    if preferred:
        fix = (f"The model wants to end with {ctx.named(preferred[0])}, which generation does not stop on; "
               f"stop on it:\n```python\nmodel.generation_config.eos_token_id = {stop + preferred[:1]}\n```")
        data["repair"], action = {"stop_on": preferred[:1]}, "files"
    status = "problem" if median < P_EOS_PROBLEM else "warning"
    return Finding("p_eos_at_answer_end", "Model puts little probability on EOS where an answer ends", status,
                   " ".join(found), why, fix, data, action=action)



def check_stop_strings_survive_decoding(ctx: Context) -> Finding:
    """Stop strings that are (or contain) special tokens vanish from text decoded with skip_special_tokens=True."""
    title = "Stop strings can be found in the decoded text"
    why = (
        "Code that stops on strings usually searches the decoded text, and decodes with skip_special_tokens=True "
        "(text-generation pipelines, TextIteratorStreamer(skip_special_tokens=True), vLLM and TGI by default). A "
        "stop string that is a special token such as '<|im_end|>' is removed by that decoding, so the search never "
        "matches and the reply runs on to the token limit. (generate(stop_strings=...) matches tokens, not "
        "decoded text, so it does see special tokens.)"
    )
    configured = getattr(ctx.generation_config, "stop_strings", None) or []
    configured = [configured] if isinstance(configured, str) else list(configured)
    given = [(s, "--stop-string") for s in ctx.stop_strings] + [(s, "generation_config.stop_strings")
                                                                 for s in configured]
    if not given:
        return Finding("stop_strings_survive_decoding", title, "not_applicable",
                       "No stop strings given (--stop-string) and generation_config.stop_strings is empty.", why,
                       "Nothing to check.")
    tokenizer, rows, hidden = ctx.tokenizer, [], []
    for string, source in given:
        ids = tokenizer(string, add_special_tokens=False)["input_ids"]
        specials = [i for i in ids if i in ctx.special_ids]
        decoded = tokenizer.decode(tokenizer("Hello." + string, add_special_tokens=False)["input_ids"],
                                   skip_special_tokens=True)
        rows.append({"string": string, "source": source, "ids": ids, "special_ids": specials,
                     "decoded_example": decoded, "found_in_decoded": string in decoded})
        if string not in decoded:
            hidden.append(rows[-1])
    data = {"stop_strings": rows}
    listed = "; ".join(f"{r['string']!r} ({r['source']}) -> ids {r['ids']}" for r in rows)
    if not hidden:
        return Finding("stop_strings_survive_decoding", title, "ok",
                       f"{listed}. Each one survives decode(..., skip_special_tokens=True).", why, "Nothing to fix.",
                       data)
    found = [listed + "."]
    for row in {row["string"]: row for row in hidden}.values():
        found.append(f"{row['string']!r} contains the special token(s) {ctx.named_list(row['special_ids'])}: "
                     f"decode(tokenizer('Hello.' + {row['string']!r}), skip_special_tokens=True) = "
                     f"{row['decoded_example']!r}, which never contains it.")
    special = list(dict.fromkeys(i for row in hidden for i in row["special_ids"]))
    stop = ctx.stop_ids + [i for i in special if i not in ctx.stop_ids]
    fix = ("Stop on the token id instead of its text:\n```python\n"
           f"model.generate(..., eos_token_id={stop})\n"
           f"# vLLM: SamplingParams(stop_token_ids={special}); or decode with skip_special_tokens=False before "
           "searching\n```")
    status = "problem" if any(row["source"] == "--stop-string" for row in hidden) else "warning"
    return Finding("stop_strings_survive_decoding", "Stop strings vanish from the decoded text", status,
                   " ".join(found), why, fix, data,
                   action="generation")


def _answers(ctx: Context) -> tuple[list[Example], str]:
    examples = [e for e in ctx.examples if e.prefix_ids][:MAX_FORCED_EXAMPLES]
    source = (f"{len(examples)} answer(s) from your sample" if ctx.sample is not None
              else f"{len(examples)} built-in question/answer pairs")
    return examples, source


def check_penalty_spares_eos(ctx: Context) -> Finding:
    """A repetition penalty does not push the end token down once it appears in the chat history."""
    title = "Repetition penalty spares the end token"
    why = (
        "generate(), vLLM and llama.cpp apply repetition_penalty to every token already in the context, the prompt "
        "included. In a chat prompt every turn ends with the end token, so its logit is divided by the penalty "
        "before the model ever answers: the longer the conversation, the less the model stops."
    )
    configured = getattr(ctx.generation_config, "repetition_penalty", None)
    penalty = ctx.repetition_penalty if ctx.repetition_penalty is not None else configured
    stop = ctx.stop_ids or ([ctx.tokenizer_eos_id] if ctx.tokenizer_eos_id is not None else [])
    if penalty is None or penalty == 1.0 or not stop:
        return Finding("penalty_spares_eos", title, "not_applicable",
                       "No repetition penalty configured (generation_config.repetition_penalty is 1.0 or unset; pass "
                       "--repetition-penalty X to check the one you serve with)." if stop else "No stop id.",
                       why, "Nothing to check.")
    examples, source = _answers(ctx)
    with_eos = sum(any(i in stop for i in e.prefix_ids) for e in examples)
    plain, _ = _p_stop(ctx, examples, stop, [])
    penalised, _ = _p_stop(ctx, examples, stop, [], penalty=penalty)
    before, after = statistics.median(plain), statistics.median(penalised)
    ratio = after / before if before > 0 else 1.0
    data = {"repetition_penalty": penalty, "stop_ids": stop, "examples": len(examples),
            "examples_with_end_token_in_prompt": with_eos, "median_p_eos": round(before, 6),
            "median_p_eos_with_penalty": round(after, 6), "ratio": round(ratio, 4)}
    found = (f"repetition_penalty = {penalty}: p({', '.join(ctx.token(i) for i in stop)}) right after the answer, "
             f"over {source} ({with_eos} with an end token in the prompt): median {before:.3g} without, "
             f"{after:.3g} with the penalty ({ratio:.0%}).")
    if ratio >= 0.5:
        return Finding("penalty_spares_eos", title, "ok", found, why, "Nothing to fix.", data)
    fix = ("Keep the penalty off the prompt (and so off the history's end tokens), or lower it:\n```python\n"
           "from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor\n"
           f"penalty = RepetitionPenaltyLogitsProcessor({penalty}, prompt_ignore_length=inputs['input_ids'].shape[1])\n"
           "model.generate(**inputs, max_new_tokens=256, repetition_penalty=1.0, "
           "logits_processor=LogitsProcessorList([penalty]))\n```\n"
           "vLLM / llama.cpp / Ollama: repetition_penalty (repeat_penalty) 1.0-1.05, or a frequency penalty that "
           "only counts generated tokens.")
    status = "problem" if ratio < 0.1 else "warning"
    return Finding("penalty_spares_eos", "Repetition penalty pushes the end token down", status, found, why, fix,
                   data, action="generation")


def check_stopping_kept(ctx: Context) -> Finding:
    """p(EOS) at the answer end does not collapse from an earlier checkpoint (SFT) to this one (DPO, RL)."""
    title = "Stopping is kept from the earlier checkpoint"
    why = (
        "Preference and RL stages (DPO, ORPO, PPO, GRPO) optimise other things than stopping; with chosen answers "
        "that lack the end token, a length-favouring reward or too many steps they un-learn it: the SFT checkpoint "
        "stops, the final one rambles."
    )
    other = ctx.compare_with
    if other is None:
        return Finding("stopping_kept", title, "not_applicable",
                       "No earlier checkpoint given (pass --compare-with PATH, e.g. the SFT model before DPO).", why,
                       "Nothing to check.")
    stop = ctx.stop_ids or ([ctx.tokenizer_eos_id] if ctx.tokenizer_eos_id is not None else [])
    if len(other.tokenizer) != len(ctx.tokenizer) or not stop:
        return Finding("stopping_kept", title, "not_applicable",
                       f"{other.info.name} has {len(other.tokenizer)} tokens, this model {len(ctx.tokenizer)}: the "
                       "same answers cannot be compared." if stop else "No stop id.", why, "Nothing to check.")
    examples, source = _answers(ctx)
    now, _ = _p_stop(ctx, examples, stop, [])
    then, _ = _p_stop(ctx, examples, stop, [], bundle=other)
    before, after = statistics.median(then), statistics.median(now)
    ratio = after / before if before > 0 else 1.0
    data = {"compare_with": other.info.name, "stop_ids": stop, "median_p_eos_earlier": round(before, 6),
            "median_p_eos_now": round(after, 6), "ratio": round(ratio, 4),
            "p_eos_earlier": [round(p, 6) for p in then], "p_eos_now": [round(p, 6) for p in now]}
    found = (f"p({', '.join(ctx.token(i) for i in stop)}) right after the answer, over {source}: median "
             f"{before:.3g} in {other.info.name}, {after:.3g} in {ctx.bundle.info.name} (×{ratio:.2g}).")
    if ratio >= 0.5:
        return Finding("stopping_kept", title, "ok", found, why, "Nothing to fix.", data)
    fix = ("Keep the SFT signal in the later stage, then train it again:\n```python\n"
           "DPOConfig(..., rpo_alpha=1.0)  # adds the chosen answers' NLL, their end token included\n"
           "# and check the chosen answers end with the end token (tokenizer.eos_token_id) before training\n```\n"
           "Fewer steps or a larger beta also keep the model closer to the SFT checkpoint.")
    status = "problem" if ratio < 0.25 else "warning"
    return Finding("stopping_kept", "Stopping collapsed since the earlier checkpoint", status, found, why, fix, data,
                   action="retrain")
