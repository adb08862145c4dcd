"""One request for every door: each run setting declared once, and the column spec.

:data:`SETTINGS` declares every setting of a run (type, default, range, label, one-line help). The CLI's flags,
the URL query, the API's parameters, the Compare and Evaluate controls and the settings table of docs/api.md are made from it,
and :func:`check_setting` is the one rule (and the one sentence) for a value from any of them. The defaults are the
Compare page's measured story on the embedded SmolLM2-135M-Instruct (checked by tests/engine/test_links.py): baseline
rambles to the 80-token limit, the EOS ramp from step 40 ends the answer at step 68 right after "paradise.", and
the article's processor cuts it at step 8.

A column is a :class:`Column`: its interventions, each with the parameters given for it, and the model it runs
on (None: the loaded one). Its text form names it everywhere (the CLI's ``--column``, the URL's ``c1``..``c4``,
the column's title, the API's event keys)::

    baseline                     eos_reward(strength=8,reward_start_ratio=0.4)+stop_strings      ban_eos@my-run

and its JSON form (API, trace) is a list of ``{"name", "params"}`` (bare names allowed), or
``{"model": NAME, "interventions": [...]}``. Parameters a column leaves out take the shared settings
(``strength``, ``reward_start_ratio``, ``stop_strings``, ``min_new_tokens``), then the intervention's defaults.

    >>> column = parse_column('eos_reward(strength=8)+stop_strings(strings="\\\\n\\\\n"|END)@base')
    >>> column.name
    'eos_reward(strength=8)+stop_strings(strings="\\\\n\\\\n"|END)@base'
    >>> column_from_json(column_to_json(column)) == column
    True
    >>> resolve(parse_column("eos_reward(strength=8)"), DEFAULTS)[0].params["reward_start_ratio"]
    0.5
    >>> check_setting("temperature", "hot")
    Traceback (most recent call last):
    ValueError: temperature must be a number, got 'hot'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .interventions import SPECS, Intervention, _flag, check_params, default_params, unescape

PROMPT = "What can I do in Paris?"  # the article's prompt; SmolLM2 rambles on it for hundreds of tokens
MAX_COLUMNS = 4  # columns the page shows (and a link holds)


@dataclass(frozen=True)
class Setting:
    """One run setting: its name (the API parameter, the URL key; the CLI flag is ``--name-with-dashes``), its
    type (str, bool, int or float), default, range (numbers), label on the page and one-line help."""

    name: str
    kind: type
    default: object
    low: float | None = None
    high: float | None = None
    label: str = ""
    help: str = ""
    step: float | None = None  # the page slider's step; None: a number box

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def text(self, value) -> str:
        """``value`` as a URL or a command line writes it (true/false, 0.5, 80, \\n\\n)."""
        return ("true" if value else "false") if self.kind is bool else f"{value:g}" if self.kind is float else str(value)


def _ramp(key: str):
    return default_params("eos_reward")[key]


def _text_list(strings: list[str]) -> str:
    """Stop strings as the shared text box shows them: comma-separated, a newline typed as \\n."""
    return ",".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in strings)


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("prompt", str, PROMPT, label="Prompt", help="the user turn the model answers (or continues, without the chat template)"),
    Setting("system_prompt", str, "", label="System prompt (optional)", help="a system turn before the prompt (empty: none)"),
    Setting("use_chat_template", bool, True, label="Use the chat template",
            help="wrap the prompt in the model's chat template (false: plain text)"),
    Setting("max_new_tokens", int, 80, 1, 2048, label="Max new tokens", help="the generation budget of every column"),
    Setting("temperature", float, 0.0, 0, 2, label="Temperature (0 = greedy)", help="0 = greedy", step=0.05),
    Setting("top_p", float, 1.0, 0.05, 1, label="Top-p (1 = off)", help="nucleus sampling's probability mass (1 = off)", step=0.05),
    Setting("top_k", int, 0, 0, 200, label="Top-k (0 = off)", help="sample among the k most likely tokens (0 = off)", step=1),
    Setting("min_p", float, 0.0, 0, 1, label="Min-p (0 = off; when sampling)",
            help="keep tokens with at least this fraction of the top token's probability (0 = off)", step=0.01),
    Setting("typical_p", float, 1.0, 0.01, 1, label="Typical-p (1 = off; when sampling)",
            help="typical sampling's probability mass (1 = off)", step=0.01),
    Setting("repetition_penalty", float, 1.0, 0.5, 2, label="Repetition penalty (1 = off)",
            help="divide the logits of tokens already in the text by this (1 = off; applies when greedy too)", step=0.05),
    Setting("no_repeat_ngram_size", int, 0, 0, 10, label="No-repeat n-gram size (0 = off)",
            help="ban tokens that would repeat an n-gram of this size (0 = off; applies when greedy too)", step=1),
    Setting("seed", int, 0, 0, 2**32 - 1, label="Seed", help="every column samples with its own generator seeded with this"),
    Setting("reward_start_ratio", float, _ramp("reward_start_ratio"), 0, 1,
            label="Reward start ratio (the EOS ramp starts at ratio × max new tokens)",
            help="eos_reward: start the ramp at this fraction of max new tokens", step=0.05),
    Setting("strength", float, _ramp("strength"), 0, 40, label="EOS reward strength (largest bonus, in logits)",
            help="eos_reward: the largest bonus added to the EOS logit", step=0.5),
    Setting("stop_strings", str, _text_list(default_params("stop_strings")["strings"]),
            label="Stop strings (comma-separated, \\n = newline)",
            help="stop_strings: comma-separated strings that end the answer (type a newline as \\n)"),
    Setting("min_new_tokens", int, default_params("min_new_tokens")["n"], 0, 256,
            label="Min new tokens (for the min_new_tokens intervention)", help="min_new_tokens: forbid EOS before this many tokens", step=1),
]}
DEFAULTS: dict = {name: s.default for name, s in SETTINGS.items()}


def shown(value, limit: int = 60) -> str:
    """A value quoted in a message, cut short (a message must not echo 100 000 characters back)."""
    text = repr(value) if not isinstance(value, str) else repr(value[:limit]) + ("…" if len(value) > limit else "")
    return text if len(text) <= limit + 10 else text[:limit] + "…"


# One checker per kind of value, each refusing with one sentence that opens with the field's name: a setting, a
# request field of the API (seeds, steps, example, a column count) and a field of engine.Settings all go through
# these, so a value gets the same answer whichever door it came in by.


def parse_bool(value, name: str) -> bool:
    """The one yes/no rule: True/False or "true"/"false", in every door; otherwise a sentence naming ``name``."""
    try:
        return _flag(value)
    except ValueError:
        raise ValueError(f"{name} must be true or false, got {shown(value)}") from None


def check_text(value, name: str) -> str:
    """Text (None: empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {shown(value)}")
    return value


def check_choice(value, name: str, choices: Sequence):
    """One of ``choices``, exactly."""
    if isinstance(value, (list, dict, bool)) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {shown(value)}")
    return value


def check_number(value, name: str, low: float, high: float | None = None, *, whole: bool = False) -> float | int:
    """A finite number (a JSON number, or text as a URL or the command line gives it) from ``low`` to ``high``
    (None: no upper bound); with ``whole``, a whole number (2.0 is 2; True and 2.5 are refused)."""
    kind = "a whole number" if whole else "a number"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} is empty: give {kind}")
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{name} must be {kind}, got {shown(value)}") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    else:
        raise ValueError(f"{name} must be {kind}, got {shown(value)}")
    if isinstance(number, float) and not math.isfinite(number):  # (an int is finite, however long: 10**400)
        raise ValueError(f"{name} must be a finite number, got {number}")
    if whole and number != int(number):
        raise ValueError(f"{name} must be {kind}, got {shown(value)}")
    text = (lambda n: f"{n:g}" if isinstance(n, float) and not (whole and math.isfinite(n)) else shown(int(n), 20))
    if high is None and number < low:
        raise ValueError(f"{name} must be at least {text(low)}, got {text(number)}")
    if high is not None and not low <= number <= high:
        raise ValueError(f"{name} must be between {text(low)} and {text(high)}, got {text(number)}")
    return int(number) if whole else float(number)


