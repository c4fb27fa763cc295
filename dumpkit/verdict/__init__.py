"""Per-endpoint verdict: could it DMA when the kernel died, did it keep writing after the
crash, did that DMA hit the capture kernel, and did a port reset stop it — each claim with
its evidence, or "unknown" with the reason. Nothing here names an IOMMU vendor or a
driver: the IOMMU state comes from :mod:`dumpkit.iommu`, ring evidence from
:mod:`dumpkit.rings`.

The evidence is gathered once per dump (:mod:`.evidence`, :mod:`.capture`) and once per
endpoint (:mod:`.device`); each claim is one module declaring its :class:`ClaimSpec`
(:mod:`.could_dma`, :mod:`.did_dma_after_crash`, :mod:`.hit_capture_kernel`,
:mod:`.stopped_by_reset`), listed once in :data:`CLAIMS` (:mod:`.claims`), which the
renderers (:mod:`.render`, :mod:`.compare`), triage and the fleet read.
"""

from dumpkit.verdict.capture import NOT_RESET_LINE, RESET_LINE, CaptureMismatch
from dumpkit.verdict.claim import Claim, ClaimSpec, claim_word
from dumpkit.verdict.claims import CLAIMS
from dumpkit.verdict.device import state_lookup
from dumpkit.verdict.judging import judge
from dumpkit.verdict.model import EndpointVerdict, Verdicts

__all__ = ["CLAIMS", "CaptureMismatch", "Claim", "ClaimSpec", "EndpointVerdict", "NOT_RESET_LINE", "RESET_LINE",
           "Verdicts", "claim_word", "judge", "state_lookup"]
