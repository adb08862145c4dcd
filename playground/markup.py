r"""Text shown in the page's Markdown views exactly as written: a token, a prompt, a file name, a model's text.

Gradio's Markdown reads ``</s>`` as an HTML tag (it vanishes), ``**`` and ``_`` as emphasis, ``[x](y)`` as a
link, a line starting with ``#`` or ``-`` as a heading or a list, and renders ``$$…$$`` as LaTeX (its check
looks for the delimiters in the Markdown source, so ``\$\$`` never starts it). Our own
Markdown around such text stays Markdown; only the text is escaped, with :func:`md_text` (running text) or
:func:`md_code` (a code span). HTML views use :func:`html.escape`. Our own sentences that quote tokens and are
also read raw (the doctor's findings, printed by the CLI) escape only what would change: :func:`md_prose`.

    >>> print(md_text("the end appended as the string '</s>', **twice**, $$x$$ [a](b)\n# not a heading"))
    the end appended as the string '&lt;/s&gt;', \*\*twice\*\*, \$\$x\$\$ \[a\]\(b\)
    \# not a heading
    >>> print(md_code("`a` </s> $$"))
    <code>\`a\` &lt;/s&gt; \$\$</code>
    >>> print(md_prose("pad_token '<repo_name>' '**' ['_x_'](y), `</s>` in code, $$x$$"))
    pad_token '\<repo_name>' '\*\*' ['\_x\_'\](y), `</s>` in code, \$\$x\$\$
"""

from __future__ import annotations

import html
import re

# Markdown's inline punctuation (CommonMark lets a backslash escape any of it), and what starts a block at the
# beginning of a line (a heading, a list, a rule, a setext underline; ">" is already an entity).
_INLINE = re.compile(r"([\\`*_\[\](){}|~!$])")
_LINE_START = re.compile(r"^(\s*)([#+\-=]|\d+(?=\.))", re.MULTILINE)


def md_text(text) -> str:
    """``text`` (anything; ``str()`` of it) for a Markdown view, shown as written: HTML's ``& < >`` as entities,
    Markdown's punctuation (and ``$``) backslash-escaped, a line's first ``#``, ``-``, ``+``, ``=`` or ``1.``
    too. Line breaks stay line breaks."""
    text = _INLINE.sub(r"\\\1", html.escape(str(text), quote=False))
    return _LINE_START.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2)[0].isdigit() else "\\" + m.group(2)),
                           text)


def md_code(text) -> str:
    """``text`` as an inline code span in a Markdown view, whatever backticks or tags it holds."""
    return f"<code>{md_text(text)}</code>"  # between inline tags Markdown still reads ** and $$: escaped too


_CODE = re.compile(r"(```.*?```|`[^`]*`)", re.DOTALL)
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


# Outside code in our prose: what makes emphasis, strike-through, LaTeX or a link of text; an underscore only at a
# word's edge (pad_token stays pad_token), a backslash only before punctuation (it would escape it).
_PROSE_SIGNS = re.compile(r"([*~$]|\\(?=[!-/:-@\[-`{-~])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|\](?=[(\[]))")


def md_prose(markdown) -> str:
    """Our own sentences that quote tokens (the doctor's findings): code spans stay code; elsewhere whatever a
    token could turn into emphasis, LaTeX, a link or an HTML tag is backslash-escaped, and nothing else, so the
    text still reads well raw (the CLI prints it, FIXES.md holds it)."""
    return "".join(part if index % 2 else _TAG_START.sub(r"\\<", _PROSE_SIGNS.sub(r"\\\1", part))
                   for index, part in enumerate(_CODE.split(str(markdown))))


def escape_tags(markdown: str) -> str:
    """A whole Markdown document of our own that quotes tokens (the doctor's FIXES.md): outside code, ``<`` that
    would open an HTML tag and ``$`` are backslash-escaped, so ``</s>`` or ``$$`` show as written; the rest stays
    readable in a file."""
    return "".join(part if index % 2 else _TAG_START.sub(r"\\<", part).replace("$", "\\$")
                   for index, part in enumerate(_CODE.split(markdown)))


# A finding's or a notice's status as the page draws it: a coloured badge made by the page's CSS (.status-mark)
# around a sign every font has, since ❌ ✅ ⚠️ are empty boxes in a browser without an emoji font. Text outside the
# page (the CLI, files, the API) keeps the doctor's STATUS_ICONS.
STATUS_SIGNS = {"problem": "×", "warning": "!", "ok": "", "not_applicable": "–"}  # ok: a tick drawn by the CSS


def status_mark(status: str) -> str:
    """The page's mark for ``status`` (problem, warning, ok, not_applicable): an inline HTML span."""
    return (f'<span class="status-mark {status}" title="{status.replace("_", " ")}">'
            f'{STATUS_SIGNS[status]}</span>')