def check_whole(value, name: str, low: int, high: int | None = None) -> int:
    """A whole number from ``low`` to ``high`` (see :func:`check_number`)."""
    return check_number(value, name, low, high, whole=True)


def check_setting(name: str, value, *, high: float | None = None):
    """``value`` for setting ``name`` (from any door: a JSON value, a page control, text from a URL or the
    command line, a field of ``engine.Settings``), checked and converted; ValueError with the same sentence
    whichever door it came from. ``high``: a lower ceiling than the schema's (the policy's max_new_tokens)."""
    s = SETTINGS[name]
    if s.kind is str:
        return check_text(value, name)
    if s.kind is bool:
        return parse_bool(value, name)
    return check_number(value, name, s.low, s.high if high is None else min(high, s.high), whole=s.kind is int)


def check_settings(values: Mapping) -> dict:
    """Every setting, from ``values`` where given (checked) and the defaults otherwise; ValueError on an unknown
    name or a bad value."""
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    return {name: check_setting(name, values[name]) if name in values else s.default for name, s in SETTINGS.items()}


def split_stop_strings(text: str | None) -> list[str]:
    """The shared stop strings: comma-separated, \\n typed for a newline."""
    if text is not None and not isinstance(text, str):
        raise ValueError("stop_strings must be text: comma-separated strings (\\n = newline)")
    return [unescape(s) for s in (text or "").split(",") if s.strip(" ")]


