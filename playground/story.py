"""What happened in a comparison, in words: one sentence per column, computed from its trace.

Teaching users read this first, so it names the numbers that explain a stop: how high p(EOS) rose, where the
column stopped and after which text, whether that was a sentence end, and how many logits the interventions
moved EOS by ("the ramp at +8.4").

    >>> describe_variant(trace, 1)  # doctest: +SKIP
    "eos_reward stopped at step 67 right after 'paradise.' (a sentence end): the interventions moved EOS +8.4 logits there"
"""

from __future__ import annotations

from .interventions import SPECS, ends_sentence
from .markup import md_text
from .trace import INTERRUPTED, StepRecord, StopReason, Trace, VariantTrace


def _why(intervention: dict) -> str | None:
    """Why this intervention stops a column the way it does (its spec's ``why``, with its parameters), said once
    after the numbers; None for one whose numbers say it all."""
    why = SPECS[intervention["name"]].why
    return why.format(**intervention["params"]) if why else None


def _tail(text: str, size: int = 24) -> str:
    """The last words before a stop, shown the way a person reads them."""
    text = text.rstrip(" ")
    return ("…" if len(text) > size else "") + text[-size:].lstrip()


def _peak(steps: list[StepRecord]) -> tuple[float, int]:
    best = max(steps, key=lambda s: s.p_eos_raw)
    return best.p_eos_raw, best.step


def _shift(step: StepRecord) -> float | None:
    """Logits the interventions moved EOS by, relative to the best other token (None where EOS is banned)."""
    if step.eos_margin_raw is None or step.eos_margin is None:
        return None
    return step.eos_margin_raw - step.eos_margin


def describe_variant(trace: Trace, index: int) -> str:
    variant: VariantTrace = trace.variants[index]
    steps, name = variant.steps, variant.name
    if len({v.model for v in trace.variants}) > 1 and f"@{variant.model}" not in name:
        name += f" ({variant.model})"
    if not steps:
        return f"{name} has not produced a token yet."
    last = steps[-1]
    why = next((why for why in map(_why, variant.interventions) if why), None)
    peak, peak_step = _peak(steps)
    forced_until = variant.branch_of[1] if variant.branch_of is not None else -1  # a branch's forced steps
    if variant.stop_reason == StopReason.EOS:
        before = variant.text
        where = f"right after {_tail(before)!r} ({'a sentence end' if ends_sentence(before) else 'mid-sentence'})"
        if last.step <= forced_until:
            sentence = f"{name} was forced to end with EOS at step {last.step} {where}"
        else:
            sentence = f"{name} stopped by EOS at step {last.step} {where}"
            shift = _shift(last)
            if shift is not None and abs(shift) >= 0.05:
                sentence += f"; the interventions moved EOS {shift:+.1f} logits there"
            elif last.eos_margin_raw is not None:
                sentence += " on its own"
    elif variant.stop_reason == StopReason.MAX_NEW_TOKENS:
        sentence = f"{name} hit the {len(steps)}-token limit; p(EOS) never rose above {peak:.2g} (step {peak_step})"
        closest = min((s for s in steps if s.eos_margin is not None), key=lambda s: s.eos_margin, default=None)
        if closest is not None:
            sentence += f", and EOS stayed at least {closest.eos_margin:.1f} logits behind the best token (step {closest.step})"
    elif variant.stop_reason == StopReason.STOP_STRING:
        sentence = f"{name} stopped at step {last.step} on the stop string {variant.stop_detail!r}"
    elif variant.stop_reason == StopReason.REPETITION:
        sentence = f"{name} stopped at step {last.step}: the same words kept repeating"
    elif variant.stop_reason in INTERRUPTED:
        sentence = f"{name} was {'cancelled' if variant.stop_reason == StopReason.CANCELLED else 'timed out'} after {len(steps)} tokens"
    else:
        sentence = f"{name} is running: {len(steps)} tokens, p(EOS) {last.p_eos_raw:.2g} now"
    if forced_until >= 0 and not (variant.stop_reason == StopReason.EOS and last.step <= forced_until):
        sentence += f" (a branch: steps 0–{forced_until} forced, the model chose from step {forced_until + 1} on)"
    if why and variant.stop_reason is not None and variant.stop_reason not in INTERRUPTED:  # it did not stop that way
        sentence += f" — {why}"
    return sentence + "."


def compare_models(trace: Trace) -> str | None:
    """When the columns use several models (``base`` and adapters): one sentence on how each model's first column
    stopped, e.g. "my-run never put EOS above 1e-04; base stopped at step 41 after '…the Louvre.'". None when
    every column uses the same model or a column has not finished."""
    first: dict[str, VariantTrace] = {}
    for variant in trace.variants:
        if variant.branch_of is None:
            first.setdefault(variant.model, variant)
    if len(first) < 2 or not all(v.finished and v.steps for v in first.values()):
        return None
    parts = []
    for model, variant in first.items():
        if variant.stop_reason == StopReason.EOS:
            parts.append(f"{model} stopped at step {variant.steps[-1].step} after {_tail(variant.text)!r}")
        else:
            peak, step = _peak(variant.steps)
            parts.append(f"{model} never put EOS above {peak:.2g} (step {step}) and ended on {variant.stop_reason}")
    return "Models: " + "; ".join(parts) + "."


def describe(trace: Trace) -> list[str]:
    """One sentence per column, then one comparing the models when the columns use several."""
    sentences = [describe_variant(trace, i) for i in range(len(trace.variants))]
    models = compare_models(trace)
    return sentences + ([models] if models else [])


def story_markdown(trace: Trace) -> str:
    """The story as the page shows it, a Markdown list; every sentence quotes names, tokens and the model's text,
    so each is escaped whole (``'</s>'`` shows as written)."""
    return "\n".join(f"- {md_text(sentence)}" for sentence in describe(trace))


def step_explanation(step: StepRecord, eos_token: str = "EOS") -> str:
    """For the inspector: how far EOS was from winning at this step, raw and after the interventions."""
    raw, after = step.eos_margin_raw, step.eos_margin
    if raw is None:
        return "The model's raw logits rule EOS out here."
    if raw <= 0:
        text = f"{eos_token} is the model's own top choice here ({-raw:.1f} logits ahead of the best other token)."
    else:
        text = f"{eos_token} would need +{raw:.1f} logits to win here"
    if after is None:
        return text + ("; the interventions ban it." if raw > 0 else " The interventions ban it.")
    shift = raw - after
    if abs(shift) < 0.05:
        return text + ("; the interventions leave it there." if raw > 0 else "")
    verb = "add" if shift > 0 else "take away"
    if raw > 0:
        outcome = "enough: EOS wins" if after <= 0 else f"still {after:.1f} short"
        return text + f"; the interventions {verb} {abs(shift):.1f} — {outcome}."
    return text + f" The interventions {verb} {abs(shift):.1f}" + (", and EOS loses." if after > 0 else ".")
