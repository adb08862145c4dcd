"""Text that can hold a token, a prompt, a file name or a model's words shows as written: the Markdown helpers and
the doctor's report, rendered as the page's renderer reads them, and the page modules draw no emoji."""

from __future__ import annotations

import dataclasses
import re


from playground.markup import md_code, md_text
from tests.escaping_cases import PLAIN, TEXT, assert_shown_as_text, from_markdown
from tests.support import ROOT

def test_the_helpers_show_text_as_written():
    assert_shown_as_text(md_text, from_markdown)
    assert_shown_as_text(lambda text: f"**{md_text(text)}** — {md_code(text)}", from_markdown)
    assert_shown_as_text(lambda text: md_text(f"# {text}\n- {text}\n1. {text}"),  # line starts are no blocks
                         lambda markdown: from_markdown(markdown.replace("\n", " ")))
    assert from_markdown(md_text("# a\n- b\n1. c")).tags == ["p"]


def test_the_doctor_report_shows_quoted_tokens_as_text():
    from playground.doctor import report_markdown
    from playground.doctor.core import Finding

    def report(text: str, page: bool) -> str:
        finding = Finding("pad_is_eos", f"title {text}", "problem", f"found {text}", f"why {text}", f"fix {text}",
                          action="files")
        return report_markdown([finding, dataclasses.replace(finding, id="ok", status="ok", action=None)],
                               title=f"EOS doctor — {text}", page=page)

    # Backticks are the findings' own code markup (`generation_config.json`); everything else shows as written.
    for page in (True, False):
        assert_shown_as_text(lambda text: report(text, page), from_markdown, TEXT.replace(" `c`", ""))
    shown = from_markdown(report(PLAIN, page=True))
    assert "❌" not in shown.text and "✅" not in shown.text  # marks the page's CSS draws, no emoji font needed
    assert 'class="status-mark problem"' in report(PLAIN, page=True)


def test_the_page_modules_draw_no_emoji():
    """❌ ✅ ⚠️ ➖ are empty boxes in a browser without an emoji font: the page's views use status_mark instead."""
    root = ROOT / "playground"
    emoji = re.compile("[\u2705\u274c\u26a0\u2796]")
    for path in [*(root / "ui").glob("*.py"), root / "story.py", root / "doctor" / "report.py"]:
        assert not emoji.search(path.read_text(encoding="utf-8")), f"{path.name} draws an emoji the page may not have"