# ---------------------------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class Column:
    """A column: interventions in order, each with only the parameters given for it (validated), and the model
    it runs on (None: the loaded model; see ``Playground.column_models``)."""

    interventions: tuple[Intervention, ...] = ()
    model: str | None = None

    @property
    def name(self) -> str:
        return format_column(self)

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.interventions]


# A bare value: no character the syntax uses; anything else is written as a JSON string ("\n\n", "a, b").
_BARE = re.compile(r"[A-Za-z0-9_.\-]+")
_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<bare>[^"+@(),=|\s]+)|(?P<punct>[+@(),=|]))')
_MODEL = re.compile(r"[^\s@+(),=|\"]+")


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "|".join(_value_text(v) for v in value)
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def format_column(column: Column) -> str:
    """The column's text form: ``baseline``, or interventions joined by ``+``, each ``name`` or
    ``name(key=value,...)``; ``@model`` at the end when it runs on another model."""
    items = [i.name + (f"({','.join(f'{k}={_value_text(v)}' for k, v in i.params.items())})" if i.params else "")
             for i in column.interventions]
    return ("+".join(items) or "baseline") + (f"@{column.model}" if column.model else "")


def _typed(name: str, key: str, parts: list[tuple[str, bool]]):
    """A parameter's text value(s) as the type of its default (a list for a list default)."""
    spec = SPECS[name].params.get(key)
    texts = [text if quoted else unescape(text) for text, quoted in parts]
    if spec is None or isinstance(spec.default, list):
        return texts
    if len(texts) != 1:
        raise ValueError(f"{name}.{key} takes one value, got {len(texts)}")
    text, quoted = texts[0], parts[0][1]
    if isinstance(spec.default, bool) or quoted or isinstance(spec.default, str):
        return text
    try:
        number = float(text)
    except ValueError:
        return text  # the parameter's own check names it
    return int(number) if isinstance(spec.default, int) and number.is_integer() else number


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot read {text[position:position + 20]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return tokens


class _Reader:
    """Reads tokens of the column syntax; ``expect`` raises a ValueError saying what was expected where."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.index = tokens, 0

    def at(self, kind: str, value: str | None = None) -> bool:
        return self.index < len(self.tokens) and self.tokens[self.index][0] == kind and \
            (value is None or self.tokens[self.index][1] == value)

    def expect(self, kind: str, value: str | None = None) -> str:
        if not self.at(kind, value):
            found = repr(self.tokens[self.index][1]) if self.index < len(self.tokens) else "the end"
            raise ValueError(f"expected {value or 'a name'} at {found}")
        self.index += 1
        return self.tokens[self.index - 1][1]

    def params(self, closing: str | None) -> dict[str, list[tuple[str, bool]]]:
        """``key=value,...`` up to ``closing`` (or the end): key -> [(text, quoted)], list items split at ``|``."""
        params = {}
        while not (self.at("punct", closing) if closing else self.index == len(self.tokens)):
            key = self.expect("bare")
            self.expect("punct", "=")
            parts = []
            while True:
                if self.at("string"):
                    parts.append((json.loads(self.expect("string")), True))
                else:
                    parts.append((self.expect("bare"), False))
                if not self.at("punct", "|"):
                    break
                self.index += 1
            params[key] = parts
            if self.at("punct", ","):
                self.index += 1
            elif closing:
                self.expect("punct", closing)
                self.index -= 1
            elif self.index < len(self.tokens):
                self.expect("punct", ",")
        return params


def parse_column(text: str) -> Column:
    """A column from its text form (see :func:`format_column`); ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"a column spec must be text, got {shown(text)}")
    try:
        tokens = _tokens(text)
        model = None
        if tokens and tokens[-1] == ("punct", "@"):
            raise ValueError("a column's model goes after @, e.g. baseline@base")
        if len(tokens) >= 2 and tokens[-2] == ("punct", "@"):
            if tokens[-1][0] != "bare" or not _MODEL.fullmatch(tokens[-1][1]):
                raise ValueError("write the model after @ as a name, e.g. eos_reward@base")
            model, tokens = tokens[-1][1], tokens[:-2]
        if not tokens or tokens == [("bare", "baseline")]:
            return Column((), model)
        reader, items = _Reader(tokens), []
        while True:
            name = reader.expect("bare")
            raw = {}
            if reader.at("punct", "("):
                reader.index += 1
                raw = reader.params(")")
                reader.expect("punct", ")")
            items.append((name, raw))
            if reader.index == len(tokens):
                break
            reader.expect("punct", "+")
    except ValueError as error:
        raise ValueError(f"column {text!r}: {error} (write e.g. eos_reward(strength=8)+stop_strings)") from None
    return _column([_intervention(name, {key: _typed(name, key, parts) for key, parts in raw.items()})
                    for name, raw in items if _known(name)], model)


def _known(name: str) -> bool:
    if name not in SPECS:
        raise ValueError(f"unknown intervention {name!r}; allowed: {', '.join(SPECS)}")
    return True


def column_params_text(column: Column) -> str:
    """The page's per-column parameter box: the column's own parameters as ``key=value, ...``."""
    return ", ".join(f"{k}={_value_text(v)}" for i in column.interventions for k, v in i.params.items())


def column_from_page(names: Sequence[str], params_text: str | None, model: str | None = None) -> Column:
    """A column from the page's picker (intervention names) and its parameter box (``key=value, ...``; each key
    belongs to the one picked intervention that has it: the parameter names are distinct across interventions)."""
    try:
        raw = _Reader(_tokens(params_text or "")).params(None)
    except ValueError as error:
        raise ValueError(f"parameters {params_text!r}: {error} (write e.g. strength=8, reward_start_ratio=0.4)") from None
    owner = {key: name for name in names if _known(name) for key in SPECS[name].params}
    stray = [key for key in raw if key not in owner]
    if stray:
        raise ValueError(f"parameter {stray[0]!r} belongs to none of this column's interventions "
                         f"({', '.join(names) or 'baseline'}); theirs: {', '.join(owner) or 'none'}")
    return _column([_intervention(name, {key: _typed(name, key, parts) for key, parts in raw.items() if owner[key] == name})
                    for name in names], model)


def _intervention(name, params) -> Intervention:
    """The intervention with its given parameters checked, in the order it declares them: a column has one name
    however its parameters were written."""
    if name not in SPECS:
        raise ValueError(f"unknown intervention {name!r}; allowed: {', '.join(SPECS)}")
    checked = check_params(name, params)
    return Intervention(name, {key: checked[key] for key in SPECS[name].params if key in checked})


def _column(interventions: list[Intervention], model) -> Column:
    names = [i.name for i in interventions]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"each intervention may appear once in a column; repeated: {', '.join(repeated)}")
    if model is not None and (not isinstance(model, str) or not _MODEL.fullmatch(model)):
        raise ValueError(f"a column's model must be a name such as 'base', got {shown(model)}")
    return Column(tuple(interventions), model)


