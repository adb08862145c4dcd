"""Checks on which ids end a generation: the three configs, a family's several end tokens, a GGUF export."""

from __future__ import annotations

from .core import Context, Finding
from .gguf_meta import END_KEYS, read_gguf_metadata
from .runtimes import stop_lists

# End tokens that come in families: a model that knows one usually emits the others in some situation
# (end of a chat turn vs end of a raw text, a tool call).
END_FAMILIES = (
    ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),  # Llama 3
    ("<|im_end|>", "<|endoftext|>"),  # Qwen, ChatML fine-tunes
    ("<end_of_turn>", "<eos>"),  # Gemma
    ("<|end|>", "<|endoftext|>"),  # Phi-3
)
# Tokens recent llama.cpp builds treat as end-of-generation by their text alone (llama-vocab.cpp, since Sept 2024).
LLAMA_CPP_EOG_NAMES = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
                       "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>"}


def check_eos_ids_agree(ctx: Context) -> Finding:
    """Tokenizer, model config and generation config agree on the EOS ids (generate() reads only the last)."""
    tok_id, cfg, stop = ctx.tokenizer_eos_id, ctx.config_eos_ids, ctx.stop_ids
    found = [
        f"tokenizer.eos_token = {ctx.tokenizer.eos_token!r} (id {tok_id}); "
        f"model.config.eos_token_id = {cfg or None}; generation_config.eos_token_id = {stop or None}.",
    ]
    others = [i for i in ctx.end_like if i not in stop and i != tok_id]
    template_end = ctx.template_end
    if template_end in others:
        found.append(f"The chat template ends assistant turns with {ctx.named(template_end)}, which generation does "
                     "not stop on (see chat_template_eos).")
    unused = [i for i in others if i != template_end]
    if unused:
        found.append(
            f"Other end-like special tokens that generation does not stop on: {ctx.named_list(unused)}. "
            "That is normal when neither the chat template nor the training data uses them "
            "(p_eos_at_answer_end shows how much probability the model gives them)."
        )
    data = {"tokenizer": tok_id, "model_config": cfg, "generation_config": stop, "other_end_like": others}
    title = "EOS ids agree across tokenizer, model config and generation config"
    why = (
        "generate() stops only on the ids in generation_config.eos_token_id. Training appends "
        "tokenizer.eos_token, so if that id is not in the list the model can emit its learned stop token and "
        "keep going; model.config.eos_token_id is not read by generate() in transformers 5."
    )
    if not stop:
        ids = list(ctx.all_eos_ids)
        return Finding("eos_ids_agree", "Generation has no EOS id to stop on", "problem", " ".join(found + [
            "generate() has no EOS id at all: it only stops at max_new_tokens."]), why,
            "Give generation an EOS id:\n```python\nmodel.generation_config.eos_token_id = "
            f"{ids or ['tokenizer.eos_token_id']}\n```", dict(data, repair={"stop_on": ids}) if ids else data,
            action="files")
    if tok_id is None:
        return Finding("eos_ids_agree", "The tokenizer has no EOS token", "problem",
                       " ".join(found + ["The tokenizer has no EOS token."]),
                       why, "Set one: `tokenizer.eos_token = tokenizer.convert_ids_to_tokens("
                       f"{stop[0]})` so training appends the id generation stops on.",
                       dict(data, repair={"eos_token": ctx.tokenizer.convert_ids_to_tokens(stop[0])}), action="files")
    if tok_id not in stop:
        found.append(
            f"The tokenizer's EOS {ctx.named(tok_id)} is not among the ids generation stops on "
            f"{ctx.named_list(stop)}: a model trained to end with it never stops."
        )
        return Finding("eos_ids_agree", "The tokenizer's EOS is not an id generation stops on", "problem", " ".join(found), why,
                       "Stop on both (and save it with the model):\n```python\n"
                       f"model.generation_config.eos_token_id = {stop + [tok_id]}\n"
                       "model.generation_config.save_pretrained(output_dir)\n```",
                       dict(data, repair={"stop_on": [tok_id]}), action="files")
    missing = [i for i in cfg if i not in stop]
    if missing:
        found.append(
            f"model.config lists {ctx.named_list(missing)} but generation_config does not, so generate() only "
            f"uses {ctx.named_list(stop)}"
            + (" - only the first of several EOS ids is used." if len(cfg) > 1 and stop == cfg[:1] else ".")
        )
        return Finding("eos_ids_agree", "Generation config misses EOS ids that model.config lists", "warning",
                       " ".join(found), why,
                       "Make generation stop on all of them:\n```python\n"
                       f"model.generation_config.eos_token_id = {stop + missing}\n```",
                       dict(data, repair={"stop_on": missing}), action="files")
    if len(stop) > 1:
        found.append(
            f"Generation stops on {len(stop)} ids but tokenizer.eos_token_id is just {tok_id}: code that passes "
            "eos_token_id=tokenizer.eos_token_id to generate() or stops on it by hand uses only that one."
        )
    fix = "Nothing to fix."
    if others:
        fix = ("Nothing to fix. If the model does emit one of the other end tokens, stop on it too:\n```python\n"
               f"model.generation_config.eos_token_id = {stop + others[:1]}\n```")
    return Finding("eos_ids_agree", title, "ok", " ".join(found), why, fix, data)


