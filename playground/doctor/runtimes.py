'''The stop configuration for each runtime a model is deployed to, and Ollama Modelfiles: read, checked, repaired.

>>> text = 'FROM ./model.gguf\\nTEMPLATE """<|im_start|>assistant\\n{{ .Response }}"""\\n'
>>> modelfile = parse_modelfile(text)
>>> modelfile.stops, modelfile.template_writes_end("<|im_end|>")
([], False)
>>> print(repaired_modelfile(text, ["<|im_end|>"]))
FROM ./model.gguf
TEMPLATE """<|im_start|>assistant
{{ .Response }}<|im_end|>"""
PARAMETER stop "<|im_end|>"
<BLANKLINE>
'''

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_TEMPLATE = re.compile(r'^TEMPLATE[ \t]+(?:"""(?P<block>.*?)"""|"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\n]*))',
                       re.MULTILINE | re.DOTALL | re.IGNORECASE)
_STOP = re.compile(r'^PARAMETER[ \t]+stop[ \t]+(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>\S+))[ \t]*$',
                   re.MULTILINE | re.IGNORECASE)
_RESPONSE = re.compile(r"{{-?\s*\.Response\s*-?}}")


@dataclass
class Modelfile:
    template: str | None  # the TEMPLATE text, if the Modelfile sets one
    template_span: tuple[int, int] | None  # where the template's text sits in the Modelfile
    stops: list[str]  # the PARAMETER stop strings, in order

    def template_writes_end(self, end: str) -> bool:
        """Whether the TEMPLATE writes ``end`` after the reply (``{{ .Response }}``), or at all when it has none."""
        if self.template is None:
            return True  # no TEMPLATE: Ollama uses the GGUF's own chat template
        response = list(_RESPONSE.finditer(self.template))
        return end in (self.template[response[-1].end():] if response else self.template)


def parse_modelfile(text: str) -> Modelfile:
    """The TEMPLATE and the ``PARAMETER stop`` strings of an Ollama Modelfile (other instructions are kept as text)."""
    match = _TEMPLATE.search(text)
    template, span = None, None
    if match:
        group = next(name for name in ("block", "quoted", "bare") if match.group(name) is not None)
        template, span = match.group(group), match.span(group)
        if group == "quoted":
            template = json.loads(f'"{template}"')
    stops = [m.group("bare") if m.group("quoted") is None else json.loads(f'"{m.group("quoted")}"')
             for m in _STOP.finditer(text)]
    return Modelfile(template, span, stops)


def repaired_modelfile(text: str, end_strings: list[str]) -> str:
    """``text`` with the turn end written after ``{{ .Response }}`` and a ``PARAMETER stop`` line per end string."""
    modelfile = parse_modelfile(text)
    if modelfile.template is not None and end_strings and not modelfile.template_writes_end(end_strings[0]):
        start, stop = modelfile.template_span
        response = list(_RESPONSE.finditer(modelfile.template))
        at = response[-1].end() if response else len(modelfile.template)
        template = modelfile.template[:at] + end_strings[0] + modelfile.template[at:]
        if text[start - 3:start] != '"""':  # a one-line "..." or bare template becomes a block
            text = text[:start - (1 if text[start - 1] == '"' else 0)] + f'"""{template}"""' + \
                text[stop + (1 if text[stop:stop + 1] == '"' else 0):]
        else:
            text = text[:start] + template + text[stop:]
    missing = [s for s in end_strings if s not in modelfile.stops]
    if missing:
        text = text.rstrip("\n") + "\n" + "".join(f"PARAMETER stop {json.dumps(s)}\n" for s in missing)
    return text


def stop_lists(ids: list[int], strings: list[str]) -> dict[str, str]:
    """The exact stop configuration per runtime for the end ids ``ids`` (written as ``strings``).

    >>> print(stop_lists([2], ["<|im_end|>"])["ollama"])
    PARAMETER stop "<|im_end|>"
    """
    quoted = json.dumps(strings, ensure_ascii=False)
    return {
        "generate": (f"model.generate(**inputs, max_new_tokens=256, eos_token_id={ids})\n"
                     f"pipe(messages, max_new_tokens=256, eos_token_id={ids})  # pipeline('text-generation', ...)\n"
                     f"model.generation_config.eos_token_id = {ids}  # or once, saved with the model"),
        "vllm": (f"SamplingParams(max_tokens=256, stop_token_ids={ids})\n"
                 f"# or in the model folder's generation_config.json (read by default): \"eos_token_id\": {ids}"),
        "llama_cpp": (f"curl http://localhost:8080/completion -d '{{\"prompt\": \"...\", \"stop\": {quoted}}}'\n"
                      f"# OpenAI route /v1/chat/completions: \"stop\": {quoted} (the GGUF's eos/eot ids stop it "
                      "too: see gguf_end_tokens)"),
        "ollama": "\n".join(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in strings),
    }


RUNTIME_TITLES = {"generate": "transformers generate() / pipeline()", "vllm": "vLLM",
                  "llama_cpp": "llama.cpp server", "ollama": "Ollama (Modelfile)"}
