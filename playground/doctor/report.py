"""The doctor's report, grouped by what to do: fix at generation time, fix the files, or retrain."""

from __future__ import annotations

import json

from ..markup import escape_tags, md_prose, status_mark  # noqa: F401 - escape_tags: repair.py's, imported from here
from .core import ACTIONS, STATUS_ICONS, STATUSES, Finding
from .ranking import cause, ranked
from .runtimes import RUNTIME_TITLES

GROUP_TITLES = {
    "generation": "Fix at generation time (no retraining)",
    "files": "Fix the files (`python -m playground doctor --fix OUT_DIR` writes them)",
    "retrain": "Fix the training, then retrain",
    "unknown": "Could not check",
    "ok": "Passed",
    "not_applicable": "Not applicable",
}


def group_findings(findings: list[Finding]) -> dict[str, list[Finding]]:
    """Warnings and problems by ``action`` (``"unknown"`` when a check could not say), then ``ok`` and
    ``not_applicable``; every group is present. The groups of warnings and problems, and the findings in each,
    come by ``weight`` (how much they explain the measured failure: :mod:`.ranking`), heaviest first."""
    groups: dict[str, list[Finding]] = {key: [] for key in GROUP_TITLES}
    for finding in ranked(findings):
        if finding.status in ("ok", "not_applicable"):
            groups[finding.status].append(finding)
        else:
            groups[finding.action if finding.action in ACTIONS else "unknown"].append(finding)
    failing = sorted((key for key in GROUP_TITLES if key not in ("ok", "not_applicable")),
                     key=lambda key: -max((f.weight for f in groups[key]), default=-1))
    return {key: groups[key] for key in (*failing, "ok", "not_applicable")}


def _counts(findings: list[Finding]) -> dict:
    return {status: sum(f.status == status for f in findings) for status in STATUSES}


def report_markdown(findings: list[Finding], *, title: str = "EOS doctor", page: bool = False) -> str:
    """A readable report: a summary line, then the warnings and problems grouped by what fixes them (each with
    what was found, why it matters and the fix), then one line per check that passed or did not apply. ``page``:
    for the page, with marks its CSS draws (:func:`playground.markup.status_mark`) instead of emoji."""
    icons = {status: status_mark(status) for status in STATUSES} if page else STATUS_ICONS
    counts = _counts(findings)
    t = md_prose  # a finding's text quotes tokens (</s>, <repo_name>, '**'): they show as written
    parts = [f"## {t(title)}", "",
             f"**{counts['problem']} problem(s), {counts['warning']} warning(s), {counts['ok']} ok, "
             f"{counts['not_applicable']} not applicable**", ""]
    found = cause(findings)
    if found is not None:
        parts += [f"**Most likely cause** of the low p(EOS) where answers end: {found.title} (`{found.id}`).", ""]
    for key, group in group_findings(findings).items():
        if not group:
            continue
        parts += [f"## {GROUP_TITLES[key]}", ""]
        for finding in group:
            if key in ("ok", "not_applicable"):
                parts.append(f"- {icons[finding.status]} **{t(finding.title)}** (`{finding.id}`): {t(finding.found)}")
                continue
            parts += [f"### {icons[finding.status]} {t(finding.title)} — {finding.status.replace('_', ' ')}",
                      f"`{finding.id}`", "", f"**Found:** {t(finding.found)}", "",
                      f"**Why it matters:** {t(finding.why)}", "", f"**Fix:** {t(finding.fix)}", ""]
        parts.append("")
    lists = runtime_stop_lists(findings)
    if lists:
        parts += ["## Stop lists for your runtime", "",
                  "Every end token the model uses, for each place it may be deployed:", ""]
        for key, code in lists.items():
            parts += [f"**{RUNTIME_TITLES[key]}**", "", f"```\n{code}\n```", ""]
    return "\n".join(parts).rstrip() + "\n"


def runtime_stop_lists(findings: list[Finding]) -> dict[str, str]:
    """The stop configuration per runtime (``end_tokens_all_stop`` computes it), or {}."""
    return next((f.data["stop_lists"] for f in findings if f.data.get("stop_lists")), {})


def report_json(findings: list[Finding]) -> str:
    """``{"summary": {status: count}, "groups": {group: [finding ids]}, "stop_lists": {runtime: code},
    "findings": [Finding.to_dict(), ...]}``."""
    groups = {key: [f.id for f in group] for key, group in group_findings(findings).items()}
    return json.dumps({"summary": _counts(findings), "groups": groups, "stop_lists": runtime_stop_lists(findings),
                       "findings": [f.to_dict() for f in findings]},
                      indent=2, ensure_ascii=False, default=str)
