"""Answer extraction and numeric normalisation for verifiable rewards.

Every function returns None when it cannot parse; none raises on any input string.
"""
from __future__ import annotations

import re
from fractions import Fraction

_HASH = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})
_WRAPPERS = ("\\text{", "\\mathrm{", "\\mbox{")


def parse_hash_answer(text: str) -> str | None:
    """The text after the last GSM8K-style `#### ` marker, stripped; None without a marker or with nothing after it."""
    found = _HASH.findall(text)
    if not found:
        return None
    answer = found[-1].strip()
    return answer or None


def parse_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), with nested braces; None if absent or unclosed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                content = text[begin:i].strip()
                return content or None
        i += 1
    return None


def normalize_number(text: str) -> Fraction | None:
    """An exact rational value of a numeric answer, or None when the text is not one number.

    Accepts: thousands separators (`1,234`), signs (`+5`, `-5`, the unicode minus), leading/trailing zeros
    (`007`, `2.50`), a trailing period, currency and percent marks (`$18`, `50%` -> 50), units in a `\\text{}`
    suffix, decimals, scientific notation, fractions `a/b` and `\\frac{a}{b}` / `\\dfrac{a}{b}`, and a mixed
    number of sign and fraction such as `-\\frac{1}{2}`.
    """
    if not isinstance(text, str):
        return None
    s = text.translate(_MINUS_SIGNS).strip()
    for wrapper in _WRAPPERS:  # "\text{ dollars}" and the like carry units, not value
        cut = s.find(wrapper)
        if cut > 0:
            s = s[:cut]
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").replace("\\!", "")
    s = s.replace(",", "").replace(" ", "").rstrip(".")
    if not s:
        return None
    sign = 1
    if s[0] in "+-" and s[1:2] == "\\":
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    frac = _FRAC.match(s)
    if frac:
        num, den = normalize_number(frac.group(1)), normalize_number(frac.group(2))
        return sign * num / den if num is not None and den not in (None, 0) else None
    if s.count("/") == 1:
        num, den = s.split("/")
        if _NUMBER.fullmatch(num) and _NUMBER.fullmatch(den):
            den_value = Fraction(den)
            return sign * Fraction(num) / den_value if den_value != 0 else None
        return None
    if _NUMBER.fullmatch(s):
        try:
            return sign * Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def answers_match(predicted: str, reference: str) -> bool:
    """Numerically equal when both parse as numbers; otherwise equal as strings without whitespace."""
    a, b = normalize_number(predicted), normalize_number(reference)
    if a is not None and b is not None:
        return a == b
    return "".join(predicted.split()) == "".join(reference.split())


def normalize_answer(text: str) -> str:
    """Lower case, whitespace collapsed to single spaces and trimmed, a final full stop dropped: " Yes." -> "yes"."""
    return " ".join(text.lower().split()).removesuffix(".").strip()