def column_from_json(value) -> Column:
    """A column from the API's JSON: a list of intervention names or ``{"name", "params"}`` objects, a
    ``{"model", "interventions"}`` object, the text form, or None (baseline)."""
    if isinstance(value, Column):
        return value
    if value is None:
        return Column()
    if isinstance(value, str):
        return parse_column(value)
    model = None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"model", "interventions"})
        if unknown:
            raise ValueError(f"a column object has 'interventions' and 'model', got {', '.join(map(repr, unknown))}")
        model, value = value.get("model"), value.get("interventions") or []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"a column is a list of interventions (names or {{\"name\", \"params\"}} objects), got {shown(value)}")
    items = []
    for item in value:
        if isinstance(item, str):
            items.append(_intervention(item.strip(), {}))
        elif isinstance(item, dict) and isinstance(item.get("name"), str) and set(item) <= {"name", "params"}:
            items.append(_intervention(item["name"], item.get("params") or {}))
        else:
            raise ValueError(f"columns hold interventions, each a name or {{\"name\": ..., \"params\": {{...}}}}; "
                             f"got {shown(item)}")
    return _column(items, model)


def column_to_json(column: Column) -> list | dict:
    """The JSON form: a list of ``{"name", "params"}``, inside ``{"model", "interventions"}`` when it has a model."""
    items = [i.to_dict() for i in column.interventions]
    return {"model": column.model, "interventions": items} if column.model else items


