"""Checks on how training examples are laid out: the prompt format inference will use, BOS/EOS written twice,
packed samples kept apart by a supervised end token, labels aligned with the answer; and the training-example
view (which tokens are supervised) that shows one example exactly as these checks read it."""

from __future__ import annotations

from playground.supervision import IGNORE_INDEX, LabelledToken, tokens_of

from .core import Context, Example, Finding
from .data import _GENERATION_BLOCK, _template_labels


# --------------------------------------------------------------------------------------------------
# Labels, as the checks read them


def example_labels(ctx: Context, example: Example) -> tuple[list[int] | None, str]:
    """The labels of an example (``None``: every token supervised) and a sentence saying where they come from."""
    if example.labels is not None:
        return example.labels, "input_ids and labels as given"
    if example.messages is not None:
        if ctx.template_ok and _GENERATION_BLOCK.search(ctx.tokenizer.chat_template or ""):
            ids, labels = _template_labels(ctx, example.messages)
            if ids == example.full_ids:
                return labels, "rendered with the chat template; labels from its {% generation %} mask"
        return None, ("rendered with the chat template; every token supervised (TRL's default without "
                      "assistant_only_loss)")
    if example.answer_start is not None:
        rendered = "rendered with the chat template" if ctx.template_ok else "tokenised as prompt + response"
        labels = [IGNORE_INDEX] * example.answer_start + example.full_ids[example.answer_start:]
        return labels, f"{rendered}; the prompt masked (TRL's completion_only_loss for prompt/response data)"
    return None, "tokenizer(text); every token supervised (a causal LM trainer without a mask)"


def example_view(bundle, sample: list[dict], number: int) -> tuple[list[LabelledToken], str]:
    """Sample example ``number`` (from 1) as labelled tokens (:mod:`playground.supervision`), read the way the
    checks read it, and a sentence saying where its labels come from. ``ValueError`` names a bad number."""
    if not sample:
        raise ValueError("example: no training sample given")
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= len(sample):
        raise ValueError(f"example must be a number from 1 to {len(sample)} (the sample's examples), got {number!r}")
    ctx = Context(bundle, sample[number - 1:number], max_length=2)
    example = ctx.sample_examples[0]
    labels, how = example_labels(ctx, example)
    return tokens_of(ctx.tokenizer, example.full_ids, labels, set(ctx.end_ids)), f"Example {number}: {how}."


# --------------------------------------------------------------------------------------------------
# format_matches_inference


def _inference_ids(ctx: Context, prompt) -> list[int]:
    """The ids an inference call is given: the chat template with add_generation_prompt=True, or the raw text."""
    if isinstance(prompt, list):
        return list(ctx.tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                      return_dict=True)["input_ids"])
    ids = ctx.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return ids[:-1] if ctx.appends_eos and ids and ids[-1] in ctx.all_eos_ids else ids  # a prompt has no end yet


def _contains(ids: list[int], part: list[int]) -> int | None:
    """Where ``part`` last occurs in ``ids``, or None."""
    for start in range(len(ids) - len(part), -1, -1):
        if ids[start:start + len(part)] == part:
            return start
    return None


