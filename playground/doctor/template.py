"""Checks on the chat template: what it writes after an assistant reply."""

from __future__ import annotations

from .core import PROBE_PAIRS, Context, Finding


def check_chat_template_eos(ctx: Context) -> Finding:
    """The chat template ends an assistant turn with a token that generation stops on."""
    title = "Chat template ends the assistant turn with a stop token"
    why = (
        "A chat model learns to end its reply with whatever the template writes after assistant turns. If that "
        "token is not in generation_config.eos_token_id (or the template writes nothing), the model 'stops' by "
        "emitting a token generate() ignores and carries on with a new turn or rambles."
    )
    template = ctx.template
    if template is None:
        return Finding("chat_template_eos", title, "not_applicable", "The tokenizer has no chat template.", why,
                       "Nothing to check; make sure raw-text training appends tokenizer.eos_token_id.")
    if "error" in template:
        return Finding("chat_template_eos", "Chat template could not render a conversation", "warning",
                       f"Could not render a one-turn conversation: {template['error']}.", why,
                       "Check that the template accepts [{'role': 'user'}, {'role': 'assistant'}] messages.")
    tail_ids, end_id, stop = template["tail_ids"], template["end_id"], ctx.stop_ids
    found = (f"An assistant reply renders as ...{PROBE_PAIRS[0][1][-12:]!r} + {template['tail_text']!r}, "
             f"i.e. tokens {ctx.pieces(tail_ids)} {tail_ids} after the answer; generation stops on "
             f"{ctx.named_list(stop)}.")
    data = {"tail_text": template["tail_text"], "tail_ids": tail_ids, "end_id": end_id, "stop_ids": stop}
    if end_id is not None and end_id in stop:
        return Finding("chat_template_eos", title, "ok",
                       found + f" The first token after the answer, {ctx.named(end_id)}, stops generation.", why,
                       "Nothing to fix.", data)
    later = [i for i in tail_ids if i in stop]
    if later:
        return Finding("chat_template_eos", "Chat template ends the assistant turn with a token before the stop token",
                       "warning", found + f" A stop token follows, but only after {ctx.named(end_id)}; the model must emit "
                       "that first.", why,
                       f"Also stop on the turn end:\n```python\nmodel.generation_config.eos_token_id = {stop + [end_id]}\n```",
                       *_stop_on_turn_end(ctx, data, end_id))
    if end_id is not None and (end_id in ctx.end_like or end_id in ctx.all_eos_ids):
        return Finding("chat_template_eos", "Chat template ends the assistant turn with a token generation does not stop on",
                       "problem", found + f" The turn ends with {ctx.named(end_id)}, which generation does not stop on.", why,
                       "Stop on the token the template uses:\n```python\n"
                       f"model.generation_config.eos_token_id = {stop + [end_id]}\n"
                       "model.generation_config.save_pretrained(output_dir)\n```", dict(data, repair={"stop_on": [end_id]}),
                       action="files")
    eos = ctx.tokenizer.eos_token
    return Finding("chat_template_eos", "Chat template writes no end token after the assistant turn", "problem",
                   found + " No EOS/end token follows the assistant answer: a model trained on this template never "
                   "learns to stop.", why,
                   "End assistant turns with the EOS in the template, e.g.\n```jinja\n"
                   "{{ message['content'] + eos_token }}\n```\n"
                   f"(eos_token is {eos!r}); then retrain or at least re-run this check.", data, action="retrain")



def _stop_on_turn_end(ctx: Context, data: dict, end_id: int) -> tuple[dict, str]:
    """Stopping on the turn end is a file fix when it is an end/special token; an ordinary word is not one."""
    if ctx.is_end(end_id) or end_id in ctx.special_ids:
        return dict(data, repair={"stop_on": [end_id]}), "files"
    return data, "retrain"


def _render(ctx: Context, template: str | None = None) -> str:
    question, answer = PROBE_PAIRS[0]
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return ctx.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template)


