"""What the escaping tests of the unit and engine tiers share: text full of markup, what a browser would show of
rendered HTML, and the check that a view shows such text whole and adds no element for it."""

from __future__ import annotations

from html.parser import HTMLParser

from markdown_it import MarkdownIt

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