def check_format_matches_inference(ctx: Context) -> Finding:
    """The ids inference gives the model (chat template + add_generation_prompt) are the training example's ids up
    to the answer."""
    title = "Training examples use the prompt format of inference"
    why = (
        "A model learns to stop in the state its training examples put it in. Trained on Alpaca-style or raw text "
        "and served with the chat template (or the reverse), or served without add_generation_prompt=True, it "
        "never reaches that state: it answers in a format it was not trained on, and it has not learned where "
        "that format ends."
    )
    if ctx.sample is None:
        return Finding("format_matches_inference", title, "not_applicable",
                       "No training sample given (pass --sample FILE.jsonl).", why, "Nothing to check.")
    served = ("the chat template with add_generation_prompt=True" if ctx.template_ok
              else "the prompt text as it is (the tokenizer has no chat template)")
    header = ctx.assistant_header_ids() if ctx.template_ok else None
    mismatches, checked = [], 0
    for example in ctx.sample_examples:
        if isinstance(example.prompt, list) or (example.prompt is not None and example.answer_start is not None):
            checked += 1
            inference = _inference_ids(ctx, example.prompt)
            trained = example.full_ids[:example.answer_start]
            gap = example.full_ids[len(inference):example.answer_start]
            if example.full_ids[:len(inference)] != inference or not all(ctx.is_whitespace(i) for i in gap):
                at = next((i for i, (a, b) in enumerate(zip(inference, trained)) if a != b),
                          min(len(inference), len(trained)))
                mismatches.append({"example": example.label, "index": at, "inference_ids": inference[at:at + 6],
                                   "training_ids": trained[at:at + 6]})
        elif header is not None:  # text or input_ids served with the template: its assistant header must be there
            checked += 1
            ids = example.full_ids
            if example.labels is not None:  # the header must come before the supervised answer
                ids = ids[:next((i for i, label in enumerate(example.labels) if label != IGNORE_INDEX), len(ids))]
            if _contains(ids, header) is None:
                mismatches.append({"example": example.label, "index": None, "inference_ids": header,
                                   "training_ids": example.full_ids[:6]})
    data = {"served_with": served, "checked": checked, "mismatches": len(mismatches), "assistant_header_ids": header,
            "examples": mismatches[:8]}
    if not checked:
        return Finding("format_matches_inference", title, "not_applicable",
                       f"The sample's examples cannot be compared with {served}.", why, "Nothing to check.", data)
    found = [f"{checked} example(s) compared with {served}: {len(mismatches)} differ from it before the answer."]
    if not mismatches:
        return Finding("format_matches_inference", title, "ok", found[0], why, "Nothing to fix.", data)
    first = mismatches[0]
    if first["index"] is None:
        found.append(f"First: {first['example']} starts {ctx.pieces(first['training_ids'])} {first['training_ids']} "
                     f"and has no assistant header {ctx.pieces(header)} {header} before its answer: it was trained "
                     "on another format (raw text, Alpaca-style) than the chat template it is served with.")
    else:
        found.append(f"First: {first['example']} at token {first['index']}: inference gives "
                     f"{ctx.pieces(first['inference_ids'])} {first['inference_ids']}, training had "
                     f"{ctx.pieces(first['training_ids'])} {first['training_ids']}.")
    fix = ("Serve the model with the format it was trained on, or train on the format you serve:\n```python\n"
           "# served with the chat template: train on it too\n"
           "text = tokenizer.apply_chat_template(messages, tokenize=False)\n"
           "# at inference: the header the answer follows\n"
           "inputs = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_tensors='pt', "
           "return_dict=True)\n"
           "# trained on raw text: prompt exactly as in training, without the chat template\n"
           "inputs = tokenizer(TRAINING_PROMPT_FORMAT.format(question=question), return_tensors='pt')\n```")
    status = "problem" if len(mismatches) / checked >= 0.5 else "warning"
    return Finding("format_matches_inference", "Training examples use another prompt format than inference", status,
                   " ".join(found), why, fix, data, action="generation")


# --------------------------------------------------------------------------------------------------
# bos_eos_doubled


def _doubled_end(ctx: Context, example: Example) -> list[int] | None:
    """The run of end tokens right after the answer, when it has more than one."""
    if example.end_index is None:
        return None
    run, index = [], example.end_index
    while index < len(example.full_ids):
        token_id = example.full_ids[index]
        if ctx.is_end(token_id):
            run.append(token_id)
        elif not ctx.is_whitespace(token_id):
            break
        index += 1
    return run if len(run) > 1 else None