def _single_end_template(ctx: Context, run: list[int]) -> str | None:
    """A template edit that drops the second end token, kept only if rendering proves it: the same conversation
    with each doubled end written once."""
    source = ctx.tokenizer.chat_template
    first, second = (ctx.tokenizer.convert_ids_to_tokens(i) for i in run[:2])
    edits = [(first + second, first)]
    if second == ctx.tokenizer.eos_token:
        for quote in ("'", '"'):
            edits += [(f"{quote}{first}{quote} + eos_token", f"{quote}{first}{quote}"),
                      (f"{quote}{first}{quote}+eos_token", f"{quote}{first}{quote}")]
        edits += [("eos_token + eos_token", "eos_token"), ("{{ eos_token }}{{ eos_token }}", "{{ eos_token }}")]
    expected = _render(ctx).replace(first + second, first)  # every turn, not just the assistant's
    for old, new in edits:
        if old not in source:
            continue
        candidate = source.replace(old, new)
        try:
            text = _render(ctx, candidate)
        except Exception:
            continue
        if text == expected and ctx.end_run_after_answer(text) == run[:1]:
            return candidate
    return None


def check_chat_template_single_end(ctx: Context) -> Finding:
    """An assistant turn ends with one end token: neither the template nor tokenizer(text) adds a second."""
    title = "An assistant turn ends with one end token, not two"
    why = (
        "When the template writes the end token and something else adds it again (eos_token appended in the "
        "template, or tokenizer(text) with add_special_tokens=True after apply_chat_template), every example "
        "teaches 'end, end'. Generation stops at the first, so the model trains on a pattern it never meets; "
        "collators that mask pad == EOS or cut at max_length keep the wrong one, and in multi-turn data the "
        "history at inference (one end token) differs from training (two)."
    )
    if not ctx.template_ok:
        return Finding("chat_template_single_end", title, "not_applicable",
                       "No chat template that renders a one-turn conversation.", why, "Nothing to check.")
    run = ctx.template_end_run
    encoded = ctx.tokenizer(ctx.template["text"], add_special_tokens=True)["input_ids"]
    trailing = []
    for token_id in reversed(encoded):
        if ctx.is_whitespace(token_id):
            continue
        if not ctx.is_end(token_id):
            break
        trailing.insert(0, token_id)
    data = {"template_end_run": run, "tokenized_trailing_ends": trailing}
    found = (f"After an assistant reply the template writes {ctx.pieces(run) if run else 'no end token'}; "
             f"tokenizer(apply_chat_template(..., tokenize=False)) ends with {ctx.pieces(trailing) or '[]'}.")
    if len(run) > 1:
        template = _single_end_template(ctx, run)
        if template is not None:
            data["repair"] = {"chat_template": template}
        fix = ("Keep one end token in the template" + (" (this edit was checked by rendering it; `--fix` writes it):"
               if template else ", e.g. drop the `+ eos_token` after the turn end:")
               + f"\n```jinja\n... message['content'] + {ctx.tokenizer.convert_ids_to_tokens(run[0])!r} ...\n```\n"
               "then rebuild the training data with the fixed template.")
        return Finding("chat_template_single_end", "An assistant turn ends with two end tokens", "warning",
                       found + f" That is {len(run)} end tokens in a row.", why, fix, data,
                       action="files" if template else "retrain")
    if len(trailing) > len(run) and len(trailing) > 1:
        return Finding("chat_template_single_end", "Tokenising a rendered turn adds a second end token", "warning",
                       found + " The tokenizer appends one more when the rendered text is tokenised with "
                       "add_special_tokens=True, as many SFT scripts do.", why,
                       "Tokenise rendered conversations without special tokens:\n```python\n"
                       "text = tokenizer.apply_chat_template(messages, tokenize=False)\n"
                       "ids = tokenizer(text, add_special_tokens=False)['input_ids']\n```\n"
                       "(or let apply_chat_template(..., tokenize=True) tokenise), then retrain.", data,
                       action="retrain")
    return Finding("chat_template_single_end", title, "ok", found, why, "Nothing to fix.", data)
