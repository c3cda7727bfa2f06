"""Whether two conversion rates differ by more than chance: a two-proportion z-test.

The plain test A/B tools report: under "both variants convert alike" the difference of the
two rates, divided by its standard error from the pooled rate, is close to normal, and the
p-value is the chance of a difference at least that large either way. The normal
approximation only holds when each variant expects a few conversions and a few
non-conversions (``MIN_EXPECTED``); below that the answer is None: too few to tell.
"""

from __future__ import annotations

import math

MIN_EXPECTED = 5
"""Expected conversions, and non-conversions, each variant needs for the test to hold."""
SIGNIFICANT = 0.05
"""Below this p-value a difference is called unlikely to be chance."""


def two_proportion_p_value(
    converted_a: int, entered_a: int, converted_b: int, entered_b: int
) -> float | None:
    """Two-sided p-value that rates ``converted_a / entered_a`` and ``converted_b /
    entered_b`` differ by chance alone; None when the samples are too small to tell."""
    if entered_a <= 0 or entered_b <= 0:
        return None
    pooled = (converted_a + converted_b) / (entered_a + entered_b)
    for entered in (entered_a, entered_b):
        if min(entered * pooled, entered * (1 - pooled)) < MIN_EXPECTED:
            return None
    error = math.sqrt(pooled * (1 - pooled) * (1 / entered_a + 1 / entered_b))
    z = (converted_b / entered_b - converted_a / entered_a) / error
    return math.erfc(abs(z) / math.sqrt(2))


def p_text(p_value: float) -> str:
    """A p-value as a table shows it: ``0.018``, or ``<0.001`` below what three places say.

    Never rounded across ``SIGNIFICANT``: 0.04996 reads ``0.04996``, not ``0.050`` beside a
    verdict that calls it significant (or, judged on the rounded figure, not)."""
    if p_value < 0.001:
        return "<0.001"
    for places in range(3, 8):
        text = f"{p_value:.{places}f}"
        if (float(text) < SIGNIFICANT) == (p_value < SIGNIFICANT):
            return text
    return f"<{SIGNIFICANT}"
