"""Text that can hold a token, a prompt, a file name or a model's words shows as written in every view.

Each view is fed the same text and a plain one: rendered (Markdown as CommonMark with HTML, as the page's
renderer reads it), the text must appear whole and the markup must be the same as for the plain text — no tag,
emphasis, link or LaTeX came from the text. One browser check at the end runs a column named after the text.
"""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from playground.engine import Settings, Variant, compare
from playground.evaluate.metrics import row_result
from playground.evaluate.prompt_files import Prompt
from playground.evaluate.report import Report
from playground.markup import md_code, md_text

PIECES = ["</s>", "<script>alert(1)</script>", "**bold**", "$x$", "$$x^2$$", "[link](y)", "_u_", "~~s~~", "`c`"]
TEXT = " ".join(PIECES)
PLAIN = "plain words"
MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["strikethrough", "table"])


class Shown(HTMLParser):
    """What a browser would show: the text, and the elements (by tag) the markup made."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.parts = [], []
        self.feed(html)
        self.text = "".join(self.parts)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.parts.append(data)


def from_markdown(markdown: str) -> Shown:
    # The page renders LaTeX when the Markdown source holds its delimiters ($$ by default).
    assert "$$" not in markdown, markdown
    return Shown(MARKDOWN.render(markdown))


def assert_shown_as_text(view, render=Shown, text: str = TEXT) -> None:
    """``view(text)`` shows ``text`` whole, with the same elements as ``view(PLAIN)``."""
    shown, plain = render(view(text)), render(view(PLAIN))
    assert text in shown.text, shown.text
    assert shown.tags == plain.tags, f"markup from the text: {shown.tags} vs {plain.tags}"


def test_the_helpers_show_text_as_written():
    assert_shown_as_text(md_text, from_markdown)
    assert_shown_as_text(lambda text: f"**{md_text(text)}** — {md_code(text)}", from_markdown)
    assert_shown_as_text(lambda text: md_text(f"# {text}\n- {text}\n1. {text}"),  # line starts are no blocks
                         lambda markdown: from_markdown(markdown.replace("\n", " ")))
    assert from_markdown(md_text("# a\n- b\n1. c")).tags == ["p"]


@pytest.fixture(scope="module")
def trace(tiny):
    return compare(tiny, "Hello", [Variant("a"), Variant("b", ["ban_eos"])], Settings(max_new_tokens=4))


def named(trace, text: str):
    """The trace with its columns named ``text`` and each step's token ``text`` (what a model could write)."""
    variants = []
    for variant in trace.variants:
        steps = [dataclasses.replace(s, token=text, top_k=[dataclasses.replace(t, token=text) for t in s.top_k])
                 for s in variant.steps]
        variants.append(dataclasses.replace(variant, name=text, steps=steps, stop_reason="stop_string",
                                            stop_detail=text))
    return dataclasses.replace(trace, variants=variants)


def test_the_compare_views_show_tokens_names_and_stop_strings_as_text(trace, tiny):
    from playground.story import story_markdown
    from playground.views import inspector_html, status_markdown, token_spans

    assert_shown_as_text(lambda text: token_spans(named(trace, text).variants[0]))
    assert_shown_as_text(lambda text: inspector_html(named(trace, text), 0, 1, tiny.info.stop_token_ids))
    assert_shown_as_text(lambda text: status_markdown(named(trace, text).variants[1]), from_markdown)
    assert_shown_as_text(lambda text: story_markdown(named(trace, text)), from_markdown)


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


def test_the_evaluate_table_shows_prompts_answers_and_columns_as_text(trace):
    from playground.ui.evaluate_tab import prompts_html

    def table(text: str) -> str:
        variant = dataclasses.replace(trace.variants[1], text=text)
        report = Report(model="m", model_reference="default", settings=Settings(max_new_tokens=4).to_dict(),
                        seeds=[0], prompts=[Prompt([{"role": "user", "content": text}], "line 1")],
                        columns=[Variant(text, ["ban_eos"])], rows=[row_result(variant, prompt=0, column=0, seed=0)],
                        problems=[])
        return prompts_html(report)

    assert_shown_as_text(table)
    assert table(TEXT).count(TEXT.replace("<", "&lt;").replace(">", "&gt;")) >= 3  # header, prompt, answer


