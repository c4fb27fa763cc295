"""Collect the PCI tree as the kernel saw it, with the state that decides whether an
endpoint could do DMA and what an engineer expects from lspci, as far as a dump holds it.
drgn objects stay in here; callers get plain dataclasses (rendering: dumpkit.pci.render).

What a dump holds is the kernel's memory, not the devices' config space. So this module
reports what struct pci_dev / struct pci_bus cache and what pci_save_state() saved:

* cached: ids, class, revision, header type, IRQ (pdev->irq) and interrupt pin, the
  resources (BARs, expansion ROM, bridge windows: pdev->resource[]), the PCIe capability
  offset and port type (pcie_cap, pcie_flags_reg), the current and maximum speed of the
  PCIe link (pci_bus.cur_bus_speed / max_bus_speed, updated at enumeration and on link
  events), error_state, the AER capability offset and its error counters (aer_stats),
  Device Capabilities (devcap);
* saved by pci_save_state(): the first 64 bytes of config space (saved_config_space:
  Command, Status, BARs, bus numbers ...), the PCIe control registers (DevCtl, LnkCtl,
  SltCtl, RtCtl and their "2" versions) and the AER masks/severity/control, as of the last
  save (state_saved says whether it has not been restored since);
* not in a dump: the link width, Link Status, Device Status and every other live
  register (see NOT_IN_DUMP).

Kernel layouts are probed once per program (struct members, the resource index enum,
the bus speed enum, the reset method table) and kept in ``prog.cache``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.device import dev_name
from drgn.helpers.linux.list import hlist_for_each_entry
from drgn.helpers.linux.pci import for_each_pci_dev

from dumpkit.errors import AnalysisError
from dumpkit.kernel import iommu_group_id, pci_driver_name
from dumpkit.pci.ids import PciIds, load_pci_ids
from dumpkit.vfio import VfioOwner, is_vfio_driver, vfio_owner

__all__ = ["AER_COR_ERRORS", "AER_UNCOR_ERRORS", "ERROR_STATES", "NOT_IN_DUMP", "PCIE_PORT_TYPES",
           "POWER_STATES", "PciDevice", "PciResource", "PciTree", "collect_pci", "pci_layout"]

PCIE_PORT_TYPES = {0: "endpoint", 1: "legacy_endpoint", 4: "root_port", 5: "upstream_port",
                   6: "downstream_port", 7: "pcie_pci_bridge", 8: "pci_pcie_bridge",
                   9: "rc_integrated_endpoint", 10: "rc_event_collector"}
POWER_STATES = {0: "D0", 1: "D1", 2: "D2", 3: "D3hot", 4: "D3cold", 5: "unknown"}
ERROR_STATES = {1: "normal", 2: "frozen", 3: "perm_failure"}
PCI_EXP_DEVCAP_FLR = 1 << 28
PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x2, 0x4
PCI_CAP_ID_EXP, PCI_EXT_CAP_ID_ERR = 0x10, 0x01

# include/linux/ioport.h
IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_BUS = 0x100, 0x200, 0x1000
IORESOURCE_PREFETCH, IORESOURCE_READONLY, IORESOURCE_MEM_64 = 0x2000, 0x4000, 0x100000
IORESOURCE_DISABLED, IORESOURCE_UNSET = 0x10000000, 0x20000000
IORESOURCE_ROM_ENABLE = 0x1          # bus-specific bit of the ROM resource

# AER error bits (PCIe base spec, Uncorrectable/Correctable Error Status), lspci's names
AER_COR_ERRORS = {0: "RxErr", 6: "BadTLP", 7: "BadDLLP", 8: "Rollover", 12: "Timeout",
                  13: "AdvNonFatalErr", 14: "CorrIntErr", 15: "HeaderOF"}
AER_UNCOR_ERRORS = {0: "Undefined", 4: "DLP", 5: "SDES", 12: "TLP", 13: "FCP", 14: "CmpltTO",
                    15: "CmpltAbrt", 16: "UnxCmplt", 17: "RxOF", 18: "MalfTLP", 19: "ECRC",
                    20: "UnsupReq", 21: "ACSViol", 22: "UncorrIntErr", 23: "BlockedTLP",
                    24: "AtomicOpBlocked", 25: "TLPBlockedErr", 26: "PoisonTLPBlocked"}

# the order pci_save_pcie_state() / pci_save_aer_state() store the registers in
SAVED_PCIE_REGISTERS = ("devctl", "lnkctl", "sltctl", "rtctl", "devctl2", "lnkctl2", "sltctl2")
SAVED_AER_REGISTERS = ("uncor_mask", "uncor_severity", "cor_mask", "cap_control", "root_command")

NOT_IN_DUMP = {
    "link_width": "the negotiated link width is only in the Link Status register (config space); "
                  "the kernel caches the link speed alone (pci_bus.cur_bus_speed)",
    "link_status": "Link Status (training, DL active, bandwidth) lives in config space",
    "device_status": "the PCIe Device Status register lives in config space; the kernel keeps "
                     "error_state and the AER counters (aer_stats) instead",
    "live_command": "the Command/Status registers at the crash are in config space; the dump has "
                    "the kernel's is_busmaster flag and the copy pci_save_state() saved",
    "capabilities": "the capability list itself (and MSI/MSI-X tables) is in config space and "
                    "device memory; the kernel caches only some offsets (pcie_cap, aer_cap, msi_cap, msix_cap)",
}

# when a struct pci_dev member is missing: what changed (kernel version) or what config it needs
MEMBER_NOTES = {
    "reset_methods": "added in v5.15, replacing the reset_fn bit",
    "reset_fn": "replaced by reset_methods in v5.15",
    "devcap": "cached in struct pci_dev since v5.15",
    "aer_cap": "present only with CONFIG_PCIEAER",
    "aer_stats": "present only with CONFIG_PCIEAER, since v4.19; renamed aer_info in v6.17",
    "aer_info": "present only with CONFIG_PCIEAER: aer_stats until v6.17",
}


@dataclass
class PciResource:
    """One entry of pdev->resource[]: a BAR, the expansion ROM, an SR-IOV VF BAR, a bridge
    window, or a region a quirk claimed. Addresses are CPU physical addresses (equal to bus
    addresses on x86); ``size`` is end - start + 1 as the kernel sized it (sizes are not in
    config space)."""

    index: int
    name: str             # "BAR0".."BAR5", "ROM", "VF BAR0".., "window0".., "resource7"
    kind: str             # "bar", "rom", "vf_bar", "window", "other"
    start: int
    end: int
    size: int
    flags: int
    type: str             # "mem", "io", "bus", "other"
    is_64bit: bool
    prefetchable: bool
    unset: bool           # IORESOURCE_UNSET: no address assigned
    disabled: bool        # IORESOURCE_DISABLED, or a ROM whose enable bit was off


@dataclass
class PciDevice:
    """One PCI function. A field the kernel does not have (or that could not be read)
    is None, with the reason under its name in ``unknown``. Fields a dump can never hold
    (link width, live status registers) are listed in NOT_IN_DUMP instead."""

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
    # who drives its DMA when that is not a kernel driver (vfio-pci: a VM or a userspace driver)
    vfio: VfioOwner | None = None
    # lspci-grade view ----------------------------------------------------------------
    pdev_address: int | None = None          # the struct pci_dev * (for drgn / crash)
    primary_bus: int | None = None           # number of the bus the function sits on
    subsystem_vendor_name: str | None = None
    subclass_name: str | None = None
    prog_if_name: str | None = None
    irq: int | None = None                   # pdev->irq (the first MSI vector when MSI is on)
    interrupt_pin: int | None = None         # 1..4 = INTA..INTD, 0 = none
    resources: list[PciResource] = field(default_factory=list)
    pcie_cap: int | None = None              # offset of the PCIe capability, 0 = not PCIe
    pcie_cap_version: int | None = None
    devcap: int | None = None                # PCIe Device Capabilities (cached)
    link_speed: str | None = None            # current speed of this function's link (kernel cache)
    link_max_speed: str | None = None        # Max Link Speed of the downstream port of that link
    aer_cap: int | None = None               # offset of the AER capability, 0 = none
    aer_correctable: int | None = None       # ERR_COR this function sent (aer_stats)
    aer_nonfatal: int | None = None
    aer_fatal: int | None = None
    aer_rootport_correctable: int | None = None   # messages received (root ports / RCECs)
    aer_rootport_nonfatal: int | None = None
    aer_rootport_fatal: int | None = None
    aer_errors: dict[str, int] = field(default_factory=dict)   # non-zero counters per error type
    saved_config: list[int] | None = None    # 16 dwords of the last pci_save_state(), None if never
    saved_status: int | None = None
    saved_pcie: dict[str, int] | None = None  # saved PCIe control registers
    saved_aer: dict[str, int] | None = None   # saved AER masks, severity and control
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def is_endpoint(self) -> bool:
        """Neither a bridge nor the host bridge: a function that issues DMA of its own."""
        return not self.is_bridge and (self.class_code or 0) >> 8 != 0x0600

    @property
    def saved_bus_master(self) -> bool | None:
        """Bus Master in the last saved Command register (trust it only with state_saved)."""
        return None if self.saved_command is None else bool(self.saved_command & PCI_COMMAND_MASTER)

    @property
    def domain(self) -> int:
        return int(self.bdf.split(":")[0], 16)

    @property
    def bus(self) -> int:
        return int(self.bdf.split(":")[1], 16)

    @property
    def slot(self) -> int:
        return int(self.bdf.split(":")[2].split(".")[0], 16)

    @property
    def function(self) -> int:
        return int(self.bdf.rsplit(".", 1)[1], 16)

    @property
    def bars(self) -> list[PciResource]:
        """The standard BARs (0-5) the kernel knows, in index order."""
        return [r for r in self.resources if r.kind == "bar"]

    @property
    def rom(self) -> PciResource | None:
        return next((r for r in self.resources if r.kind == "rom"), None)

    @property
    def windows(self) -> list[PciResource]:
        """A bridge's forwarding windows (I/O, memory, prefetchable memory)."""
        return [r for r in self.resources if r.kind == "window"]


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

    def root_buses(self) -> dict[tuple[int, int], list[PciDevice]]:
        """Functions on root buses (no bridge above), by (domain, bus), in order."""
        out: dict[tuple[int, int], list[PciDevice]] = {}
        for d in self.devices:
            if d.parent is None:
                out.setdefault((d.domain, d.bus), []).append(d)
        return dict(sorted(out.items()))

    def ancestors(self, bdf: str) -> list[PciDevice]:
        """Bridges above a function, nearest first."""
        out, dev = [], self.get(bdf)
        while dev is not None and dev.parent is not None:
            dev = self.get(dev.parent)
            if dev is not None:
                out.append(dev)
        return out