def check_bos_eos_doubled(ctx: Context) -> Finding:
    """A training example starts with one BOS and ends its answer with one end token, not two."""
    title = "Examples have one BOS and one end token"
    why = (
        "A chat template that writes {{ bos_token }} tokenised by a tokenizer that adds BOS again, or an end token "
        "that add_eos_token (or packing) appends after the template's own, trains on 'BOS BOS' and 'end end'. "
        "Inference gives one BOS and stops at the first end: the model learns states it never meets, and collators "
        "that mask pad == EOS or cut at max_length keep the wrong end."
    )
    bos = ctx.tokenizer.bos_token_id
    found, data = [], {"bos_token_id": bos}
    rendered_bos = 0
    if ctx.template_ok and bos is not None:
        encoded = ctx.tokenizer(ctx.template["text"], add_special_tokens=True)["input_ids"]
        rendered_bos = len(encoded) > 1 and encoded[0] == encoded[1] == bos
        data["rendered_with_special_tokens_starts"] = encoded[:4]
        if rendered_bos:
            found.append(f"tokenizer(apply_chat_template(..., tokenize=False)) starts {ctx.pieces(encoded[:3])} "
                         f"{encoded[:3]}: the template writes BOS {ctx.named(bos)} and the tokenizer adds another.")
    double_bos = [e for e in ctx.sample_examples if bos is not None and len(e.full_ids) > 1
                  and e.full_ids[0] == e.full_ids[1] == bos]
    double_end = [(e, run) for e in ctx.sample_examples for run in [_doubled_end(ctx, e)] if run]
    data.update({"examples": len(ctx.sample_examples), "double_bos": [e.label for e in double_bos][:8],
                 "double_end": [{"example": e.label, "end_index": e.end_index, "ids": run} for e, run in double_end][:8]})
    if double_bos:
        first = double_bos[0]
        found.append(f"{len(double_bos)} sample example(s) start with BOS twice (first: {first.label}, "
                     f"{ctx.pieces(first.full_ids[:3])} {first.full_ids[:3]}).")
    if double_end:
        first, run = double_end[0]
        found.append(f"{len(double_end)} sample example(s) end the answer with {len(run)} end tokens (first: "
                     f"{first.label}, {ctx.pieces(run)} {run} from index {first.end_index}).")
    if not found:
        source = f"{len(ctx.sample_examples)} sample example(s)" if ctx.sample is not None else "the chat template"
        if ctx.sample is None and not ctx.template_ok:
            return Finding("bos_eos_doubled", title, "not_applicable", "No training sample and no chat template.",
                           why, "Nothing to check.", data)
        return Finding("bos_eos_doubled", title, "ok", f"Checked {source}: no BOS {ctx.named(bos) if bos is not None else '(none)'} "
                       "twice at the start, no end token twice after an answer.", why, "Nothing to fix.", data)
    fix = ("Let one thing add each special token, then rebuild the data and retrain:\n```python\n"
           "text = tokenizer.apply_chat_template(messages, tokenize=False)  # writes BOS and the turn ends\n"
           "ids = tokenizer(text, add_special_tokens=False)['input_ids']  # adds none again\n"
           "# raw text: tokenizer(text)['input_ids'] + [tokenizer.eos_token_id] only if the tokenizer does not "
           "append EOS itself (add_eos_token), and no end string typed into the text\n```")
    status = "problem" if double_bos or double_end else "warning"
    return Finding("bos_eos_doubled", "BOS or EOS written twice", status, " ".join(found), why, fix, data,
                   action="retrain")


# --------------------------------------------------------------------------------------------------
# packing_separates_samples


def _sample_start(ctx: Context) -> list[int] | None:
    """The ids every training sample starts with (BOS, or the template's opening), found once per conversation."""
    tokenizer = ctx.tokenizer
    bos = tokenizer.bos_token_id
    if ctx.template_ok:
        ids = tokenizer(ctx.template["text"], add_special_tokens=False)["input_ids"]
        for width in (1, 2, 3):
            start = ids[:width]
            if len(start) == width and sum(ids[p:p + width] == start for p in range(len(ids))) == 1:
                return start
        return None
    encoded = tokenizer("a")["input_ids"]
    return [bos] if bos is not None and encoded[:1] == [bos] else None


