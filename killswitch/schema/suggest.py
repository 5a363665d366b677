"""'Did you mean ...?' for a misspelt key, rule kind or venue name (stdlib difflib)."""

from __future__ import annotations

from difflib import get_close_matches
from typing import Iterable

CUTOFF = 0.6  # difflib's similarity ratio; 0.6 catches one or two wrong letters in a short word


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'max_drawdown'?)"`` for the closest candidate, or ``""``."""
    pool = sorted({c for c in candidates if c != word})
    match = get_close_matches(word, pool, n=1, cutoff=CUTOFF)
    if not match:
        # Case slips ("Drawdown") and '-' for '_' score low as plain strings.
        folded = {c.lower().replace("-", "_"): c for c in pool}
        hit = folded.get(word.lower().replace("-", "_"))
        match = [hit] if hit else []
    return f" (did you mean {match[0]!r}?)" if match else ""