# --- kernel layout, probed once per program -------------------------------------------------

LAYOUT_CACHE_KEY = "dumpkit.pci.layout"


def _speed_name(enumerator: str) -> str | None:
    """pci_speed_string()'s text for an enum pci_bus_speed enumerator name."""
    if m := re.fullmatch(r"PCIE_SPEED_(\d+)_(\d+)GT", enumerator):
        return f"{m.group(1)}.{m.group(2)} GT/s PCIe"
    if m := re.fullmatch(r"PCI_SPEED_(\d+)MHz", enumerator):
        return f"{m.group(1)} MHz PCI"
    if m := re.fullmatch(r"PCI_SPEED_(\d+)MHz_PCIX(?:_(\w+))?", enumerator):
        return f"{m.group(1)} MHz PCI-X" + (f" {m.group(2)}" if m.group(2) else "")
    if m := re.fullmatch(r"AGP_(\d+)X", enumerator):
        return f"{m.group(1)}x AGP"
    if enumerator == "AGP_UNKNOWN":
        return "Unknown AGP"
    return None                                    # PCI_SPEED_UNKNOWN


class PciLayout:
    """What this kernel's PCI structures look like (probed once, kept in prog.cache)."""

    def __init__(self, prog: drgn.Program):
        self.pci_dev = prog.type("struct pci_dev")
        self._has: dict[str, bool] = {}
        self.reset_names = _reset_method_names(prog)
        try:
            self.bus_speeds = {e.value: _speed_name(e.name) for e in prog.type("enum pci_bus_speed").enumerators}
        except LookupError:
            self.bus_speeds = None
        try:
            self.n_resources = self.pci_dev.member("resource").type.length or 0
        except (LookupError, TypeError):
            self.n_resources = 0

        def enum(name: str) -> int | None:
            try:
                return prog[name].value_()
            except (KeyError, LookupError):
                return None

        self.rom_index = enum("PCI_ROM_RESOURCE") or 6
        self.iov_range = (enum("PCI_IOV_RESOURCES"), enum("PCI_IOV_RESOURCE_END"))
        # PCI_BRIDGE_RESOURCE_NUM (4) windows end the array in every kernel
        self.bridge_index = enum("PCI_BRIDGE_RESOURCES") or max(self.n_resources - 4, self.rom_index + 1)

    @property
    def aer_counters(self) -> str | None:
        """The member holding the AER error counters: ``aer_stats`` (v4.19) became
        ``aer_info`` in v6.17, when the AER log rate limits were added to it; None
        without CONFIG_PCIEAER."""
        return next((m for m in ("aer_info", "aer_stats") if self.has(m)), None)

    def has(self, path: str) -> bool:
        """Whether struct pci_dev has a member path ("aer_stats", "dev.iommu_group")."""
        if path not in self._has:
            t, ok = self.pci_dev, True
            for part in path.split("."):
                while t.kind in (drgn.TypeKind.POINTER, drgn.TypeKind.TYPEDEF):
                    t = t.type
                try:
                    if not t.has_member(part):
                        ok = False
                        break
                    t = t.member(part).type
                except (TypeError, LookupError):
                    ok = False
                    break
            self._has[path] = ok
        return self._has[path]

    def resource_kind(self, index: int, is_bridge: bool) -> tuple[str, str]:
        """(kind, name) of pdev->resource[index]."""
        if index < 6:
            return "bar", f"BAR{index}"
        if index == self.rom_index:
            return "rom", "ROM"
        lo, hi = self.iov_range
        if lo is not None and hi is not None and lo <= index <= hi:
            return "vf_bar", f"VF BAR{index - lo}"
        if index >= self.bridge_index and is_bridge:
            return "window", f"window{index - self.bridge_index}"
        return "other", f"resource{index}"


