"""IOMMU state read from a kernel's memory, vendor-neutral (:mod:`dumpkit.iommu.model`),
with one backend per vendor: ``vtd`` (Intel VT-d) and ``amd`` (AMD-Vi)."""
