"""Checks on the training sample: an EOS after every answer, kept by truncation, supervised in every turn."""

from __future__ import annotations

import re

from .core import Context, Finding

_GENERATION_BLOCK = re.compile(r"{%-?\s*generation\s*-?%}")


def _how(ctx: Context) -> str:
    rendered = "rendered with the chat template" if ctx.template_ok else "tokenised as prompt + response"
    return f"conversations and prompt/response pairs {rendered}, 'text' lines via tokenizer(text), input_ids as given"


def check_sample_ends_with_eos(ctx: Context) -> Finding:
    """How many training examples have an EOS right after the answer once tokenised."""
    title = "Training examples end with EOS"
    why = (
        "The model only learns to stop if the EOS follows the answer in the tokenised training data. Examples "
        "without it teach the model to run on into the next text."
    )
    if ctx.sample is None:
        return Finding("sample_ends_with_eos", title, "not_applicable",
                       "No training sample given (pass --sample FILE.jsonl).", why, "Nothing to check.")
    examples = ctx.sample_examples
    total = len(examples)
    # An end string typed into the answer that does not tokenise to an end id: the model learns to print it.
    literal = [e for e in examples if e.eos_as_text and not all(
        ctx.is_end(i) for i in ctx.tokenizer(e.eos_as_text, add_special_tokens=False)["input_ids"])]
    with_end = [e for e in examples if e.end_index is not None and e not in literal]
    data = {"examples": total, "end_with_eos": len(with_end), "fraction_end_with_eos": len(with_end) / total,
            "eos_as_text_not_id": len(literal)}
    found = [f"{len(with_end)}/{total} examples ({len(with_end) / total:.0%}) have an EOS/end token "
             f"{ctx.named_list(ctx.end_ids)} right after the answer ({_how(ctx)})."]
    if literal:
        example = literal[0]
        pieces = ctx.tokenizer(example.eos_as_text, add_special_tokens=False)["input_ids"]
        data["eos_as_text_ids"] = pieces
        found.append(f"{len(literal)} example(s) end with the text {example.eos_as_text!r}, which tokenises as "
                     f"{ctx.pieces(pieces)} (ids {pieces}; first: {example.label}), not as an EOS id: the model "
                     "learns to print it"
                     + (", and the end token the chat template adds after it comes one string too late"
                        if example.end_index is not None else "")
                     + (f"; this tokenizer's EOS is {ctx.tokenizer.eos_token!r}." if example.eos_as_text !=
                        ctx.tokenizer.eos_token else "."))
    missing = total - len(with_end)
    if missing == 0:
        return Finding("sample_ends_with_eos", title, "ok", found[0] + " (Truncation: see truncation_keeps_eos.)",
                       why, "Nothing to fix.", data)
    fix = ("Remove end strings typed into the answers and append the EOS id, not its text:\n```python\n"
           + (f"response = response.removesuffix({literal[0].eos_as_text!r}).rstrip()\n" if literal else "")
           + "ids = tokenizer(prompt + response, add_special_tokens=True)['input_ids'] + [tokenizer.eos_token_id]\n"
           "```\nor render prompt/response with tokenizer.apply_chat_template (it writes the end token), then retrain.")
    status = "problem" if missing / total >= 0.5 else "warning"
    return Finding("sample_ends_with_eos", "Training examples without an EOS id after the answer", status,
                   " ".join(found), why, fix, data, action="retrain")


