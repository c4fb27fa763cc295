"""A claim (:class:`Claim`: true, false or unknown, with its evidence) and the record that
declares one kind of claim (:class:`ClaimSpec`: its name, how it is headed and counted,
and the function that judges it). Each claim module declares one ``SPEC``;
:data:`dumpkit.verdict.claims.CLAIMS` lists them, and everything that shows or counts
claims reads that list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dumpkit.verdict.words import default_word

__all__ = ["Claim", "ClaimSpec", "Judge", "claim_word"]


@dataclass
class Claim:
    """True, False, or None for unknown; ``evidence`` says why either way. A claim that
    does not apply (a reset cannot stop DMA that did not happen) has ``applicable`` False.
    ``sources`` names what the claim was read from (kernel objects with their addresses,
    IOMMU tables with their physical pages, capture logs), so a damaged one can be named.
    ``basis`` is "observed" or "inferred" for a claim that is known (None: unknown or n/a);
    ``phrase`` says it in words (:mod:`dumpkit.verdict.words`); ``term`` is its top-line word
    where the default (yes / yes, inferred / no / unknown / n/a) would say more than the
    evidence ("no evidence") or less ("faulted")."""

    value: bool | None
    evidence: list[str] = field(default_factory=list)
    applicable: bool = True
    sources: list[str] = field(default_factory=list)
    basis: str | None = None
    phrase: str = ""
    term: str | None = None

    @property
    def word(self) -> str:
        """The claim's top-line word (see :data:`dumpkit.verdict.claims.LEGEND`)."""
        if self.term is not None and self.applicable:
            return self.term
        return default_word(self.value, self.applicable, self.basis)

    def __str__(self) -> str:
        said = ([self.phrase] if self.phrase else []) + self.evidence
        return f"{self.word}: {'; '.join(said)}" if said else self.word


def claim_word(c: Claim) -> str:
    """The claim as one short word: yes, no, unknown, or n/a when it does not apply (the
    plain word of the JSON and the comparison data; :attr:`Claim.word` is the top-line word
    of the text)."""
    return "n/a" if not c.applicable else {True: "yes", False: "no", None: "unknown"}[c.value]


#: judge(the dump's evidence (dumpkit.verdict.evidence.DumpEvidence), the device's
#: (dumpkit.verdict.device.DeviceEvidence), the claims judged before this one by name) -> its
#: claim. A judge may replace an earlier claim that its evidence settles (DMA after the crash
#: shows that the device could DMA): the claims agree before the next one reads them. The
#: evidence types are named, not imported: a claim sits below what it is judged from.
Judge = Callable[[object, object, dict[str, Claim]], Claim]


@dataclass(frozen=True)
class ClaimSpec:
    """One kind of claim, as every output names and counts it."""

    name: str           # the EndpointVerdict attribute, the JSON and fleet endpoints key
    header: str         # the verdict table's short column header
    label: str          # the verdict text's line for it under each endpoint
    question: str       # the report's column header: the question it answers
    short: str          # the comparison picture's column header
    means: str          # the legend: what the column says
    words: tuple[tuple[str, str], ...]     # the legend: each top-line word and what it means
    column: str         # the triage row's count of endpoints where it is yes
    judge: Judge
    # the fleet's endpoints table keeps whether it applies (only the reset claim, as it
    # always has: a column added for another claim would change the dataset's schema)
    fleet_applicable: bool = False

    @property
    def unknown_column(self) -> str:
        """The triage row's count of endpoints where the dump cannot tell."""
        return f"{self.column}_unknown"

    def of(self, verdict) -> Claim:
        """This claim of an endpoint's verdict."""
        return getattr(verdict, self.name)
