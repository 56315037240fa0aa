"""User-provided text made safe to show: site names, file names, cell contents, API sources, model names.

Why: Streamlit renders st.markdown/caption/info/error/title/subheader (and widget labels) as
GitHub-flavoured Markdown, so a site called `[x](http://evil) ![i](http://evil/i.png)` became a live
link and an image the browser fetched, and a bare `http://...` became a link by itself. Every page
passes text it did not write itself through `md` before it reaches Markdown; plotly renders a
subset of HTML (`<a href>`, `<b>`) in titles, legends and axis labels, so such text goes through
`plot_text` there. Pure functions, no Streamlit: pages are thin and this is testable without a browser.
"""

from __future__ import annotations

import html
import re

#: The characters that start Markdown constructs anywhere in a line: emphasis and code (`* _ ~ \``), links,
#: images, footnotes and Streamlit's `:red[...]` directives (all need `[`), raw HTML, autolinks and entities
#: (`< > &`), math (`$`), tables (`|`), headings (`#`) and the escape itself. Others (`/ ( ) . : - ' "`) are
#: left alone so names read as typed in the Markdown source too; a leading list or quote marker is
#: escaped on its own (`_LEADING`).
_SPECIAL = re.compile(r"([\\`*_~\[\]<>&$|#])")
_LEADING = re.compile(r"^(\s*)([-+]|\d+[.)])")


#: Where GitHub-flavoured Markdown starts a bare-URL link (`http://`, `https://`, `www.`, `name@host.tld`).
#: Streamlit finds these in the text *after* escapes are resolved, so a backslash does not stop them: an
#: invisible WORD JOINER (U+2060) is put inside each one instead.
_AUTOLINK = re.compile(r"(?i)(https?|ftp|www|mailto|xmpp)(?=[:.])|(@)")
JOINER = "\u2060"


def md(text: object) -> str:
    """`text` as Markdown that displays these characters: no links, images, HTML or formatting.

    Line breaks become spaces (names and messages are one line; a break could start a heading or a list),
    and an invisible U+2060 breaks each bare URL (see `_AUTOLINK`).
    """
    s = " ".join(("" if text is None else str(text)).splitlines())
    s = _AUTOLINK.sub(lambda m: m.group(0) + JOINER, s)
    s = _SPECIAL.sub(r"\\\1", s)
    return _LEADING.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], s)


def plot_text(text: object) -> str:
    """`text` for a plotly title, legend entry or annotation: its HTML-like tags shown, not rendered."""
    return html.escape("" if text is None else str(text), quote=False)