def check_end_tokens_all_stop(ctx: Context) -> Finding:
    """Every end token in use (tokenizer EOS, the template's turn end, model.config's ids) is a stop id."""
    title = "Generation stops on every end token the model uses"
    why = (
        "Several model families have more than one end token: Llama 3 ends a chat turn with <|eot_id|> and a text "
        "with <|end_of_text|>, Qwen <|im_end|> and <|endoftext|>, Gemma <end_of_turn> and <eos>. generate() stops "
        "only on generation_config.eos_token_id; when it lists one of them, a model that ends with the other runs "
        "on (the original Llama 3 Instruct release, fixed by listing both)."
    )
    uses: dict[int, list[str]] = {}
    if ctx.tokenizer_eos_id is not None:
        uses.setdefault(ctx.tokenizer_eos_id, []).append("tokenizer.eos_token (raw-text training appends it)")
    for token_id in dict.fromkeys(ctx.template_end_run):
        uses.setdefault(token_id, []).append("the chat template ends assistant turns with it")
    for token_id in ctx.config_eos_ids:
        uses.setdefault(token_id, []).append("model.config.eos_token_id")
    stop = ctx.stop_ids
    in_family = set()
    for family in END_FAMILIES:
        ids = [ctx.token_id(token) for token in family if ctx.token_id(token) is not None]
        if any(i in uses or i in stop for i in ids):
            in_family |= {i for i in ids if i not in uses and i not in stop}
    missing = [i for i in uses if i not in stop]
    lines = [f"{ctx.named(i)}: {'; '.join(reasons)} - {'stops' if i in stop else 'does NOT stop'} generation"
             for i, reasons in uses.items()]
    found = (f"generation_config.eos_token_id = {stop or None} ({len(stop)} id(s)). End tokens in use: "
             + ". ".join(lines) + ".")
    if in_family:
        found += (f" Also in the vocabulary, from the same family, unused here and not stop ids: "
                  f"{ctx.named_list(sorted(in_family))} (p_eos_at_answer_end shows whether the model emits them).")
    data = {"stop_ids": stop, "in_use": {i: reasons for i, reasons in uses.items()}, "missing": missing,
            "family_not_in_use": sorted(in_family)}
    every_end = list(dict.fromkeys(list(uses) + stop))
    data["stop_lists"] = stop_lists(every_end, ctx.tokenizer.convert_ids_to_tokens(every_end))
    if not stop:
        return Finding("end_tokens_all_stop", title, "not_applicable", found + " Generation has no stop id at all "
                       "(see eos_ids_agree).", why, "See eos_ids_agree.", data)
    if not missing:
        return Finding("end_tokens_all_stop", title, "ok", found, why, "Nothing to fix.", data)
    data["repair"] = {"stop_on": missing}
    # An id only model.config lists is a publisher's hint; the tokenizer's EOS and the template's turn end are
    # what training actually put after answers.
    trained = [i for i in missing if uses[i] != ["model.config.eos_token_id"]]
    return Finding("end_tokens_all_stop", "Generation does not stop on every end token the model uses",
                   "problem" if trained else "warning",
                   found + f" The generation config lists {len(stop)} id(s) and misses {ctx.named_list(missing)}.",
                   why, "Stop on all of them and save it with the model:\n```python\n"
                   f"model.generation_config.eos_token_id = {stop + missing}\n"
                   "model.generation_config.save_pretrained(output_dir)\n```\nor per call: "
                   f"`model.generate(..., eos_token_id={stop + missing})`.", data, action="files")