def pci_layout(prog: drgn.Program) -> PciLayout:
    """The probed layout of this program's PCI structures (cached in prog.cache)."""
    layout = prog.cache.get(LAYOUT_CACHE_KEY)
    if layout is None:
        layout = prog.cache[LAYOUT_CACHE_KEY] = PciLayout(prog)
    return layout


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


# --- per-device reads ----------------------------------------------------------------------

def _name(dev: drgn.Object) -> str:
    return dev_name(dev.address_of_()).decode()


def _missing(member: str) -> str:
    note = MEMBER_NOTES.get(member.split(".")[0])
    return f"struct pci_dev has no member {member} in this kernel" + (f" ({note})" if note else "")


class _Reader:
    """Reads one pci_dev field by field, recording why a field is unknown."""

    def __init__(self, pdev: drgn.Object, layout: PciLayout):
        self.pdev = pdev
        self.layout = layout
        self.unknown: dict[str, str] = {}

    def get(self, name: str, fn, *members: str):
        for member in members:
            if not self.layout.has(member):
                self.unknown[name] = _missing(member)
                return None
        try:
            return fn(self.pdev)
        except (drgn.FaultError, LookupError, ValueError, TypeError, drgn.ObjectAbsentError, AttributeError) as e:
            self.unknown[name] = f"{type(e).__name__}: {e}"
            return None


