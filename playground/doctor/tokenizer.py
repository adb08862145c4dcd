"""Checks on the tokenizer: the pad token, the EOS written as text, and add_eos_token."""

from __future__ import annotations

from .core import Context, Example, Finding

# Collating a handful of examples is enough to show what happens to the EOS label.
MAX_COLLATED_EXAMPLES = 8


def _collate_eos_labels(ctx: Context, examples: list[Example]) -> dict:
    """Run DataCollatorForLanguageModeling(mlm=False) and look at the label of each example's final EOS."""
    from transformers import DataCollatorForLanguageModeling

    tokenizer = ctx.tokenizer
    features, positions, appended = [], [], 0
    for example in examples[:MAX_COLLATED_EXAMPLES]:
        if example.end_index is not None:
            ids = example.full_ids[: example.end_index + 1]
        else:  # no EOS in the data: append it by id, as a correct training script would
            ids = example.prefix_ids + [ctx.tokenizer_eos_id]
            appended += 1
        features.append({"input_ids": ids})
        positions.append(len(ids) - 1)
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
    batch = collator(features)
    width = batch["labels"].shape[1]
    masked = []
    for row, (feature, position) in enumerate(zip(features, positions)):
        offset = width - len(feature["input_ids"]) if tokenizer.padding_side == "left" else 0
        masked.append(int(batch["labels"][row, offset + position]) == -100)
    return {"collated": len(features), "eos_label_masked": sum(masked), "eos_appended": appended}


def check_pad_is_eos(ctx: Context) -> Finding:
    """pad == EOS: collators that mask pad labels (-100) also mask every EOS, so stopping is never learned."""
    tokenizer = ctx.tokenizer
    pad_id = tokenizer.pad_token_id
    title = "Pad token is distinct from EOS"
    why = (
        "DataCollatorForLanguageModeling(mlm=False), and hand-written `labels[labels == pad_token_id] = -100`, "
        "mask labels by *value*. When pad is an EOS id, every real EOS label becomes -100 too, so the loss never "
        "rewards emitting EOS and a fine-tuned model keeps talking."
    )
    eos_set = list(ctx.end_ids)
    candidate = pad_candidate(ctx)
    repair = {"pad_token": ctx.tokenizer.convert_ids_to_tokens(candidate)} if candidate is not None else None
    action = "files" if repair else "retrain"
    if pad_id is None:
        return Finding("pad_is_eos", "Tokenizer has no pad token", "warning",
                       "The tokenizer has no pad token; batching will fail.", why,
                       _pad_fix(ctx, candidate), {"pad_token_id": None, "repair": repair}, action=action)
    if pad_id not in eos_set:
        return Finding("pad_is_eos", title, "ok",
                       f"pad_token {ctx.named(pad_id)} is not an EOS/end token {ctx.named_list(eos_set)}.", why,
                       "Nothing to fix.", {"pad_token_id": pad_id})
    found = f"pad_token {ctx.named(pad_id)} is the same id as the EOS/end token."
    data: dict = {"pad_token_id": pad_id}
    labelled = [e for e in ctx.labelled_examples if e.end_index is not None]
    if labelled:  # the sample says what the trainer saw: read its labels rather than guess at a collator
        masked = sum(e.labels[e.end_index] == -100 for e in labelled)
        data.update({"labelled": len(labelled), "eos_label_masked": masked, "repair": repair})
        if masked:
            found += (f" In your sample's labels the end token after the answer is -100 in {masked} of "
                      f"{len(labelled)}: a collator masked pad ids by value and took the real EOS with them.")
            return Finding("pad_is_eos", "Pad token is the same id as EOS", "problem", found, why,
                           _pad_fix(ctx, candidate), data, action=action)
        found += (f" Your sample's labels supervise the end token after the answer in all {len(labelled)}: "
                  "whatever collated them kept it, so the training was not hurt (a collator that masks pad ids by "
                  "value would be: keep the one you used).")
        return Finding("pad_is_eos", "Pad token is the same id as EOS, and your labels keep the EOS", "ok", found,
                       why, _pad_fix(ctx, candidate), data)
    try:
        result = _collate_eos_labels(ctx, ctx.examples)
    except Exception as error:  # e.g. a tokenizer that cannot pad
        result = None
        found += f" (Could not run DataCollatorForLanguageModeling: {type(error).__name__}: {error}.)"
    if result is not None:
        data.update(result)
        source = "your sample" if ctx.sample is not None else "the built-in example conversations"
        found += (
            f" Running DataCollatorForLanguageModeling(mlm=False) on {result['collated']} of {source}: the label "
            f"of the end token after the answer became -100 in {result['eos_label_masked']} of "
            f"{result['collated']}"
            + (f" ({result['eos_appended']} example(s) had none, so tokenizer.eos_token_id "
               f"{ctx.named(ctx.tokenizer_eos_id)} was appended)." if result["eos_appended"] else ".")
        )
    status = "warning"
    if ctx.sample is not None and result is not None and result["eos_label_masked"]:
        status = "problem"
    elif ctx.sample is None:
        found += " Harmless for generation; it matters when you fine-tune with this tokenizer."
    data["repair"] = repair
    return Finding("pad_is_eos", "Pad token is the same id as EOS", status, found, why, _pad_fix(ctx, candidate), data,
                   action=action)