def check_packing_separates_samples(ctx: Context) -> Finding:
    """In packed rows, every sample boundary follows a supervised end token."""
    title = "Packed samples are separated by a supervised end token"
    why = (
        "Packing puts several samples in one row. The model learns to stop only if each sample ends with an end "
        "token whose label is not -100 before the next one begins; without it, the model learns that after an "
        "answer comes another conversation. Wrapped packing that cuts samples at the row's edge, and "
        "pre-tokenised data that skips the trainer's EOS append, lose it the same way."
    )
    rows = ctx.labelled_examples
    if not rows:
        return Finding("packing_separates_samples", title, "not_applicable",
                       "No pre-tokenised {\"input_ids\", \"labels\"} rows in the sample (packing happens after "
                       "tokenisation: pass packed rows to check them).", why, "Nothing to check.")
    start = _sample_start(ctx)
    if start is None:
        return Finding("packing_separates_samples", title, "not_applicable",
                       "Cannot find where samples start: the tokenizer adds no BOS and no chat template opens each "
                       "conversation with its own tokens.", why, "Nothing to check.")
    boundaries, failures, cut, packed = 0, [], [], 0
    for example in rows:
        ids, labels = example.full_ids, example.labels
        starts = [p for p in range(1, len(ids) - len(start) + 1) if ids[p:p + len(start)] == start]
        packed += bool(starts)
        if starts and ids[:len(start)] != start:
            cut.append({"example": example.label, "starts_with": ids[:4]})
        for boundary in starts:
            boundaries += 1
            previous = boundary - 1
            while previous > 0 and ctx.is_whitespace(ids[previous]):
                previous -= 1
            if not ctx.is_end(ids[previous]) or labels[previous] == IGNORE_INDEX:
                failures.append({"example": example.label, "boundary": boundary, "previous_index": previous,
                                 "previous_id": ids[previous], "label": labels[previous],
                                 "end": ctx.is_end(ids[previous])})
    data = {"sample_start_ids": start, "rows": len(rows), "packed_rows": packed, "boundaries": boundaries,
            "failures": failures[:8], "failed_boundaries": len(failures), "rows_starting_mid_sample": cut[:8]}
    found = [f"{len(rows)} pre-tokenised row(s), {packed} packed (several samples, each opening with "
             f"{ctx.pieces(start)} {start}): {boundaries} sample boundaries, {len(failures)} without a supervised end "
             "token before them."]
    if not packed:
        return Finding("packing_separates_samples", title, "not_applicable", found[0] + " No row is packed.", why,
                       "Nothing to check.", data)
    if cut:
        found.append(f"{len(cut)} packed row(s) start mid-sample (first: {cut[0]['example']}, "
                     f"{ctx.pieces(cut[0]['starts_with'])}): wrapped packing cut a sample.")
    if not failures and not cut:
        return Finding("packing_separates_samples", title, "ok", found[0], why, "Nothing to fix.", data)
    if failures:
        first = failures[0]
        found.append(f"First: {first['example']}, the sample starting at index {first['boundary']} follows "
                     f"{ctx.named(first['previous_id'])} at index {first['previous_index']}"
                     + (" with label -100." if first["end"] else ", which is no end token."))
    eos = ctx.template_end if ctx.template_end is not None else ctx.tokenizer_eos_id
    fix = ("End every sample with its end token, supervised, before packing; then retrain:\n```python\n"
           f"ids = sample_ids + [{eos}]  # {ctx.token(eos)}, unless the sample already ends with it\n"
           "labels = sample_labels + [" + str(eos) + "]  # not -100\n"
           "# TRL: SFTConfig(packing=True, packing_strategy='bfd') keeps samples whole and their EOS in place\n```")
    status = "problem" if failures else "warning"
    return Finding("packing_separates_samples", "Packed samples run into each other without a supervised end token",
                   status, " ".join(found), why, fix, data, action="retrain")