def _reset_methods(pdev: drgn.Object, layout: PciLayout) -> tuple[str, ...]:
    if layout.has("reset_methods"):
        if layout.reset_names is None:
            raise LookupError("pci_reset_fn_methods table not found")
        out = []
        for idx in pdev.reset_methods.value_():
            if idx == 0:
                break
            out.append(layout.reset_names.get(idx, f"method_{idx}"))
        return tuple(out)
    # before 5.15 a single bit said whether pci_reset_function() could do anything
    return ("available",) if pdev.reset_fn.value_() else ()


def _driver_name(pdev: drgn.Object, layout: PciLayout) -> str | None:
    return pci_driver_name(pdev)


def _iommu_group(pdev: drgn.Object) -> int | None:
    return iommu_group_id(pdev.dev)


def _resources(pdev: drgn.Object, layout: PciLayout, is_bridge: bool) -> list[PciResource]:
    out = []
    res = pdev.resource
    for i in range(layout.n_resources):
        r = res[i]
        flags = r.flags.value_()
        if not flags:
            continue                      # the kernel clears the flags of absent BARs
        start, end = r.start.value_(), r.end.value_()
        kind, name = layout.resource_kind(i, is_bridge)
        rtype = ("io" if flags & IORESOURCE_IO and not flags & IORESOURCE_MEM else
                 "mem" if flags & IORESOURCE_MEM and not flags & IORESOURCE_IO else
                 "bus" if flags & IORESOURCE_BUS else "other")
        disabled = bool(flags & IORESOURCE_DISABLED) or (kind == "rom" and not flags & IORESOURCE_ROM_ENABLE)
        out.append(PciResource(index=i, name=name, kind=kind, start=start, end=end,
                               size=end - start + 1 if end >= start else 0, flags=flags, type=rtype,
                               is_64bit=bool(flags & IORESOURCE_MEM_64),
                               prefetchable=bool(flags & IORESOURCE_PREFETCH),
                               unset=bool(flags & IORESOURCE_UNSET), disabled=disabled))
    return out


