"""How much each finding explains the measured failure, so a report leads with the cause rather than the symptom.

The doctor measures one thing about the examined model's behaviour: p(EOS) right after complete answers
(``p_eos_at_answer_end``). When it is low, a check that found the cause *in what the model was trained on* (the
sample's examples without an end id, their end labels masked or cut off) explains it, in proportion to the share
of examples affected; a check that only says what could go wrong (a collator that would mask pad = EOS, a
generation setting) explains it less. Example::

    from playground.doctor import diagnose
    from playground.doctor.ranking import ranked

    for finding in ranked(diagnose(bundle, sample=sample, model="eos_as_text")):
        print(f"{finding.weight:.2f} {finding.id}")
"""

from __future__ import annotations

from .core import Finding

MEASURED = "p_eos_at_answer_end"
SEVERITY = {"problem": 1.0, "warning": 0.5, "ok": 0.0, "not_applicable": 0.0}


def share_affected(finding: Finding) -> float | None:
    """The share of the training sample a data check found the cause in (None: the check did not read the
    sample's examples as trained, e.g. it simulated a collator)."""
    data = finding.data
    if finding.id == "sample_ends_with_eos" and data.get("examples"):
        return 1 - data["fraction_end_with_eos"]
    if finding.id == "truncation_keeps_eos" and data.get("examples"):
        return data["fraction_truncated"]
    if finding.id == "every_turn_end_supervised" and data.get("assistant_turns"):
        return data["ends_masked"] / data["assistant_turns"]
    if finding.id == "pad_is_eos" and data.get("labelled"):  # the labels the trainer used, not a guess
        return data["eos_label_masked"] / data["labelled"]
    if finding.id == "labels_aligned" and data.get("rows"):
        return data["misaligned"] / data["rows"]
    return None


def weigh(findings: list[Finding]) -> list[Finding]:
    """Set each finding's ``weight``: 2 + the share affected for a cause found in the training sample while p(EOS)
    at the answer end is low; 2 for that measurement; otherwise 1 for a problem, 0.5 for a warning, plus half the
    share affected when the sample shows it (a cause seen in the data outranks one a check only foresees); 0 for
    what passed or did not apply. Returns ``findings``."""
    measured = next((f for f in findings if f.id == MEASURED), None)
    failing = measured is not None and measured.status in ("problem", "warning")
    for finding in findings:
        share = share_affected(finding) if finding.status in ("problem", "warning") else None
        if failing and share:
            finding.weight = 2 + share
        elif failing and finding is measured:
            finding.weight = 2.0
        else:
            finding.weight = SEVERITY[finding.status] + 0.5 * (share or 0)
    return findings


def ranked(findings: list[Finding]) -> list[Finding]:
    """The findings by weight, highest first (ties keep the checks' order)."""
    return sorted(findings, key=lambda f: -f.weight)


def cause(findings: list[Finding]) -> Finding | None:
    """The finding that explains the measured failure best, when one was found in the training sample."""
    top = ranked(findings)[:1]
    return top[0] if top and top[0].weight > 2 else None