def test_the_model_panel_recipe_banner_and_notices_show_text_as_written(tiny):
    from playground.finetune.lab import Lab
    from playground.finetune.recipes import RECIPES
    from playground.service import Playground
    from playground.ui import build_app
    from playground.ui.errors import refusal
    from playground.ui.finetune_tab import preview_html
    from playground.ui.model_panel import model_markdown

    def panel(text: str) -> str:
        bundle = dataclasses.replace(tiny, info=dataclasses.replace(tiny.info, name=text, source=text))
        return model_markdown(Playground(bundle, "tiny"))

    assert_shown_as_text(panel, from_markdown)
    assert_shown_as_text(lambda text: refusal(Playground(tiny, "tiny"), "/x", ValueError(text), page=True).message)

    description = preview_html(Lab(Playground(tiny, "tiny")), "eos_as_text")[0]
    assert "'</s>'" in RECIPES["eos_as_text"].description and "'</s>'" in from_markdown(description).text

    def banner(text: str) -> str:
        config = build_app(Playground(tiny, "tiny", banner=text)).get_config_file()
        return next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "banner")

    assert_shown_as_text(banner, from_markdown)
    assert "⚠" not in banner(PLAIN)


def test_a_column_named_with_markup_shows_as_text_in_chromium(app_server):
    """The page itself: a stop string of tags, emphasis and dollars names a column; its status, the story and the
    chart's legend show it as written and no script element appears. Then the doctor's report draws its marks."""
    from playwright.sync_api import sync_playwright
    from urllib.parse import quote

    from playground.bench.page import CHROMIUM, CHROMIUM_ARGS
    from test_browser import open_page, wait_until_finished

    column = 'stop_strings(strings="</s>"|"<script>alert(1)</script>"|"**b**"|"$$x$$")'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = open_page(browser, f"{app_server}?prompt=Hi&columns=1&max_new_tokens=3&c1={quote(column)}")
            page.evaluate("() => { window.alerted = false; window.alert = () => { window.alerted = true; }; }")
            scripts = page.evaluate("() => document.scripts.length")
            page.locator("#run").click()
            wait_until_finished(page, 1)
            page.wait_for_function("() => document.querySelector('#chart .legendtext') !== null", timeout=30_000)
            status = page.locator("#status-0").text_content()
            story = page.locator("#story").text_content()
            legend = page.locator("#chart .legendtext").first.text_content()
            for shown in (status, story, legend):
                assert all(piece in shown for piece in ['"</s>"', '"<script>alert(1)</script>"', '"**b**"', '"$$x$$"']), shown
            assert page.evaluate("() => document.scripts.length") == scripts and not page.evaluate("() => window.alerted")
            assert page.locator("#status-0 strong").count() == 1  # the name, in bold: our own markup
            assert page.locator("#story strong, #story em, #status-0 em, .katex").count() == 0
            # The doctor's report marks each finding with a badge the page's CSS draws (no emoji font here).
            page.get_by_role("tab", name="EOS doctor").click()
            page.get_by_role("button", name="Examine the model").click()
            page.wait_for_function("() => document.querySelector('#doctor-report').innerText.includes('problem(s)')",
                                   timeout=300_000)
            marks = page.evaluate("""() => [...document.querySelectorAll('#doctor-report .status-mark')]
                                     .map(e => [e.classList[1], e.getBoundingClientRect().width > 8])""")
            assert ["warning", True] in marks and ["ok", True] in marks  # SmolLM2: pad == EOS is its one warning
            assert not re.search("[\u2705\u274c\u26a0]", page.locator("#doctor-report").text_content())
        finally:
            browser.close()


def test_the_page_modules_draw_no_emoji():
    """❌ ✅ ⚠️ ➖ are empty boxes in a browser without an emoji font: the page's views use status_mark instead."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent / "playground"
    emoji = re.compile("[\u2705\u274c\u26a0\u2796]")
    for path in [*(root / "ui").glob("*.py"), root / "story.py", root / "doctor" / "report.py"]:
        assert not emoji.search(path.read_text(encoding="utf-8")), f"{path.name} draws an emoji the page may not have"
