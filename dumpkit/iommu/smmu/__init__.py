"""ARM SMMU (v2 and v3). Only its log lines are read so far (:mod:`.log`); no state
reader from memory yet."""

from dumpkit.iommu.backend import Backend
from dumpkit.iommu.smmu.log import SmmuLog

__all__ = ["BACKEND", "VENDOR"]

VENDOR = "arm-smmu"

BACKEND = Backend(name=VENDOR, title="ARM SMMU", detect=None, collect=None, log=SmmuLog,
                  dma_fault_kinds=("arm-smmu-v3:event",), reporters=("smmu",))
