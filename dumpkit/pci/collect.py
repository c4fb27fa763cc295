"""Collect the PCI tree as the kernel saw it, with the state that decides whether an
endpoint could do DMA. drgn objects stay in here; callers get plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.device import dev_name
from drgn.helpers.linux.pci import for_each_pci_dev

from dumpkit.errors import AnalysisError
from dumpkit.pci.ids import PciIds, load_pci_ids

__all__ = ["ERROR_STATES", "PCIE_PORT_TYPES", "POWER_STATES", "PciDevice", "PciTree", "collect_pci"]

PCIE_PORT_TYPES = {0: "endpoint", 1: "legacy_endpoint", 4: "root_port", 5: "upstream_port",
                   6: "downstream_port", 7: "pcie_pci_bridge", 8: "pci_pcie_bridge",
                   9: "rc_integrated_endpoint", 10: "rc_event_collector"}
POWER_STATES = {0: "D0", 1: "D1", 2: "D2", 3: "D3hot", 4: "D3cold", 5: "unknown"}
ERROR_STATES = {1: "normal", 2: "frozen", 3: "perm_failure"}
PCI_EXP_DEVCAP_FLR = 1 << 28
PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x2, 0x4


@dataclass
class PciDevice:
    """One PCI function. A field the kernel does not have (or that could not be read)
    is None, with the reason under its name in ``unknown``."""

    bdf: str
    vendor: int
    device: int
    subsystem_vendor: int | None = None
    subsystem_device: int | None = None
    vendor_name: str | None = None
    device_name: str | None = None
    subsystem_name: str | None = None
    class_code: int | None = None
    class_name: str | None = None
    revision: int | None = None
    header_type: int | None = None
    is_bridge: bool = False
    pcie_port_type: str | None = None
    parent: str | None = None
    secondary_bus: int | None = None
    subordinate_bus: int | None = None
    driver: str | None = None
    enable_count: int | None = None
    is_busmaster: bool | None = None
    saved_command: int | None = None
    state_saved: bool | None = None
    upstream_busmaster: bool | None = None
    power_state: str | None = None
    error_state: str | None = None
    block_cfg_access: bool | None = None
    reset_methods: tuple[str, ...] | None = None
    flr_capable: bool | None = None
    msi_enabled: bool | None = None
    msix_enabled: bool | None = None
    iommu_group: int | None = None
    is_vga: bool = False
    could_dma: bool | None = None
    could_dma_reason: str = ""
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def is_endpoint(self) -> bool:
        """Neither a bridge nor the host bridge: a function that issues DMA of its own."""
        return not self.is_bridge and (self.class_code or 0) >> 8 != 0x0600

    @property
    def saved_bus_master(self) -> bool | None:
        """Bus Master in the last saved Command register (trust it only with state_saved)."""
        return None if self.saved_command is None else bool(self.saved_command & PCI_COMMAND_MASTER)


@dataclass
class PciTree:
    """Every PCI function, ordered by domain:bus:dev.fn."""

    devices: list[PciDevice]
    pci_ids: str | None = None
    errors: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)

    def get(self, bdf: str) -> PciDevice | None:
        return next((d for d in self.devices if d.bdf == bdf), None)

    def children(self, bdf: str | None) -> list[PciDevice]:
        """Functions directly below a bridge (None: on a root bus)."""
        return [d for d in self.devices if d.parent == bdf]

    def ancestors(self, bdf: str) -> list[PciDevice]:
        """Bridges above a function, nearest first."""
        out, dev = [], self.get(bdf)
        while dev is not None and dev.parent is not None:
            dev = self.get(dev.parent)
            if dev is not None:
                out.append(dev)
        return out


def _has(obj: drgn.Object, member: str) -> bool:
    """Whether obj (a struct or a pointer to one) has member, in this kernel's types."""
    t = obj.type_
    while t.kind in (drgn.TypeKind.POINTER, drgn.TypeKind.TYPEDEF):
        t = t.type
    try:
        return t.has_member(member)
    except TypeError:
        return False


def _name(dev: drgn.Object) -> str:
    return dev_name(dev.address_of_()).decode()


