"""Did a port reset in the capture kernel stop the device's DMA: n/a without DMA to stop,
"no" only where DMA after the crash is known."""

from __future__ import annotations

from pathlib import Path

from dumpkit.verdict.claim import Claim, ClaimSpec
from dumpkit.verdict.words import OBSERVED

__all__ = ["SPEC", "STOPPED_NA", "STOPPED_NO", "STOPPED_NO_FULL", "STOPPED_YES", "judge"]

STOPPED_YES = "stopped by a port reset"
STOPPED_NO = "not stopped by a port reset"
STOPPED_NO_FULL = "no port reset; it stopped by itself (ring full)"
STOPPED_NA = "no DMA after the crash to stop"


def judge(ev, d, claims: dict[str, Claim]) -> Claim:
    """From the capture logs' reset lines for the ports above it; they are its sources."""
    stopped = _claim(ev, d, claims["did_dma_after_crash"])
    stopped.sources = list(ev.ctexts)
    return stopped


def _claim(ev, d, did: Claim) -> Claim:
    cap, reset, faults = ev.capture, ev.reset, d.faults
    skipped = [f"{a.bdf}: {ev.not_reset[a.bdf]}" for a in d.ancestors if a.bdf in ev.not_reset]
    if did.value is False:
        return Claim(None, [], applicable=False, phrase=STOPPED_NA)
    if d.ports:
        t_reset = min((reset[p] for p in d.ports if reset[p] is not None), default=None)
        later = [f for f in faults if t_reset is not None and f.time is not None and f.time > t_reset]
        if later:
            return Claim(False, [f"reset via {', '.join(d.ports)} but {len(later)} faults followed"], basis=OBSERVED,
                         phrase=STOPPED_NO)
        return Claim(True, [f"secondary bus reset of {', '.join(d.ports)}" + (", nothing from it afterwards"
                                                                            if faults or cap.logs else "")],
                     basis=OBSERVED, phrase=STOPPED_YES)
    no = STOPPED_NO_FULL if d.full else STOPPED_NO
    if skipped:
        return (Claim(False, ["port not reset: " + "; ".join(skipped)], basis=OBSERVED, phrase=no) if did.value
                else Claim(None, ["port not reset: " + "; ".join(skipped)]))
    if cap.logs:
        # "no" says DMA went on unstopped: only where DMA after the crash is known
        if did.value:
            return Claim(False, ["no reset line for its ports in the capture log"], basis=OBSERVED, phrase=no)
        return Claim(None, ["no reset line for its ports in the capture log",
                            "whether it did DMA after the crash is unknown"])
    if cap.own:
        return Claim(None, [f"the log given ({', '.join(Path(p).name for p in cap.own)}) is the crashed kernel's "
                            "own: it holds nothing of the capture kernel"])
    return Claim(None, ["no capture-kernel log given"])


SPEC = ClaimSpec(
    name="stopped_by_reset", header="stopped", label="stopped by reset", question="stopped by a reset",
    short="stopped by reset", means="stopped by a port reset in the capture kernel",
    words=(("yes", "a secondary bus reset of a port above it, nothing from it afterwards"),
           ("no", "its DMA after the crash is known and no reset stopped it"),
           ("unknown", "no capture log, or whether it did DMA is unknown"),
           ("n/a", "no DMA after the crash to stop")),
    column="stopped_by_reset", judge=judge, fleet_applicable=True)