def _link_bus(pdev: drgn.Object, port_type: str | None) -> drgn.Object | None:
    """The pci_bus whose cached speed is this function's link: the secondary bus of a
    downstream-facing port (root or switch downstream port, whose Link registers describe
    the link below it), else the bus the function sits on, if a bridge leads to it."""
    if port_type in ("root_port", "downstream_port"):
        return pdev.subordinate if pdev.subordinate else None
    return pdev.bus if pdev.bus.self else None


def _speed(layout: PciLayout, value: int) -> str | None:
    if layout.bus_speeds is None:
        raise LookupError("enum pci_bus_speed not in the debug info")
    return layout.bus_speeds.get(value)


def _aer(pdev: drgn.Object, dev: PciDevice, r: _Reader) -> None:
    member = r.layout.aer_counters
    if member is None:
        r.unknown["aer_correctable"] = _missing("aer_stats")
        return
    try:
        stats = getattr(pdev, member)
        if not stats:
            return                         # no AER capability, or AER not managed by the OS
        dev.aer_correctable = stats.dev_total_cor_errs.value_()
        dev.aer_nonfatal = stats.dev_total_nonfatal_errs.value_()
        dev.aer_fatal = stats.dev_total_fatal_errs.value_()
        if dev.pcie_port_type in ("root_port", "rc_event_collector"):
            dev.aer_rootport_correctable = stats.rootport_total_cor_errs.value_()
            dev.aer_rootport_nonfatal = stats.rootport_total_nonfatal_errs.value_()
            dev.aer_rootport_fatal = stats.rootport_total_fatal_errs.value_()
        for member, prefix, names in (("dev_cor_errs", "correctable", AER_COR_ERRORS),
                                      ("dev_nonfatal_errs", "nonfatal", AER_UNCOR_ERRORS),
                                      ("dev_fatal_errs", "fatal", AER_UNCOR_ERRORS)):
            for bit, count in enumerate(getattr(stats, member).value_()):
                if count:
                    dev.aer_errors[f"{prefix}.{names.get(bit, f'bit{bit}')}"] = count
    except (drgn.FaultError, LookupError, AttributeError) as e:
        r.unknown["aer_correctable"] = f"{member} unreadable: {type(e).__name__}: {e}"


