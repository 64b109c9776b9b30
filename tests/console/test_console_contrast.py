"""The console's colours meet WCAG 2.1 AA: every text colour the stylesheet sets is at
least 4.5:1 against each background it is drawn on. The colours are read from
console.css itself, so a change there that breaks contrast fails here."""

from __future__ import annotations

import re

import pytest

from forgeml.console.render import HERE

CSS = (HERE / "static" / "console.css").read_text()
VARIABLES = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-fA-F]{3,6})", CSS))

# (text, background, where): variables by name, literals as written in the CSS.
PAIRS = [
    ("fg", "bg", "body text"),
    ("muted", "bg", "hints, footer, hashes"),
    ("muted", "soft", "hints in notices"),
    ("fg", "soft", "table headers, notices, cards"),
    ("link", "bg", "links"),
    ("link", "soft", "links in table headers and notices"),
    ("#fff", "accent", "header, buttons"),
    ("accent", "#fff", "secondary buttons, buttons in the header"),
    ("#fff", "bad", "danger buttons"),
    ("ok", "bg", "passed, succeeded, running"),
    ("bad", "bg", "failed, refused, error text"),
    ("warn", "bg", "skipped, queued"),
    ("fg", "#fff0f0", "forgotten rows"),
    ("link", "#fff0f0", "links in forgotten rows"),
    ("bad", "#fff0f0", "statuses in forgotten rows"),
    ("fg", "#fffbe6", "a new key's secret"),
    ("#700", "#ffe0e0", "removed text in diffs"),
    ("#064", "#dff5df", "added text in diffs"),
]


def rgb(colour: str) -> tuple[float, ...]:
    value = VARIABLES.get(colour, colour).lstrip("#")
    if len(value) == 3:
        value = "".join(c * 2 for c in value)
    return tuple(int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))


def luminance(colour: str) -> float:
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb(colour)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(text: str, background: str) -> float:
    lighter, darker = sorted((luminance(text), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_the_stylesheet_defines_the_colours_checked():
    assert {"fg", "muted", "bg", "link", "accent", "ok", "bad", "warn", "soft"} <= set(VARIABLES)


@pytest.mark.parametrize(("text", "background", "where"), PAIRS, ids=[p[2] for p in PAIRS])
def test_text_contrast_is_at_least_aa(text, background, where):
    for colour in (text, background):  # a literal no longer in the CSS: update PAIRS
        assert colour in VARIABLES or colour.lower() in CSS.lower(), f"{colour} not in the CSS"
    assert contrast(text, background) >= 4.5, f"{where}: {contrast(text, background):.2f}:1"


def test_the_check_itself_tells_good_from_bad():
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#777", "#fff") < 4.5  # mid grey on white fails AA