class _Reader:
    """Reads one pci_dev field by field, recording why a field is unknown."""

    def __init__(self, pdev: drgn.Object):
        self.pdev = pdev
        self.unknown: dict[str, str] = {}

    def get(self, name: str, fn, *members: str):
        for member in members:
            if not _has(self.pdev, member):
                self.unknown[name] = f"struct pci_dev has no member {member} in this kernel"
                return None
        try:
            return fn(self.pdev)
        except (drgn.FaultError, LookupError, ValueError, TypeError, drgn.ObjectAbsentError, AttributeError) as e:
            self.unknown[name] = f"{type(e).__name__}: {e}"
            return None


def _reset_method_names(prog: drgn.Program) -> dict[int, str] | None:
    try:
        table = prog["pci_reset_fn_methods"]
    except KeyError:
        return None
    names = {}
    for i in range(len(table)):
        try:
            name = table[i].name
            names[i] = name.string_().decode() if name else ""
        except drgn.FaultError:
            continue
    return names


def _reset_methods(pdev: drgn.Object, names: dict[int, str] | None) -> tuple[str, ...]:
    if _has(pdev, "reset_methods"):
        if names is None:
            raise LookupError("pci_reset_fn_methods table not found")
        out = []
        for idx in pdev.reset_methods.value_():
            if idx == 0:
                break
            out.append(names.get(idx, f"method_{idx}"))
        return tuple(out)
    # before 5.15 a single bit said whether pci_reset_function() could do anything
    return ("available",) if pdev.reset_fn.value_() else ()


def _driver_name(pdev: drgn.Object) -> str | None:
    drv = pdev.driver if _has(pdev, "driver") else pdev.dev.driver
    if not drv:
        return None
    return drv.name.string_().decode()


def _iommu_group(pdev: drgn.Object) -> int | None:
    group = pdev.dev.iommu_group
    return group.id.value_() if group else None


def _read_device(prog: drgn.Program, pdev: drgn.Object, ids: PciIds, reset_names) -> PciDevice:
    r = _Reader(pdev)
    vendor, device = pdev.vendor.value_(), pdev.device.value_()
    dev = PciDevice(bdf=_name(pdev.dev), vendor=vendor, device=device)
    dev.subsystem_vendor = r.get("subsystem_vendor", lambda p: p.subsystem_vendor.value_(), "subsystem_vendor")
    dev.subsystem_device = r.get("subsystem_device", lambda p: p.subsystem_device.value_(), "subsystem_device")
    dev.class_code = r.get("class_code", lambda p: p.member_("class").value_(), "class")
    dev.revision = r.get("revision", lambda p: p.revision.value_(), "revision")
    dev.header_type = r.get("header_type", lambda p: p.hdr_type.value_(), "hdr_type")
    dev.is_bridge = bool(pdev.subordinate) or dev.header_type in (1, 2)
    if _has(pdev, "pcie_cap") and pdev.pcie_cap.value_():
        dev.pcie_port_type = PCIE_PORT_TYPES.get((pdev.pcie_flags_reg.value_() & 0xF0) >> 4)
    parent = pdev.bus.self
    dev.parent = _name(parent.dev) if parent else None
    if pdev.subordinate:
        dev.secondary_bus = pdev.subordinate.number.value_()
        dev.subordinate_bus = r.get("subordinate_bus", lambda p: p.subordinate.busn_res.end.value_())
    dev.driver = r.get("driver", _driver_name)
    dev.enable_count = r.get("enable_count", lambda p: p.enable_cnt.counter.value_(), "enable_cnt")
    dev.is_busmaster = r.get("is_busmaster", lambda p: bool(p.is_busmaster), "is_busmaster")
    dev.state_saved = r.get("state_saved", lambda p: bool(p.state_saved), "state_saved")
    dev.saved_command = r.get("saved_command", lambda p: p.saved_config_space[1].value_() & 0xFFFF,
                              "saved_config_space")
    dev.power_state = r.get("power_state", lambda p: POWER_STATES.get(p.current_state.value_(),
                                                                      str(p.current_state.value_())),
                            "current_state")
    dev.error_state = r.get("error_state", lambda p: ERROR_STATES.get(p.error_state.value_(),
                                                                      str(p.error_state.value_())),
                            "error_state")
    dev.block_cfg_access = r.get("block_cfg_access", lambda p: bool(p.block_cfg_access), "block_cfg_access")
    if _has(pdev, "reset_methods") or _has(pdev, "reset_fn"):
        dev.reset_methods = r.get("reset_methods", lambda p: _reset_methods(p, reset_names))
    else:
        r.unknown["reset_methods"] = "struct pci_dev has neither reset_methods nor reset_fn"
    dev.flr_capable = r.get("flr_capable", lambda p: bool(p.devcap.value_() & PCI_EXP_DEVCAP_FLR)
                            if p.pcie_cap.value_() else False, "devcap")
    dev.msi_enabled = r.get("msi_enabled", lambda p: bool(p.msi_enabled), "msi_enabled")
    dev.msix_enabled = r.get("msix_enabled", lambda p: bool(p.msix_enabled), "msix_enabled")
    dev.iommu_group = r.get("iommu_group", _iommu_group)
    dev.is_vga = dev.class_code is not None and dev.class_code >> 8 == 0x0300
    dev.vendor_name = ids.vendor(vendor)
    dev.device_name = ids.device(vendor, device)
    if dev.subsystem_vendor is not None and dev.subsystem_device is not None:
        dev.subsystem_name = ids.subsystem(vendor, device, dev.subsystem_vendor, dev.subsystem_device)
    if dev.class_code is not None:
        dev.class_name = ids.class_name(dev.class_code)
    dev.unknown = r.unknown
    return dev