def _saved_caps(pdev: drgn.Object, dev: PciDevice, r: _Reader) -> None:
    """The PCIe and AER registers pci_save_state() stored in pdev->saved_cap_space."""
    if not r.layout.has("saved_cap_space"):
        r.unknown["saved_pcie"] = _missing("saved_cap_space")
        return
    prog = pdev.prog_
    try:
        head = pdev.saved_cap_space.address_of_()
        for state in hlist_for_each_entry("struct pci_cap_saved_state", head, "next"):
            cap = state.cap
            nr, ext, size = cap.cap_nr.value_(), bool(cap.cap_extended), cap.size.value_()
            if size > 4096:
                raise ValueError(f"saved capability size {size}")
            raw = prog.read(cap.data.address_, size)
            if not ext and nr == PCI_CAP_ID_EXP:
                words = [int.from_bytes(raw[i:i + 2], "little") for i in range(0, size - 1, 2)]
                dev.saved_pcie = dict(zip(SAVED_PCIE_REGISTERS, words, strict=False))
            elif ext and nr == PCI_EXT_CAP_ID_ERR:
                dwords = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, size - 3, 4)]
                dev.saved_aer = dict(zip(SAVED_AER_REGISTERS, dwords, strict=False))
    except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
        r.unknown["saved_pcie"] = f"saved capability list unreadable: {type(e).__name__}: {e}"


