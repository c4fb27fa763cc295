"""The one list of claims (:data:`CLAIMS`), in the order every output gives them: the
verdict's text, JSON and CSV, the comparison, the report, the triage row and the fleet's
tables all read it. A new claim is a module declaring its ``SPEC`` (:class:`ClaimSpec`),
one line here, and its field on :class:`dumpkit.verdict.model.EndpointVerdict`."""

from __future__ import annotations

from dumpkit.verdict import could_dma, did_dma_after_crash, hit_capture_kernel, stopped_by_reset
from dumpkit.verdict.claim import ClaimSpec

__all__ = ["CLAIMS", "HEADERS", "LEGEND", "NAMES"]

# judged in this order: each judge reads the claims before it
CLAIMS: tuple[ClaimSpec, ...] = (
    could_dma.SPEC,
    did_dma_after_crash.SPEC,
    hit_capture_kernel.SPEC,
    stopped_by_reset.SPEC,
)
NAMES = tuple(c.name for c in CLAIMS)
# short column headers of the verdict table, and what each word in them means
HEADERS = {c.name: c.header for c in CLAIMS}
LEGEND = {c.name: (c.means, list(c.words)) for c in CLAIMS}