# --------------------------------------------------------------------------------------------------
# labels_aligned


def check_labels_aligned(ctx: Context) -> Finding:
    """The supervised span starts at the answer's first token and ends on the end token; labels are not shifted."""
    title = "Labels cover the answer from its first token to the end token"
    why = (
        "Hugging Face models shift labels themselves: labels[i] must equal input_ids[i] where supervised. Labels "
        "shifted by hand, or a mask that is one token off at the answer boundary, drop the first answer token or "
        "the end token from the loss - the second means the model never learns to stop."
    )
    rows = ctx.labelled_examples
    if not rows:
        return Finding("labels_aligned", title, "not_applicable",
                       "No pre-tokenised {\"input_ids\", \"labels\"} rows in the sample.", why, "Nothing to check.")
    header = ctx.assistant_header_ids() if ctx.template_ok else None
    issues = []
    for example in rows:
        ids, labels = example.full_ids, example.labels
        supervised = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        if not supervised:
            issues.append({"example": example.label, "problem": "no token is supervised"})
            continue
        equal = sum(labels[i] == ids[i] for i in supervised)
        shifted = sum(i + 1 < len(ids) and labels[i] == ids[i + 1] for i in supervised)
        if equal < len(supervised) / 2 and shifted > equal:
            issues.append({"example": example.label, "problem": "shifted", "index": supervised[0],
                           "label": labels[supervised[0]], "input_id": ids[supervised[0]]})
            continue
        at = _contains(ids, header) if header else None
        if at is not None:
            answer_start = at + len(header)
            while answer_start < len(ids) and ctx.is_whitespace(ids[answer_start]):
                answer_start += 1
            first = next((i for i in supervised if i >= at), None)
            if first is not None and first > answer_start:
                issues.append({"example": example.label, "problem": "first answer token masked",
                               "index": answer_start, "id": ids[answer_start], "first_supervised": first})
                continue
        if example.end_index is not None and labels[example.end_index] == IGNORE_INDEX:
            issues.append({"example": example.label, "problem": "end token masked", "index": example.end_index,
                           "id": ids[example.end_index], "last_supervised": supervised[-1]})
    data = {"rows": len(rows), "misaligned": len(issues), "issues": issues[:8], "assistant_header_ids": header}
    found = [f"{len(rows)} labelled row(s): {len(issues)} with labels off the answer."]
    if not issues:
        return Finding("labels_aligned", title, "ok", found[0] + " The supervised span starts at the answer's first "
                       "token and covers its end token.", why, "Nothing to fix.", data)
    first = issues[0]
    if first["problem"] == "shifted":
        found.append(f"First: {first['example']} - labels are shifted by one (label {first['label']} at index "
                     f"{first['index']} is the next input id, not {first['input_id']}): the model shifts them again.")
    elif first["problem"] == "first answer token masked":
        found.append(f"First: {first['example']} - the answer's first token {ctx.named(first['id'])} at index "
                     f"{first['index']} has label -100; supervision starts at {first['first_supervised']}.")
    elif first["problem"] == "end token masked":
        found.append(f"First: {first['example']} - the end token {ctx.named(first['id'])} at index {first['index']} "
                     f"has label -100; supervision stops at {first['last_supervised']}.")
    else:
        found.append(f"First: {first['example']} - {first['problem']}.")
    fix = ("Label the answer and its end token with their own ids (no shift), then retrain:\n```python\n"
           "labels = [-100] * answer_start + input_ids[answer_start:end_index + 1]\n"
           "labels += [-100] * (len(input_ids) - len(labels))\n"
           "# answer_start: the first token after the assistant header; end_index: the end token after the answer\n"
           "```")
    status = "problem" if any(i["problem"] != "first answer token masked" for i in issues) or \
        len(issues) / len(rows) >= 0.5 else "warning"
    return Finding("labels_aligned", "Labels are off the answer by one token or more", status, " ".join(found), why,
                   fix, data, action="retrain")
