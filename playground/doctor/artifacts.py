"""``artifacts_agree``: an adapter folder, its merged model, its GGUF and an Ollama Modelfile end replies with the
same tokens and stop on them, as the model does."""

from __future__ import annotations

import json
from pathlib import Path

from .core import PROBE_PAIRS, Context, Finding
from .gguf_meta import END_KEYS, read_gguf_metadata
from .runtimes import parse_modelfile, repaired_modelfile


def expected_end_ids(ctx: Context) -> list[int]:
    """The end ids a runtime must stop on: the template's turn end first, then the tokenizer's EOS and the stop ids."""
    ids = list(ctx.template_end_run[:1]) + ([ctx.tokenizer_eos_id] if ctx.tokenizer_eos_id is not None else [])
    return list(dict.fromkeys(ids + list(ctx.stop_ids)))


def _kind(path: Path) -> str:
    if path.is_dir():
        return "adapter folder" if (path / "adapter_config.json").exists() else "model folder"
    if path.suffix == ".gguf":
        return "gguf"
    return "modelfile"


def _turn_end_of(tokenizer) -> str | None:
    """The first special token an artifact's chat template writes after an assistant reply."""
    question, answer = PROBE_PAIRS[0]
    text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}], tokenize=False)
    tail = tokenizer(text[text.rfind(answer) + len(answer):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return next((tokenizer.convert_ids_to_tokens(i) for i in tail if i in special), None)


def _folder(ctx: Context, path: Path, ends: dict[int, str], problems: list, notes: list, repairs: list) -> None:
    turn_end = ends.get(ctx.template_end_run[0]) if ctx.template_end_run else None
    if (path / "tokenizer_config.json").exists() or (path / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if tokenizer.eos_token != ctx.tokenizer.eos_token:
            problems.append(f"{path.name}: its tokenizer's EOS is {tokenizer.eos_token!r}, the model's "
                            f"{ctx.tokenizer.eos_token!r}.")
        theirs = _turn_end_of(tokenizer) if getattr(tokenizer, "chat_template", None) else None
        if turn_end is not None and theirs != turn_end:
            problems.append(f"{path.name}: its chat template ends a reply with {theirs!r}, the model's with "
                            f"{turn_end!r}.")
        else:
            notes.append(f"{path.name}: tokenizer EOS {tokenizer.eos_token!r}, turn end {theirs!r}.")
    config_path = path / "generation_config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        stop = config.get("eos_token_id")
        stop = [stop] if isinstance(stop, int) else list(stop or [])
        missing = [i for i in ends if i not in stop]
        if missing:
            problems.append(f"{path.name}/generation_config.json stops on {stop or None}, not on "
                            f"{ctx.named_list(missing)}.")
            repairs.append({"path": str(config_path), "file": f"{path.name}/generation_config.json",
                            "text": json.dumps(dict(config, eos_token_id=stop + missing), indent=2) + "\n"})
        else:
            notes.append(f"{path.name}/generation_config.json stops on {stop}.")
    elif (path / "adapter_config.json").exists():
        notes.append(f"{path.name}: an adapter without its own generation_config.json (the base model's applies).")
    else:
        try:
            fallback = json.loads((path / "config.json").read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            fallback = None
        fallback = [fallback] if isinstance(fallback, int) else list(fallback or [])
        if all(i in fallback for i in ends):
            notes.append(f"{path.name}: no generation_config.json; config.json's eos_token_id {fallback} applies.")
            return
        problems.append(f"{path.name} has no generation_config.json, and config.json's eos_token_id "
                        f"{fallback or None} misses {ctx.named_list([i for i in ends if i not in fallback])}.")
        repairs.append({"path": str(config_path), "file": f"{path.name}/generation_config.json",
                        "text": json.dumps({"eos_token_id": list(ends)}, indent=2) + "\n"})


def _gguf(ctx: Context, path: Path, ends: dict[int, str], problems: list, notes: list) -> None:
    metadata = read_gguf_metadata(path)
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    stops = {name: metadata.get(key) for name, key in END_KEYS.items()}
    stop_strings = {tokens[i] for i in stops.values() if i is not None and 0 <= i < len(tokens)}
    turn_end = ends.get(ctx.template_end_run[0]) if ctx.template_end_run else next(iter(ends.values()), None)
    described = ", ".join(f"{k} {v}" for k, v in stops.items() if v is not None) or "no end ids"
    if turn_end is not None and turn_end not in stop_strings:
        problems.append(f"{path.name}: {described}; none of them is the turn end {turn_end!r} "
                        "(see gguf_end_tokens with --gguf for a repaired copy).")
    else:
        notes.append(f"{path.name}: {described}.")
    template = metadata.get("tokenizer.chat_template")
    if turn_end is not None and template and turn_end not in template:
        problems.append(f"{path.name}: its chat template never writes {turn_end!r}.")


def _modelfile(path: Path, ends: dict[int, str], problems: list, notes: list, repairs: list) -> None:
    text = path.read_text(encoding="utf-8")
    modelfile = parse_modelfile(text)
    strings = list(ends.values())
    found = []
    missing = [s for s in strings if s not in modelfile.stops]
    if missing:
        found.append(f"its PARAMETER stop lines {modelfile.stops or '(none)'} miss {missing}")
    if strings and not modelfile.template_writes_end(strings[0]):
        found.append(f"its TEMPLATE does not write {strings[0]!r} after {{{{ .Response }}}}")
    if found:
        problems.append(f"{path.name}: " + "; ".join(found) + ".")
        repairs.append({"path": str(path), "file": path.name, "text": repaired_modelfile(text, strings)})
    else:
        notes.append(f"{path.name}: stops on {modelfile.stops}.")


def check_artifacts_agree(ctx: Context) -> Finding:
    """Adapter folders, merged folders, GGUF files and Ollama Modelfiles end replies and stop as the model does."""
    title = "Exported artifacts end and stop like the model"
    why = (
        "A model stops where its runtime stops it, and each export carries its own copy of the end tokens: a merge "
        "that rewrote the turn end to the base tokenizer's <eos>, a merged generation_config.json that lost one of "
        "two eos ids, a GGUF without the turn end, an Ollama Modelfile with no PARAMETER stop and a TEMPLATE "
        "without the turn end. The model then stops in the playground and rambles once deployed."
    )
    if not ctx.artifacts:
        return Finding("artifacts_agree", title, "not_applicable",
                       "No artifacts given (pass --artifact PATH: an adapter or merged folder, a .gguf, a Modelfile).",
                       why, "Nothing to check.")
    ends = {i: ctx.tokenizer.convert_ids_to_tokens(i) for i in expected_end_ids(ctx)}
    problems, notes, repairs = [], [], []
    for path in ctx.artifacts:
        path = Path(path)
        if not path.exists():
            problems.append(f"{path.name}: no such file or folder.")
            continue
        try:
            kind = _kind(path)
            if kind == "gguf":
                _gguf(ctx, path, ends, problems, notes)
            elif kind == "modelfile":
                _modelfile(path, ends, problems, notes, repairs)
            else:
                _folder(ctx, path, ends, problems, notes, repairs)
        except (OSError, ValueError) as error:
            problems.append(f"{path.name}: could not be read ({error}).")
    data = {"artifacts": [str(p) for p in ctx.artifacts], "end_ids": list(ends), "end_strings": list(ends.values())}
    found = f"The model ends replies with {ctx.named_list(list(ends))}. "
    if not problems:
        return Finding("artifacts_agree", title, "ok", found + " ".join(notes), why, "Nothing to fix.", data)
    if repairs:
        data["repair"] = {"artifacts": repairs}
    stops = "\n".join(f'PARAMETER stop "{s}"' for s in ends.values())
    fix = (("`doctor --fix OUT_DIR --artifact ...` writes corrected copies (" + ", ".join(r["file"] for r in repairs)
            + ") under OUT_DIR/artifacts. " if repairs else "")
           + f"By hand:\n```\n# Modelfile\n{stops}\n# generation_config.json\n\"eos_token_id\": {list(ends)}\n```\n"
           "A merged folder whose tokenizer lost the turn end: copy the fine-tune's tokenizer files into it; a GGUF: "
           "convert again from the repaired folder, or set tokenizer.ggml.eot_token_id.")
    return Finding("artifacts_agree", "Exported artifacts end or stop differently from the model", "problem",
                   found + " ".join(problems + notes), why, fix, data, action="files")