def pad_candidate(ctx: Context) -> int | None:
    """An existing token that can pad: not an end token, not written by the chat template, not BOS, with an
    embedding row. Named pad tokens first, then the unknown token, then reserved and other unused special tokens."""
    tokenizer = ctx.tokenizer
    rows = ctx.base.get_input_embeddings().weight.shape[0]
    avoid = set(ctx.template_special_ids) | {tokenizer.bos_token_id}

    def usable(token_id) -> bool:
        return token_id is not None and token_id < rows and not ctx.is_end(token_id) and token_id not in avoid

    added = {int(i): str(t) for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()}
    ranked = ([i for i, t in added.items() if "pad" in t.lower()] + [tokenizer.unk_token_id]
              + [i for i, t in added.items() if "reserved" in t.lower()] + sorted(ctx.special_ids))
    return next((i for i in ranked if usable(i)), None)


def _pad_fix(ctx: Context, candidate: int | None) -> str:
    if candidate is not None:
        token = ctx.tokenizer.convert_ids_to_tokens(candidate)
        first = (f"Pad with a token that is neither an end token nor part of the chat template, e.g. "
                 f"{ctx.named(candidate)}:\n```python\ntokenizer.pad_token = {token!r}\n"
                 "model.config.pad_token_id = tokenizer.pad_token_id\n```")
    else:
        first = ("Add a dedicated pad token:\n```python\ntokenizer.add_special_tokens({'pad_token': '<|pad|>'})\n"
                 "model.resize_token_embeddings(len(tokenizer))\nmodel.config.pad_token_id = tokenizer.pad_token_id\n```")
    return (first + "\nOr keep pad == EOS but build labels before padding (labels = input_ids[:]) and collate with "
            "DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100), which pads labels with -100 instead of "
            "masking by value.")


