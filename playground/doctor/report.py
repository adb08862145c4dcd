"""The doctor's report, grouped by what to do: fix at generation time, fix the files, or retrain."""

from __future__ import annotations

import json
import re

from .core import ACTIONS, STATUS_ICONS, STATUSES, Finding
from .ranking import cause, ranked
from .runtimes import RUNTIME_TITLES

# Code (fenced blocks, inline spans) is left alone; elsewhere a token such as <repo_name> or </s> would be read as
# an HTML tag by Markdown renderers (the page, the hub) and vanish.
_CODE = re.compile(r"(```.*?```|`[^`]*`)", re.DOTALL)
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def escape_tags(markdown: str) -> str:
    """Backslash-escape ``<`` that would open an HTML tag, outside code, so tokens show as written."""
    return "".join(part if index % 2 else _TAG_START.sub(r"\\<", part)
                   for index, part in enumerate(_CODE.split(markdown)))

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


def report_markdown(findings: list[Finding], *, title: str = "EOS doctor") -> str:
    """A readable report: a summary line, then the warnings and problems grouped by what fixes them (each with
    what was found, why it matters and the fix), then one line per check that passed or did not apply."""
    counts = _counts(findings)
    parts = [f"## {title}", "",
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
                parts.append(f"- {STATUS_ICONS[finding.status]} **{finding.title}** (`{finding.id}`): {finding.found}")
                continue
            parts += [f"### {STATUS_ICONS[finding.status]} {finding.title} — {finding.status.replace('_', ' ')}",
                      f"`{finding.id}`", "", f"**Found:** {finding.found}", "",
                      f"**Why it matters:** {finding.why}", "", f"**Fix:** {finding.fix}", ""]
        parts.append("")
    lists = runtime_stop_lists(findings)
    if lists:
        parts += ["## Stop lists for your runtime", "",
                  "Every end token the model uses, for each place it may be deployed:", ""]
        for key, code in lists.items():
            parts += [f"**{RUNTIME_TITLES[key]}**", "", f"```\n{code}\n```", ""]
    return escape_tags("\n".join(parts).rstrip() + "\n")


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