def _read_device(pdev: drgn.Object, ids: PciIds, layout: PciLayout) -> PciDevice:
    r = _Reader(pdev, layout)
    vendor, device = pdev.vendor.value_(), pdev.device.value_()
    dev = PciDevice(bdf=_name(pdev.dev), vendor=vendor, device=device, pdev_address=pdev.value_())
    dev.subsystem_vendor = r.get("subsystem_vendor", lambda p: p.subsystem_vendor.value_(), "subsystem_vendor")
    dev.subsystem_device = r.get("subsystem_device", lambda p: p.subsystem_device.value_(), "subsystem_device")
    dev.class_code = r.get("class_code", lambda p: p.member_("class").value_(), "class")
    dev.revision = r.get("revision", lambda p: p.revision.value_(), "revision")
    dev.header_type = r.get("header_type", lambda p: p.hdr_type.value_(), "hdr_type")
    dev.is_bridge = bool(pdev.subordinate) or dev.header_type in (1, 2)
    dev.pcie_cap = r.get("pcie_cap", lambda p: p.pcie_cap.value_(), "pcie_cap")
    if dev.pcie_cap:
        flags = r.get("pcie_port_type", lambda p: p.pcie_flags_reg.value_(), "pcie_flags_reg")
        if flags is not None:
            dev.pcie_port_type = PCIE_PORT_TYPES.get((flags & 0xF0) >> 4)
            dev.pcie_cap_version = flags & 0xF
        dev.devcap = r.get("devcap", lambda p: p.devcap.value_(), "devcap")
    dev.primary_bus = pdev.bus.number.value_()
    parent = pdev.bus.self
    dev.parent = _name(parent.dev) if parent else None
    if pdev.subordinate:
        dev.secondary_bus = pdev.subordinate.number.value_()
        dev.subordinate_bus = r.get("subordinate_bus", lambda p: p.subordinate.busn_res.end.value_())
    dev.driver = r.get("driver", lambda p: _driver_name(p, layout))
    if is_vfio_driver(dev.driver):
        dev.vfio = vfio_owner(pdev, dev.bdf, dev.driver)
    dev.enable_count = r.get("enable_count", lambda p: p.enable_cnt.counter.value_(), "enable_cnt")
    dev.is_busmaster = r.get("is_busmaster", lambda p: bool(p.is_busmaster), "is_busmaster")
    dev.state_saved = r.get("state_saved", lambda p: bool(p.state_saved), "state_saved")
    saved = r.get("saved_config", lambda p: [int(x) for x in p.saved_config_space.value_()], "saved_config_space")
    if saved is not None:
        dev.saved_command = saved[1] & 0xFFFF
        if saved[0]:                       # dword 0 (the ids) is zero until the first save
            dev.saved_config, dev.saved_status = saved, saved[1] >> 16
            _saved_caps(pdev, dev, r)
    else:
        r.unknown["saved_command"] = r.unknown["saved_config"]
    dev.power_state = r.get("power_state", lambda p: POWER_STATES.get(p.current_state.value_(),
                                                                      str(p.current_state.value_())),
                            "current_state")
    dev.error_state = r.get("error_state", lambda p: ERROR_STATES.get(p.error_state.value_(),
                                                                      str(p.error_state.value_())),
                            "error_state")
    dev.block_cfg_access = r.get("block_cfg_access", lambda p: bool(p.block_cfg_access), "block_cfg_access")
    if layout.has("reset_methods") or layout.has("reset_fn"):
        dev.reset_methods = r.get("reset_methods", lambda p: _reset_methods(p, layout))
    else:
        r.unknown["reset_methods"] = "struct pci_dev has neither reset_methods nor reset_fn"
    dev.flr_capable = r.get("flr_capable", lambda p: bool(p.devcap.value_() & PCI_EXP_DEVCAP_FLR)
                            if p.pcie_cap.value_() else False, "devcap")
    dev.msi_enabled = r.get("msi_enabled", lambda p: bool(p.msi_enabled), "msi_enabled")
    dev.msix_enabled = r.get("msix_enabled", lambda p: bool(p.msix_enabled), "msix_enabled")
    dev.iommu_group = r.get("iommu_group", _iommu_group, "dev.iommu_group")
    dev.irq = r.get("irq", lambda p: p.irq.value_(), "irq")
    dev.interrupt_pin = r.get("interrupt_pin", lambda p: p.pin.value_(), "pin")
    dev.resources = r.get("resources", lambda p: _resources(p, layout, dev.is_bridge), "resource") or []
    if dev.pcie_cap:
        bus = r.get("link_speed", lambda p: _link_bus(p, dev.pcie_port_type))
        if bus is not None:
            dev.link_speed = r.get("link_speed", lambda _p: _speed(layout, bus.cur_bus_speed.value_()))
            dev.link_max_speed = r.get("link_max_speed", lambda _p: _speed(layout, bus.max_bus_speed.value_()))
            if dev.link_speed is None and "link_speed" not in r.unknown:
                r.unknown["link_speed"] = ("the kernel's cache says PCI_SPEED_UNKNOWN (link down, or not "
                                           "read since enumeration)")
    dev.aer_cap = r.get("aer_cap", lambda p: p.aer_cap.value_(), "aer_cap")
    if dev.aer_cap:
        _aer(pdev, dev, r)
    dev.is_vga = dev.class_code is not None and dev.class_code >> 8 == 0x0300
    _names(dev, ids)
    dev.unknown = r.unknown
    return dev