def _judge_dma(tree: PciTree) -> None:
    """Could the function issue DMA when the dump was taken? From the kernel's own view:
    a bound driver, enabled, Bus Master on it and every bridge above, in D0, no error."""
    for dev in tree:
        if dev.is_bridge:
            dev.could_dma, dev.could_dma_reason = None, "bridge"
            continue
        ups = tree.ancestors(dev.bdf)
        dev.upstream_busmaster = (all(a.is_busmaster for a in ups)
                                  if all(a.is_busmaster is not None for a in ups) else None)
        checks = [
            (dev.driver is not None, "no driver bound"),
            ((dev.enable_count or 0) > 0, "not enabled"),
            (bool(dev.is_busmaster), "Bus Master off"),
            (dev.upstream_busmaster is not False, "Bus Master off on a bridge above"),
            (dev.power_state not in ("D1", "D2", "D3hot", "D3cold"), f"in {dev.power_state}"),
            (dev.error_state in (None, "normal"), f"error state {dev.error_state}"),
        ]
        failed = [why for ok, why in checks if not ok]
        if dev.is_busmaster is None or dev.enable_count is None:
            dev.could_dma, dev.could_dma_reason = None, "unknown: Bus Master or enable count unreadable"
        elif failed:
            dev.could_dma, dev.could_dma_reason = False, "; ".join(failed)
        else:
            dev.could_dma, dev.could_dma_reason = True, "driver bound, enabled, Bus Master on up to the root"


def _pci_devs(prog: drgn.Program):
    """for_each_pci_dev, stopped with an error on a loop or an unreadable link instead of
    hanging or leaking a drgn exception."""
    seen = set()
    try:
        for pdev in for_each_pci_dev(prog):
            addr = pdev.value_()
            if addr in seen:
                raise AnalysisError(f"the PCI device list loops back to {addr:#x}: it is corrupted",
                                    "the functions before the loop are listed")
            seen.add(addr)
            yield pdev
    except drgn.FaultError as e:
        raise AnalysisError(f"the PCI device list could not be read past {len(seen)} functions: {e}",
                            "the dump is incomplete or corrupted; a lower makedumpfile -d level keeps more") from None


def collect_pci(prog: drgn.Program, pci_ids: str | None = None) -> PciTree:
    """Every PCI function the kernel knows, as plain data.

    A function whose own fields cannot be read is left out with a line in ``errors``;
    a corrupted device list ends the walk there, also noted in ``errors``.

    :param prog: a kernel program with debug info
    :param pci_ids: path of a pci.ids file; default: the system's, if any
    :return: the tree, ordered by domain:bus:dev.fn
    """
    ids = load_pci_ids(pci_ids)
    reset_names = _reset_method_names(prog)
    devices, errors = [], []
    try:
        for pdev in _pci_devs(prog):
            try:
                devices.append(_read_device(prog, pdev, ids, reset_names))
            except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
                errors.append(f"struct pci_dev at {pdev.value_():#x}: {e}")
    except AnalysisError as e:
        if not devices:
            raise
        errors.append(str(e))
    tree = PciTree(sorted(devices, key=lambda d: d.bdf), ids.path, errors)
    _judge_dma(tree)
    return tree