def check_gguf_end_tokens(ctx: Context) -> Finding:
    """A GGUF export keeps the end-of-turn token: its eos/eot/eom ids include the token a reply ends with."""
    title = "GGUF metadata keeps the end-of-turn token"
    why = (
        "A GGUF file holds one tokenizer.ggml.eos_token_id plus optional eot_token_id / eom_token_id; llama.cpp, "
        "ollama and other runtimes stop on those. Converting a chat fine-tune whose tokenizer EOS is the text end "
        "(<|end_of_text|>, <|endoftext|>) but whose turns end with <|eot_id|> / <|im_end|> loses the turn end, "
        "and the model never stops there. Recent llama.cpp builds also stop on some tokens by their name; older "
        "builds and runtimes that read only the metadata do not."
    )
    path = ctx.gguf_path
    if path is None:
        return Finding("gguf_end_tokens", title, "not_applicable",
                       "No GGUF file involved (pass --gguf FILE to check an export).", why, "Nothing to check.")
    try:
        metadata = read_gguf_metadata(path)
    except (OSError, ValueError) as error:
        return Finding("gguf_end_tokens", "GGUF file could not be read", "problem", f"Could not read {path}: {error}", why,
                       "Check the path; a GGUF file starts with the bytes 'GGUF'.", {"path": str(path)},
                       action="files")
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    ids = {name: metadata.get(key) for name, key in END_KEYS.items()}
    stops = {i for i in ids.values() if i is not None}

    def gguf_named(token_id):
        text = tokens[token_id] if token_id is not None and 0 <= token_id < len(tokens) else "<not in its vocabulary>"
        return f"{text!r} (id {token_id})"

    turn_end = next(iter(ctx.template_end_run), None)
    expected = turn_end if turn_end is not None else ctx.tokenizer_eos_id
    role = "the chat template's turn end" if turn_end is not None else "the tokenizer's EOS"
    found = [f"{path.name}: " + ", ".join(f"{name}_token_id = {gguf_named(i) if i is not None else 'not set'}"
                                           for name, i in ids.items()) + f"; {len(tokens)} tokens."]
    data = {"path": str(path), **{f"{name}_token_id": i for name, i in ids.items()}, "expected_end_id": expected,
            "vocabulary": len(tokens)}
    problems = []
    for token_id in sorted(stops | ({expected} if expected is not None else set())):
        ours = ctx.tokenizer.convert_ids_to_tokens(token_id) if token_id < len(ctx.tokenizer) else None
        theirs = tokens[token_id] if token_id < len(tokens) else None
        if ours != theirs:
            problems.append(f"At id {token_id} the GGUF has {theirs!r} but the tokenizer {ours!r}: the export's "
                            "vocabulary does not match this model.")
    if expected is not None and expected not in stops:
        name = ctx.tokenizer.convert_ids_to_tokens(expected)
        fallback = (f" Recent llama.cpp builds still stop on {name!r} by its name; other runtimes do not."
                    if name in LLAMA_CPP_EOG_NAMES else "")
        problems.append(f"{role.capitalize()} {ctx.named(expected)} is none of eos/eot/eom: a runtime reading this "
                        f"file does not stop where the model ends its reply.{fallback}")
        data["repair"] = {"gguf": {"path": str(path), "changes": {END_KEYS["eot"]: expected}}}
    others = [i for i in ctx.stop_ids if i not in stops and i != expected]
    if others:
        found.append(f"generate() also stops on {ctx.named_list(others)}; a GGUF has room for eos, eot and eom only.")
    if not problems:
        return Finding("gguf_end_tokens", title, "ok",
                       " ".join(found) + f" {role.capitalize()} {ctx.named(expected)} is among them.", why,
                       "Nothing to fix.", data)
    fix = ("Write a copy with the end-of-turn id set (the gguf package's tool; `doctor --fix OUT_DIR` does the "
           f"same):\n```bash\ngguf-new-metadata --special-token-by-id eot {expected} {path.name} fixed.gguf\n```\n"
           f"or at run time: `llama-cli ... --override-kv tokenizer.ggml.eot_token_id=int:{expected}`."
           if "repair" in data else "Convert the model again from the directory this tokenizer belongs to.")
    return Finding("gguf_end_tokens", "GGUF metadata does not stop where the model ends a reply", "problem",
                   " ".join(found + problems), why, fix, data, action="files")