def _names(dev: PciDevice, ids: PciIds) -> None:
    dev.vendor_name = ids.vendor(dev.vendor)
    dev.device_name = ids.device(dev.vendor, dev.device)
    if dev.subsystem_vendor is not None and dev.subsystem_device is not None:
        dev.subsystem_vendor_name = ids.vendor(dev.subsystem_vendor)
        dev.subsystem_name = ids.subsystem(dev.vendor, dev.device, dev.subsystem_vendor, dev.subsystem_device)
    if dev.class_code is not None:
        base, sub, prog_if = dev.class_code >> 16, (dev.class_code >> 8) & 0xFF, dev.class_code & 0xFF
        dev.class_name = ids.class_name(dev.class_code)
        dev.subclass_name = ids.subclass(base, sub)
        dev.prog_if_name = ids.prog_if(base, sub, prog_if)


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
            ("driver", dev.driver is not None, "no driver bound"),
            ("enabled", (dev.enable_count or 0) > 0, "not enabled"),
            ("busmaster", bool(dev.is_busmaster), "Bus Master off"),
            ("upstream", dev.upstream_busmaster is not False, "Bus Master off on a bridge above"),
            ("power", dev.power_state not in ("D1", "D2", "D3hot", "D3cold"), f"in {dev.power_state}"),
            ("error", dev.error_state in (None, "normal"), f"error state {dev.error_state}"),
        ]
        failed = [why for _key, ok, why in checks if not ok]
        if dev.vfio is not None:
            # its own enable count and Bus Master flag are not the device's state (see
            # _vfio_could_dma); the bridges above, its power and error state still are
            blocking = [why for key, ok, why in checks if not ok and key not in ("enabled", "busmaster")]
            dev.could_dma, dev.could_dma_reason = _vfio_could_dma(dev, blocking)
        elif "driver" in dev.unknown:
            dev.could_dma, dev.could_dma_reason = None, f"unknown: its driver is unreadable ({dev.unknown['driver']})"
        elif dev.is_busmaster is None or dev.enable_count is None:
            dev.could_dma, dev.could_dma_reason = None, "unknown: Bus Master or enable count unreadable"
        elif failed:
            dev.could_dma, dev.could_dma_reason = False, "; ".join(failed)
        else:
            dev.could_dma, dev.could_dma_reason = True, "driver bound, enabled, Bus Master on up to the root"


def _vfio_could_dma(dev: PciDevice, blocking: list[str]) -> tuple[bool | None, str]:
    """A VFIO-owned function: the kernel's Bus Master flag says nothing (vfio-pci passes
    the owner's Command-register writes to the device and never sets ``is_busmaster``),
    so it is judged by whether anyone has it open and what it was given to write;
    ``blocking`` are the reasons that still hold (a bridge above, power, error state)."""
    owner = dev.vfio
    no_bm = ("the kernel keeps no Bus Master state for a VFIO-owned function (vfio-pci passes the owner's "
             "Command-register writes to the device)")
    if blocking:
        return False, "; ".join(blocking)
    if owner.is_open is False:
        return False, (f"bound to {owner.driver}, not open: vfio-pci clears Bus Master and resets the function "
                       "when its last user closes it")
    if owner.is_open is None:
        why = owner.unknown.get("vfio") or owner.unknown.get("open_count") or "its VFIO state is unreadable"
        return None, f"unknown: bound to {owner.driver}, whether it is open is unknown ({why}); {no_bm}"
    if owner.group_type == "no-iommu":
        return True, (f"assigned to {owner.owner_text} in VFIO no-IOMMU mode: its DMA is not translated; {no_bm}")
    return True, f"assigned to {owner.owner_text} through {owner.driver} (open); {no_bm}"


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
    layout = pci_layout(prog)
    devices, errors = [], []
    try:
        for pdev in _pci_devs(prog):
            try:
                devices.append(_read_device(pdev, ids, layout))
            except (drgn.FaultError, LookupError, ValueError, AttributeError) as e:
                errors.append(f"struct pci_dev at {pdev.value_():#x}: {e}")
    except AnalysisError as e:
        if not devices:
            raise
        errors.append(str(e))
    tree = PciTree(sorted(devices, key=lambda d: d.bdf), ids.path, errors)
    _judge_dma(tree)
    return tree