def check_eos_string_splits(ctx: Context) -> Finding:
    """Writing the EOS as text must give exactly the EOS id, with or without a space before it."""
    tokenizer = ctx.tokenizer
    eos, eos_id = tokenizer.eos_token, ctx.tokenizer_eos_id
    title = "EOS written as text becomes the EOS id"
    why = (
        "Training code often appends the EOS as a string (text + tokenizer.eos_token or a literal '</s>'). If the "
        "tokenizer splits that string into ordinary pieces (ChatGLM2: '</s>' -> '</', 's', '>'), the model learns "
        "to write those pieces, never the id generate() stops on, and rambles until max_new_tokens."
    )
    if eos is None or eos_id is None:
        return Finding("eos_string_splits", title, "not_applicable", "The tokenizer has no EOS token.", why,
                       "See eos_ids_agree.")
    alone = tokenizer(eos, add_special_tokens=False)["input_ids"]
    glued = tokenizer("Hello." + eos, add_special_tokens=False)["input_ids"]
    spaced = tokenizer("Hello. " + eos, add_special_tokens=False)["input_ids"]
    data = {"eos_token": eos, "eos_token_id": eos_id, "alone": alone, "glued": glued, "spaced": spaced}
    found = [
        f"tokenizer({eos!r}) -> {ctx.pieces(alone)} {alone}; 'Hello.' + eos_token -> ends {ctx.pieces(glued[-3:])}; "
        f"'Hello. ' + eos_token -> ends {ctx.pieces(spaced[-3:])}; EOS id is {eos_id}."
    ]
    unk_id = tokenizer.unk_token_id
    if unk_id is not None and eos_id == unk_id and eos != tokenizer.unk_token:
        found.append(f"{eos!r} is not in the vocabulary at all: its id {eos_id} is the unknown token "
                     f"{ctx.token(unk_id)}.")
    healthy = alone == [eos_id] and glued[-1:] == [eos_id] and spaced[-1:] == [eos_id]
    if healthy and len(found) == 1:
        return Finding("eos_string_splits", title, "ok", found[0] + " The string form is safe.", why,
                       "Nothing to fix (appending tokenizer.eos_token_id is still the safest habit).", data)
    if alone != [eos_id]:
        found.append(f"The string {eos!r} splits into {len(alone)} ordinary token(s) instead of id {eos_id}.")
    elif not healthy:
        found.append("Glued to text, the EOS string does not end in the EOS id.")
    fix = ("Append the id, not the string:\n```python\nids = tokenizer(prompt + response)['input_ids'] + "
           "[tokenizer.eos_token_id]\n```\nIf the EOS should be a real special token, register it and resize:\n"
           f"```python\ntokenizer.add_special_tokens({{'eos_token': {eos!r}}})\nmodel.resize_token_embeddings(len(tokenizer))\n"
           "model.generation_config.eos_token_id = tokenizer.eos_token_id\n```")
    return Finding("eos_string_splits", "EOS written as text does not become the EOS id", "problem", " ".join(found),
                   why, fix, data, action="retrain")


def check_tokenizer_appends_eos(ctx: Context) -> Finding:
    """add_eos_token (or the post-processor) promises EOS: encoding 'a' must then end with it."""
    tokenizer = ctx.tokenizer
    promised = bool(getattr(tokenizer, "add_eos_token", False))
    ids = ctx.encoded_a
    data = {"add_eos_token": promised, "encoded_a": ids, "appends_eos": ctx.appends_eos}
    title = "Tokenizer adds EOS when it says it does"
    why = (
        "Scripts that rely on tokenizer(text) to add the EOS (add_eos_token=True) silently train without "
        "any EOS when the setting is not applied - a known trap with fast Llama tokenizers whose post-processor "
        "was not updated."
    )
    found = f"add_eos_token = {promised}; tokenizer('a') -> {ids} {ctx.pieces(ids)}."
    if promised and not ctx.appends_eos:
        return Finding("tokenizer_appends_eos", "Tokenizer says it adds EOS but does not", "problem",
                       found + " The tokenizer promises an EOS but does not add one.", why,
                       "Do not rely on the flag; append the id yourself:\n```python\nids = tokenizer(text)['input_ids'] "
                       "+ [tokenizer.eos_token_id]\n```\nor rebuild the post-processor, e.g. "
                       "`tokenizer.add_eos_token = True` on a tokenizer class that updates it (and re-check this).",
                       data, action="retrain")
    if ctx.appends_eos:
        return Finding("tokenizer_appends_eos", title, "ok",
                       found + " tokenizer(text) appends the EOS itself - do not append it a second time.", why,
                       "Nothing to fix.", data)
    where = ("the chat template" if ctx.has_template else "nothing else")
    return Finding("tokenizer_appends_eos", title, "ok",
                   found + f" The tokenizer does not add EOS by itself (and does not claim to); {where} has to put it "
                   "there - see chat_template_eos and sample_ends_with_eos.", why,
                   "Nothing to fix; when you tokenise raw text for training, append tokenizer.eos_token_id.", data)