def columns_from_json(columns, default: Sequence[str] = ("baseline", "eos_reward")) -> list[Column]:
    """The request's columns (None: ``default``), each as :func:`column_from_json` reads it."""
    if columns is None:
        columns = list(default)
    if not isinstance(columns, (list, tuple)):
        raise ValueError('columns must be a list with one column each, e.g. ["baseline", "eos_reward(strength=8)"] '
                         f'or [[], ["eos_reward"]]; got {type(columns).__name__}')
    parsed = []
    for index, column in enumerate(columns, start=1):
        try:
            parsed.append(column_from_json(column))
        except ValueError as error:
            raise ValueError(f"column {index}: {error}") from None
    return parsed


SHARED = {(name, key): p.shared for name, spec in SPECS.items() for key, p in spec.params.items() if p.shared}


def resolve(column: Column, settings: Mapping) -> list[Intervention]:
    """The column's interventions with every parameter filled: given > the shared setting > the default."""
    resolved = []
    for item in column.interventions:
        params = default_params(item.name)
        for key in params:
            shared = SHARED.get((item.name, key))
            if shared is not None and shared in settings:
                value = settings[shared]
                params[key] = split_stop_strings(value) if shared == "stop_strings" else value
        resolved.append(Intervention(item.name, check_params(item.name, params) | dict(item.params)))
    return resolved



def settings_table() -> str:
    """The table of run settings in docs/api.md (tests/unit/test_request.py checks that it holds this one)."""
    rows = ["| setting (API, URL) | CLI | default | range | what |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS.values():
        default = s.text(s.default).replace("|", "\\|") if s.default != "" else "(empty)"
        span = (f"{s.low:.0f}–{s.high:.0f}" if s.kind is int else f"{s.low:g}–{s.high:g}") if s.low is not None else "true, false" if s.kind is bool else "text"
        rows.append(f"| `{s.name}` | `{s.flag}` | `{default}` | {span} | {s.help.replace('|', '/')} |")
    return "\n".join(rows)