def check_truncation_keeps_eos(ctx: Context) -> Finding:
    """Cutting examples to max_length keeps the end token after the answer."""
    title = "Truncation at max_length keeps the EOS"
    why = (
        "Trainers cut examples to max_length (SFTConfig(max_length=1024), tokenizer(..., truncation=True)). Cut on "
        "the right, the longest examples lose their end first, EOS included: they teach the model that long "
        "answers stop without an end token, so it learns to run on exactly when it has said a lot."
    )
    if ctx.sample is None:
        return Finding("truncation_keeps_eos", title, "not_applicable",
                       "No training sample given (pass --sample FILE.jsonl).", why, "Nothing to check.")
    examples, max_length = ctx.sample_examples, ctx.max_length
    total = len(examples)
    with_end = [e for e in examples if e.end_index is not None]
    side = getattr(ctx.tokenizer, "truncation_side", "right")
    too_long = [e for e in examples if len(e.full_ids) > max_length]
    lost = [e for e in with_end if e.end_index >= max_length] if side == "right" else []
    needed = max((e.end_index + 1 for e in with_end), default=None)
    data = {"max_length": max_length, "truncation_side": side, "examples": total, "longer_than_max_length":
            len(too_long), "truncated_before_eos": len(lost), "fraction_truncated": len(lost) / total,
            "max_length_that_keeps_every_eos": needed, "longest": max(len(e.full_ids) for e in examples)}
    found = [f"max_length={max_length}, tokenizer.truncation_side={side!r}: {len(too_long)}/{total} examples are "
             f"longer (longest: {data['longest']} tokens); {len(lost)}/{total} ({len(lost) / total:.0%}) lose the "
             "end token after their answer."]
    if not with_end:
        return Finding("truncation_keeps_eos", title, "not_applicable",
                       found[0] + " No example has an end token to lose (see sample_ends_with_eos).", why,
                       "Nothing to check.", data)
    if side == "left" and too_long:
        found.append(f"Truncating on the left keeps the end but cuts the start (the prompt) of {len(too_long)}.")
    if not lost:
        return Finding("truncation_keeps_eos", title, "ok", " ".join(found), why, "Nothing to fix.", data)
    first = lost[0]
    found.append(f"First: {first.label} has {len(first.full_ids)} tokens and its end "
                 f"{ctx.named(first.full_ids[first.end_index])} at index {first.end_index}; what survives ends with "
                 f"{ctx.pieces(first.full_ids[max_length - 4:max_length])}. max_length={needed} keeps every end.")
    fix = (f"Keep the end of every example, then retrain:\n```python\nSFTConfig(max_length={needed})  # or "
           f"tokenizer(..., truncation=True, max_length={needed})\n# or drop what does not fit:\n"
           f"dataset = dataset.filter(lambda example: len(example['input_ids']) <= {max_length})\n```\n"
           "(Re-appending EOS to a cut answer teaches the model to stop mid-sentence.)")
    status = "problem" if len(lost) / total >= 0.5 else "warning"
    return Finding("truncation_keeps_eos", "Truncation at max_length cuts off the EOS", status, " ".join(found), why,
                   fix, data, action="retrain")


def _template_labels(ctx: Context, messages: list[dict]) -> tuple[list[int], list[int]]:
    """input_ids and labels as TRL's assistant_only_loss builds them: the template's {% generation %} mask."""
    encoded = ctx.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])
    return ids, [token if mask else -100 for token, mask in zip(ids, encoded["assistant_masks"])]


def _assistant_turns(ctx: Context, ids: list[int], header: list[int]) -> list[tuple[int, int | None]]:
    """(first reply token, index of the end token that closes it or None) for each assistant header in ids."""
    starts = [p + len(header) for p in range(len(ids) - len(header) + 1) if ids[p:p + len(header)] == header]
    turns = []
    for number, start in enumerate(starts):
        stop = starts[number + 1] - len(header) if number + 1 < len(starts) else len(ids)
        end = next((j for j in range(start, stop) if ids[j] in ctx.end_ids), None)
        turns.append((start, end))
    return turns


