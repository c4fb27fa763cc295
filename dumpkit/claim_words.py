"""The words dumpkit says its claims with: what the evidence says, no more.

Each claim has a top-line word (the table's cell), a basis ("observed" when a record of the
thing itself was read — a fault the capture kernel logged, the kernel's own state, a reset
line; "inferred" when it follows from other records — completions the crashed kernel never
processed are DMA *after* the crash only because the kernel processes completions as they
come), and a phrase: one short sentence a customer reads correctly. The capture-kernel claim
never says "hit": it says what happened ("faulted", "wrote") and only with evidence of it.

The JSON keys of a claim stay what they were (``value``, ``applicable``, ``evidence``,
``sources``); ``word``, ``basis`` and ``phrase`` are added beside them.
"""

from __future__ import annotations

__all__ = ["OBSERVED", "INFERRED", "HEADERS", "LEGEND", "WORD_CLASS", "default_word", "word_class",
           "DID_FAULTS", "DID_COMPLETIONS", "DID_COMPLETIONS_FULL", "DID_NO_EVIDENCE", "DID_COULD_NOT",
           "HIT_FAULTED", "HIT_WROTE", "HIT_WROTE_RESERVED", "HIT_OVERLAP_UNKNOWN", "HIT_STOPPED_FULL",
           "HIT_STOPPED_RESET", "HIT_NO_FAULT", "HIT_NA", "HIT_NO_CAPTURE", "STOPPED_YES", "STOPPED_NO",
           "STOPPED_NO_FULL", "STOPPED_NA", "WORDS"]

OBSERVED = "observed"
INFERRED = "inferred"

# --- did it do DMA after the crash ------------------------------------------------------------
DID_FAULTS = "did DMA after the crash: the capture kernel logged IOMMU faults from it"
DID_COMPLETIONS = "did DMA after the crash (inferred from completions the crashed kernel never processed)"
DID_COMPLETIONS_FULL = ("did DMA after the crash until its ring was full, then stopped by itself (inferred from "
                        "completions the crashed kernel never processed)")
DID_NO_EVIDENCE = "no evidence of DMA after the crash"
DID_COULD_NOT = "no DMA after the crash: it could not DMA"

# --- what its DMA did to the capture kernel (JSON key hit_capture_kernel) ----------------------
HIT_FAULTED = "faulted in the capture kernel"
HIT_WROTE = "kept writing through the copied tables while the capture kernel ran"
HIT_WROTE_RESERVED = "wrote into the capture kernel's memory (the crashkernel reservation)"
HIT_OVERLAP_UNKNOWN = "nothing shows whether it overlapped the capture kernel's use of the IOMMU"
HIT_STOPPED_FULL = "stopped before the capture kernel took over (ring full)"
HIT_STOPPED_RESET = "stopped before the capture kernel took over the IOMMU (port reset)"
HIT_NO_FAULT = "no fault from it in the capture kernel, which did not copy the crashed kernel's tables"
HIT_NA = "no DMA after the crash to reach the capture kernel"
HIT_NO_CAPTURE = "nothing of the capture kernel was given"

# --- did a reset stop it ------------------------------------------------------------------------
STOPPED_YES = "stopped by a port reset"
STOPPED_NO = "not stopped by a port reset"
STOPPED_NO_FULL = "no port reset; it stopped by itself (ring full)"
STOPPED_NA = "no DMA after the crash to stop"

# short column headers of the verdict table, and what each word in them means
HEADERS = {"could_dma": "could", "did_dma_after_crash": "did", "hit_capture_kernel": "capture",
           "stopped_by_reset": "stopped"}
LEGEND = {
    "could_dma": ("could DMA when the kernel died",
                  [("yes", "driver, enable, Bus Master up to the root and the IOMMU let it"),
                   ("no", "something on the way blocks it (the IOMMU, Bus Master off, powered down)"),
                   ("unknown", "the dump cannot say (no driver: firmware may leave devices mastering)")]),
    "did_dma_after_crash": ("did DMA after the crash",
                            [("yes", "observed: the capture kernel logged IOMMU faults from it"),
                             ("yes, inferred", "completions in its rings that the crashed kernel never processed"),
                             ("no evidence", "every ring processed (or none set up): nothing shows DMA"),
                             ("no", "it could not DMA"),
                             ("unknown", "its rings cannot be read (no decoder, no debug info, lost page)")]),
    "hit_capture_kernel": ("what its DMA did to the capture kernel",
                           [("faulted", "the capture kernel's IOMMU logged faults from it"),
                            ("wrote", "it kept writing through the copied tables while the capture kernel ran "
                                      "(its rings changed after the vmcore was saved), or into the crashkernel "
                                      "reservation"),
                            ("no", "stopped before the capture kernel took over (ring full, port reset), or no "
                                   "fault where uncopied tables would have faulted it"),
                            ("unknown", "nothing shows whether it overlapped (e.g. the tables were copied, so "
                                        "its DMA would leave no fault)"),
                            ("n/a", "no DMA after the crash")]),
    "stopped_by_reset": ("stopped by a port reset in the capture kernel",
                         [("yes", "a secondary bus reset of a port above it, nothing from it afterwards"),
                          ("no", "its DMA after the crash is known and no reset stopped it"),
                          ("unknown", "no capture log, or whether it did DMA is unknown"),
                          ("n/a", "no DMA after the crash to stop")]),
}

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
