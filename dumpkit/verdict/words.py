"""The words dumpkit says its claims with: what the evidence says, no more.

Each claim has a top-line word (the table's cell), a basis ("observed" when a record of the
thing itself was read — a fault the capture kernel logged, the kernel's own state, a reset
line; "inferred" when it follows from other records — completions the crashed kernel never
processed are DMA *after* the crash only because the kernel processes completions as they
come), and a phrase: one short sentence a customer reads correctly. The capture-kernel claim
never says "hit": it says what happened ("faulted", "wrote") and only with evidence of it.

The words every claim shares are here; each claim's own phrases, header and legend are
declared in its module (:mod:`dumpkit.verdict.claims` lists them). The JSON keys of a claim
stay what they were (``value``, ``applicable``, ``evidence``, ``sources``); ``word``,
``basis`` and ``phrase`` are added beside them.
"""

from __future__ import annotations

__all__ = ["OBSERVED", "INFERRED", "WORD_CLASS", "WORDS", "default_word", "word_class"]

OBSERVED = "observed"
INFERRED = "inferred"

# every top-line word, and what kind of answer it is (colour and order in the text)
WORD_CLASS = {"yes": "bad", "yes, inferred": "bad", "faulted": "bad", "wrote": "bad",
              "unknown": "unknown", "no": "quiet", "no evidence": "quiet", "n/a": "none"}
WORDS = tuple(WORD_CLASS)


def default_word(value: bool | None, applicable: bool = True, basis: str | None = None) -> str:
    """The top-line word of a claim that names none of its own: "n/a" when it does not
    apply, "yes, inferred" for a yes that rests on inference, else yes / no / unknown."""
    if not applicable:
        return "n/a"
    if value is True:
        return "yes, inferred" if basis == INFERRED else "yes"
    return "no" if value is False else "unknown"


def word_class(word: str) -> str:
    """"bad" (DMA or harm), "unknown", "quiet" or "none" (n/a) for a top-line word."""
    return WORD_CLASS.get(word, "unknown")