def check_every_turn_end_supervised(ctx: Context) -> Finding:
    """In labelled conversations, the end token of every assistant turn is a training target (label != -100)."""
    title = "Every assistant turn's end token is supervised"
    why = (
        "A conversation teaches stopping once per assistant turn, but only where the label of the turn's end token "
        "is not -100. Masks built for 'the last reply only' (a completion-only collator given just the response "
        "template, axolotl's train_on_eos: last) or a {% generation %} block that closes before the end token "
        "(TRL's assistant_only_loss) supervise the end of the last turn or of none: the model learns to stop only "
        "where a conversation ends, and runs on in every other turn."
    )
    examples = [e for e in ctx.sample_examples if e.labels is not None or e.messages is not None]
    if not examples:
        return Finding("every_turn_end_supervised", title, "not_applicable",
                       "No conversations ({\"messages\"}) or labelled ({\"input_ids\", \"labels\"}) examples in the "
                       "sample.", why, "Nothing to check.")
    header = ctx.assistant_header_ids()
    has_blocks = ctx.template_ok and bool(_GENERATION_BLOCK.search(ctx.tokenizer.chat_template))
    labelled = []
    for example in examples:
        if example.labels is not None:
            labelled.append((example, example.full_ids, example.labels, "labels as given"))
        elif has_blocks:
            labelled.append((example, *_template_labels(ctx, example.messages), "the template's {% generation %} mask"))
    if header is None or not labelled:
        reason = ("the chat template has no assistant header to find the turns by" if header is None else
                  f"the chat template has no {{% generation %}} markers, so the labels of the {len(examples)} "
                  "conversation(s) depend on your trainer: pass pre-tokenised {\"input_ids\", \"labels\"} lines")
        return Finding("every_turn_end_supervised", title, "not_applicable", f"Cannot tell: {reason}.", why,
                       "Nothing to check.")
    turns_data, masked, total_turns, only_last, none = [], 0, 0, 0, 0
    for example, ids, labels, source in labelled:
        turns = [(start, end) for start, end in _assistant_turns(ctx, ids, header) if end is not None]
        verdicts = [labels[end] != -100 for _, end in turns]
        total_turns += len(turns)
        masked += verdicts.count(False)
        only_last += len(verdicts) > 1 and verdicts[-1] and not any(verdicts[:-1])
        none += bool(verdicts) and not any(verdicts)
        turns_data.append({"example": example.label, "source": source, "turns": [
            {"end_index": end, "end_id": ids[end], "content_supervised": any(l != -100 for l in labels[start:end]),
             "end_supervised": ok} for (start, end), ok in zip(turns, verdicts)]})
    data = {"examples_checked": len(labelled), "assistant_turns": total_turns, "ends_masked": masked,
            "only_last_turn_supervised": only_last, "no_turn_supervised": none, "header_ids": header,
            "examples": turns_data[:8]}
    found = [f"{len(labelled)} labelled conversation(s) ({', '.join(sorted({s for *_, s in labelled}))}), "
             f"{total_turns} assistant turn(s) found by the header {ctx.pieces(header)}: the end token's label is "
             f"-100 in {masked} of them."]
    if not total_turns:
        return Finding("every_turn_end_supervised", title, "not_applicable",
                       found[0] + " No assistant turn closed by an end token.", why, "Nothing to check.", data)
    if not masked:
        return Finding("every_turn_end_supervised", title, "ok", found[0], why, "Nothing to fix.", data)
    if only_last:
        found.append(f"In {only_last} multi-turn example(s) only the last turn's end is supervised.")
    if none:
        found.append(f"In {none} example(s) no turn's end is supervised.")
    first = next(t for t in turns_data if any(not turn["end_supervised"] for turn in t["turns"]))
    turn = next(turn for turn in first["turns"] if not turn["end_supervised"])
    found.append(f"First: {first['example']}, {ctx.named(turn['end_id'])} at index {turn['end_index']} has label -100"
                 + (" although the reply before it is supervised." if turn["content_supervised"] else "."))
    end = ctx.tokenizer.convert_ids_to_tokens(ctx.template_end) if ctx.template_end is not None else "<end>"
    fix = ("Supervise the reply and its end token in every assistant turn, then retrain:\n```python\n"
           "labels = [-100] * len(input_ids)\n"
           "for start, end in assistant_turns:  # first reply token .. its end token\n"
           "    labels[start:end + 1] = input_ids[start:end + 1]\n```\n"
           f"TRL assistant_only_loss: put the end token inside the block, `{{% generation %}}{{{{ message['content'] + "
           f"{end!r} }}}}{{% endgeneration %}}`; axolotl: `train_on_eos: turn`; a completion-only collator needs the "
           "instruction template too.")
    status = "problem" if masked / total_turns >= 0.5 else "warning"
    return Finding("every_turn_end_supervised", "Assistant turns whose end token is masked", status, " ".join(found),
                   why, fix, data, action="retrain")
