"""Render a collected PCI tree (pciutils style: collection in collect.py, rendering here).

* ``tree_text``: the shape of ``lspci -tv`` (same tree drawing, bus ranges and dev.fn),
  each line's last function marked with its full BDF, driver and DMA-relevant flags;
* ``detail_text`` / ``device_text``: a per-function block like ``lspci -vv``, limited to
  what the dump holds (cached kernel state and the last saved config space);
* ``to_records`` / ``to_json``: plain data, numbers kept, hex strings added (``vendor`` and
  ``vendor_hex``);
* ``to_frame`` / ``resources_frame``: pandas DataFrames (pandas imported on call);
* ``plot_tree``: a matplotlib picture (matplotlib imported on call).

Nothing here imports pandas or matplotlib at module level.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from dumpkit.palette import BRIDGE, DMA_STYLES, NOT_JUDGED, RESET_RING, Style, dma_style, legend_handles
from dumpkit.pci.collect import (AER_COR_ERRORS, AER_UNCOR_ERRORS, NOT_IN_DUMP, PciDevice, PciResource,
                                 PciTree)

__all__ = ["DMA_COLOURS", "HEX_FIELDS", "NAMES", "NAMES_AND_NUMBERS", "NUMBERS", "TreeLayout", "TreeRow",
           "class_text", "detail_text", "device_label", "device_text", "dma_flags", "has_subsystem", "id_text",
           "kernel_lines", "lspci_name", "plot_tree", "resources_frame", "show_domains", "slot_text",
           "subsystem_text", "terse_text", "to_frame", "to_json", "to_records", "tree_figsize", "tree_label",
           "tree_layout", "tree_text"]

DMA_COLOURS = {k: v.face for k, v in DMA_STYLES.items()}   # the shared palette's fills (dumpkit.palette)

# field -> hex digits of its "<field>_hex" string in JSON and frames
HEX_FIELDS = {"vendor": 4, "device": 4, "subsystem_vendor": 4, "subsystem_device": 4, "class_code": 6,
              "revision": 2, "header_type": 2, "saved_command": 4, "saved_status": 4, "pdev_address": 16,
              "pcie_cap": 2, "aer_cap": 3, "devcap": 8}


def device_label(dev: PciDevice, width: int | None = 48) -> str:
    """Short human name for pictures: device name, else class name, else the ids; cut to
    ``width`` characters (None: never cut)."""
    name = dev.device_name or dev.class_name or f"{dev.vendor:04x}:{dev.device:04x}"
    if dev.vendor_name and dev.device_name:
        vendor = dev.vendor_name.split(",")[0]
        for suffix in (" Corporation", " Corp.", " Inc.", " Incorporated", " Ltd."):
            vendor = vendor.removesuffix(suffix)
        name = f"{vendor} {dev.device_name}"
    return name if width is None or len(name) <= width else name[:width - 1] + "…"


def lspci_name(dev: PciDevice, numbers: bool = False) -> str:
    """Vendor and device name as lspci prints them ("Intel Corporation 82574L ...",
    "Intel Corporation Device 10d3", "Device 1234:1111"); with ``numbers`` the ids follow
    in brackets as with ``lspci -nn``. Never cut."""
    ids = f"{dev.vendor:04x}:{dev.device:04x}"
    v, d = dev.vendor_name, dev.device_name
    if numbers:
        return f"{v} {d} [{ids}]" if v and d else f"{v} Device [{ids}]" if v else f"Device [{ids}]"
    return f"{v} {d}" if v and d else f"{v} Device {dev.device:04x}" if v else f"Device {ids}"


# lspci's -n count: names only, numbers only (-n), names and numbers (-nn)
NAMES, NUMBERS, NAMES_AND_NUMBERS = 0, 1, 2


def id_text(dev: PciDevice, numeric: int = NAMES) -> str:
    """Vendor and device as lspci prints them with ``numeric`` -n's: 0 names
    (:func:`lspci_name`), 1 ``8086:10d3``, 2 or more names and ``[8086:10d3]``."""
    if numeric == NUMBERS:
        return f"{dev.vendor:04x}:{dev.device:04x}"
    return lspci_name(dev, numbers=numeric >= NAMES_AND_NUMBERS)


def class_text(dev: PciDevice, numeric: int = NAMES) -> str:
    """The class as lspci prints it: the subclass name ("Ethernet controller"), the base
    class's name with the number when the subclass has none ("Bridge [0680]"), "Class
    0680" when neither is known; ``numeric`` as in :func:`id_text`."""
    if dev.class_code is None:
        return "Class [????]" if numeric else "Class ????"
    cls = dev.class_code >> 8
    if numeric == NUMBERS:
        return f"{cls:04x}"
    if dev.subclass_name:
        return f"{dev.subclass_name} [{cls:04x}]" if numeric else dev.subclass_name
    if dev.class_name:                       # the base class alone: lspci adds the number
        return f"{dev.class_name} [{cls:04x}]"
    return f"Class [{cls:04x}]" if numeric else f"Class {cls:04x}"


def subsystem_text(dev: PciDevice, numeric: int = NAMES_AND_NUMBERS) -> str:
    """The Subsystem line's text as lspci prints it; ``numeric`` as in :func:`id_text`."""
    num = f"{dev.subsystem_vendor:04x}:{dev.subsystem_device:04x}"
    if numeric == NUMBERS:
        return num
    v, d = dev.subsystem_vendor_name, dev.subsystem_name
    if numeric >= NAMES_AND_NUMBERS:
        return f"{v} {d} [{num}]" if v and d else f"{v} Device [{num}]" if v else f"Device [{num}]"
    return f"{v} {d}" if v and d else f"{v} Device {dev.subsystem_device:04x}" if v else f"Device {num}"


def has_subsystem(dev: PciDevice) -> bool:
    """lspci prints a Subsystem line when the subsystem vendor is neither 0 nor ffff."""
    return dev.subsystem_vendor not in (None, 0, 0xFFFF) and dev.subsystem_device is not None


def slot_text(dev: PciDevice, domains: bool) -> str:
    """lspci's slot name: ``02:00.0``, or ``0000:02:00.0`` with ``domains``."""
    return dev.bdf if domains else dev.bdf[5:]


def show_domains(tree: PciTree) -> bool:
    """lspci shows domains when some function of the machine is outside domain 0."""
    return any(d.domain for d in tree)


def kernel_lines(dev: PciDevice, modules: Iterable[str] = ()) -> list[str]:
    """``lspci -k``'s lines: the driver bound, the modules that could drive it."""
    out = [f"\tKernel driver in use: {dev.driver}"] if dev.driver else []
    names = list(modules)
    if names:
        out.append("\tKernel modules: " + ", ".join(names))
    return out


def terse_text(tree: PciTree, devices: Iterable[PciDevice] | None = None, *, numeric: int = NAMES,
               kernel: bool = False, modules: Mapping[str, Iterable[str]] | None = None,
               domains: bool | None = None) -> str:
    """One line per function as plain ``lspci`` prints it (``02:00.0 Ethernet controller:
    Intel Corporation 82574L Gigabit Network Connection``), names and numbers by
    ``numeric`` (-n, -nn). With ``kernel`` (-k) the Subsystem line and the driver and
    module lines follow each function. ``devices`` (default: all) are the selected
    functions; ``domains`` (default: as lspci, when any function is outside domain 0)
    puts the domain in the slot."""
    domains = show_domains(tree) if domains is None else domains
    lines = []
    for dev in tree if devices is None else devices:
        rev = f" (rev {dev.revision:02x})" if dev.revision else ""
        lines.append(f"{slot_text(dev, domains)} {class_text(dev, numeric)}: {id_text(dev, numeric)}{rev}")
        if kernel:
            if has_subsystem(dev):
                lines.append(f"\tSubsystem: {subsystem_text(dev, numeric)}")
            lines += kernel_lines(dev, (modules or {}).get(dev.bdf, ()))
    lines += [f"!! {err}" for err in tree.errors]
    return "\n".join(lines)


def dma_flags(dev: PciDevice) -> str:
    """DMA-relevant flags: DMA = could DMA at crash, BM = Bus Master (kernel flag),
    BM-off-above, a low-power state, ERR:<error_state>, IN-RESET (config access blocked)."""
    flags = []
    if dev.could_dma:
        flags.append("DMA")
    if dev.vfio is not None:
        flags.append("VFIO")
    if dev.is_busmaster:
        flags.append("BM")
    if dev.upstream_busmaster is False:
        flags.append("BM-off-above")
    if dev.power_state not in (None, "D0", "unknown"):
        flags.append(dev.power_state)
    if dev.error_state not in (None, "normal"):
        flags.append(f"ERR:{dev.error_state}")
    if dev.block_cfg_access:
        flags.append("IN-RESET")
    if dev.is_vga:
        flags.append("VGA")
    return " ".join(flags)


_flags = dma_flags   # the name earlier code used


# --- lspci -tv ---------------------------------------------------------------------------

def _bus_range(dev: PciDevice) -> str:
    sec, sub = dev.secondary_bus, dev.subordinate_bus
    if sec is None and dev.saved_config is not None and dev.header_type == 1:
        sec, sub = (dev.saved_config[6] >> 8) & 0xFF, (dev.saved_config[6] >> 16) & 0xFF
    if sec is None:
        return "-[??]-"
    if sub is None or sub == sec:
        return f"-[{sec:02x}]-"
    return f"-[{sec:02x}-{sub:02x}]-"


def tree_text(tree: PciTree, *, names: bool = True, marks: bool = True,
              select: Callable[[PciDevice], bool] | None = None, numeric: int = NAMES) -> str:
    """The tree in the shape of ``lspci -tv``: root buses as ``-[dddd:bb]-``, bridges with
    their bus range ``-[ss-uu]-``, ``+-``/``\\-`` branches and ``|`` continuations, dev.fn
    per function, the vendor and device name after each leaf (``names``).

    With ``marks`` (the default) the function that ends a line is followed by
    ``[<full BDF> <driver>]`` and its DMA flags in ``<...>`` (``<DMA BM>``: could DMA at
    crash, Bus Master on). ``marks=False, names=True`` is plain ``lspci -tv``;
    ``numeric`` gives the ids instead of the names (-n) or both (-nn), as :func:`id_text`.

    With ``select`` (``lspci -t -s/-d``) only the functions it selects are drawn, with the
    bridges above them and everything below them; nothing at all when it selects none.
    Functions that could not be read are listed as ``!!`` lines at the end.

    Longer than most functions here on purpose: its nested helpers share one line buffer
    and one cache of selected bridges, as pciutils' ``ls-tree.c`` shares its globals.
    """
    lines: list[str] = []
    buf: list[str] = []

    def write(pos: int, text: str) -> int:
        del buf[pos:]
        buf.extend(text)
        return pos + len(text)

    def print_it(pos: int, dev: PciDevice | None, name: str = "") -> None:
        line = "".join(buf[:pos]) + name
        if marks and dev is not None:
            line += f"  [{dev.bdf}" + (f" {dev.driver}]" if dev.driver else "]")
            flags = dma_flags(dev)
            if flags:
                line += f"  <{flags}>"
        lines.append(line)
        buf[:] = ["|" if c in "+|" else " " for c in buf[:pos]]

    shown: dict[str, bool] = {}

    def wanted(dev: PciDevice, filt: Callable[[PciDevice], bool] | None) -> bool:
        """lspci's check_dev_filter: selected, or a bridge with a selected function below."""
        if filt is None:
            return True
        if dev.bdf not in shown:
            shown[dev.bdf] = filt(dev) or (dev.is_bridge and any(wanted(k, filt) for k in tree.children(dev.bdf)))
        return shown[dev.bdf]

    def show_dev(dev: PciDevice, pos: int, filt: Callable[[PciDevice], bool] | None) -> None:
        pos = write(pos, f"{dev.slot:02x}.{dev.function:x}")
        if filt is not None and filt(dev):
            filt = None                    # below a selected function everything is shown
        if dev.is_bridge:
            pos = write(pos, _bus_range(dev))
            pos = write(pos, "-")
            show_bus(tree.children(dev.bdf), pos, dev, filt)
            return
        print_it(pos, dev, f"  {id_text(dev, numeric)}" if names else "")

    def show_bus(devs: list[PciDevice], pos: int, bridge: PciDevice | None,
                 filt: Callable[[PciDevice], bool] | None) -> None:
        devs = [d for d in devs if wanted(d, filt)]
        if not devs:
            print_it(pos, bridge)
        elif len(devs) == 1:
            show_dev(devs[0], write(pos, "--"), filt)
        else:
            for i, dev in enumerate(devs):
                write(pos, "\\-" if i == len(devs) - 1 else "+-")
                show_dev(dev, pos + 2, filt)

    roots = tree.root_buses()
    if select is not None:
        roots = {k: v for k, v in roots.items() if any(wanted(d, select) for d in v)}
        if not roots:
            return "\n".join(f"!! {err}" for err in tree.errors)
    # pciutils lists the host bridge's buses newest first: 0000:00 was made first
    keys = ([(0, 0)] if (0, 0) in roots or select is None else []) + [k for k in roots if k != (0, 0)]
    keys.reverse()
    pos = write(0, "-")
    if len(keys) == 1:
        domain, bus = keys[0]
        show_bus(roots.get(keys[0], []), write(pos, f"[{domain:04x}:{bus:02x}]-"), None, select)
    else:
        for i, (domain, bus) in enumerate(keys):
            lead = "\\-" if i == len(keys) - 1 else "+-"
            show_bus(roots.get((domain, bus), []), write(pos, f"{lead}[{domain:04x}:{bus:02x}]-"), None, select)
    lines += [f"!! {err}" for err in tree.errors]
    return "\n".join(lines)


# --- lspci -vv -----------------------------------------------------------------------------

def _size(n: int) -> str:
    """lspci's [size=...]: the largest unit that divides evenly."""
    if not n:
        return ""
    for suffix in ("", "K", "M", "G"):
        if n % 1024:
            return f" [size={n}{suffix}]"
        n //= 1024
    return f" [size={n}T]"


def _bits(value: int, names: Iterable[tuple[int, str]]) -> str:
    return " ".join(f"{name}{'+' if value >> bit & 1 else '-'}" for bit, name in names)


_COMMAND = [(0, "I/O"), (1, "Mem"), (2, "BusMaster"), (3, "SpecCycle"), (4, "MemWINV"), (5, "VGASnoop"),
            (6, "ParErr"), (7, "Stepping"), (8, "SERR"), (9, "FastB2B"), (10, "DisINTx")]


def _status(st: int) -> str:
    devsel = {0: "fast", 1: "medium", 2: "slow"}.get(st >> 9 & 3, "??")
    return (_bits(st, [(4, "Cap"), (5, "66MHz"), (6, "UDF"), (7, "FastB2B"), (8, "ParErr")])
            + f" DEVSEL={devsel} "
            + _bits(st, [(11, ">TAbort"), (12, "<TAbort"), (13, "<MAbort"), (14, ">SERR"), (15, "<PERR"),
                         (3, "INTx")]))


def _region(res: PciResource) -> str:
    """lspci's text for a BAR: "Memory at fe640000 (32-bit, non-prefetchable) [size=128K]"."""
    if res.type == "io":
        where = "<unassigned>" if res.unset else f"{res.start:04x}"
        return f"I/O ports at {where}{_size(res.size)}"
    mem_type = res.flags & 0x6        # the BAR's type bits, kept in the resource flags
    bits = {0: "32-bit", 2: "low-1M", 4: "64-bit"}.get(mem_type, "type 3")
    if res.is_64bit:
        bits = "64-bit"
    where = "<unassigned>" if res.unset else f"{res.start:08x}"
    pref = "" if res.prefetchable else "non-"
    return f"Memory at {where} ({bits}, {pref}prefetchable){_size(res.size)}"


def _window(res: PciResource) -> str:
    if res.type == "io":
        return f"I/O behind bridge: {res.start:04x}-{res.end:04x}{_size(res.size)}"
    label = "Prefetchable memory" if res.prefetchable else "Memory"
    return f"{label} behind bridge: {res.start:08x}-{res.end:08x}{_size(res.size)}" + \
        (" [64-bit]" if res.is_64bit else "")


def _speed_short(speed: str | None) -> str:
    return speed.replace(" PCIe", "").replace(" GT/s", "GT/s") if speed else "unknown"


def _pcie_lines(dev: PciDevice) -> list[str]:
    port = (dev.pcie_port_type or "unknown type").replace("_", " ")
    out = [f"\tExpress (v{dev.pcie_cap_version}) {port} [{dev.pcie_cap:02x}]"]
    if dev.devcap is not None:
        mps = 128 << (dev.devcap & 7)
        out.append(f"\t\tDevCap:\tMaxPayload {mps} bytes, PhantFunc {dev.devcap >> 3 & 3}, "
                   f"FLReset{'+' if dev.devcap >> 28 & 1 else '-'}  (cached devcap {dev.devcap:#010x})")
    if dev.link_speed or dev.link_max_speed or "link_speed" in dev.unknown:
        out.append(f"\t\tLnkSta:\tSpeed {_speed_short(dev.link_speed)} (the kernel's cache of this link), "
                   "Width not in the dump")
        if dev.link_max_speed:
            out.append(f"\t\tLnkCap:\tSpeed {_speed_short(dev.link_max_speed)} (Max Link Speed of the "
                       "downstream port of this link)")
    saved = dev.saved_pcie or {}
    if "devctl" in saved:
        v = saved["devctl"]
        out.append("\t\tDevCtl:\t" + _bits(v, [(0, "CorrErr"), (1, "NonFatalErr"), (2, "FatalErr"), (3, "UnsupReq")])
                   + " (saved)")
        out.append("\t\t\t" + _bits(v, [(4, "RlxdOrd"), (8, "ExtTag"), (9, "PhantFunc"), (10, "AuxPwr"), (11, "NoSnoop")]))
        out.append(f"\t\t\tMaxPayload {128 << (v >> 5 & 7)} bytes, MaxReadReq {128 << (v >> 12 & 7)} bytes")
    if "lnkctl" in saved:
        v = saved["lnkctl"]
        aspm = {0: "Disabled", 1: "L0s Enabled", 2: "L1 Enabled", 3: "L0s L1 Enabled"}[v & 3]
        out.append(f"\t\tLnkCtl:\tASPM {aspm}; RCB {128 if v >> 3 & 1 else 64} bytes, "
                   + _bits(v, [(4, "Disabled"), (6, "CommClk"), (7, "ExtSynch"), (8, "ClockPM"),
                               (9, "AutWidDis"), (10, "BWInt"), (11, "AutBWInt")]) + " (saved)")
    if saved.get("lnkctl2"):
        target = {1: "2.5GT/s", 2: "5GT/s", 3: "8GT/s", 4: "16GT/s", 5: "32GT/s", 6: "64GT/s"}.get(
            saved["lnkctl2"] & 0xF, "unknown")
        out.append(f"\t\tLnkCtl2: Target Link Speed: {target} (saved)")
    return out


def _aer_lines(dev: PciDevice) -> list[str]:
    out = [f"\tAdvanced Error Reporting [{dev.aer_cap:x}]"]
    if dev.aer_correctable is not None:
        out.append(f"\t\tErrors sent (kernel AER counters): correctable {dev.aer_correctable}, "
                   f"non-fatal {dev.aer_nonfatal}, fatal {dev.aer_fatal}")
    if dev.aer_rootport_correctable is not None:
        out.append(f"\t\tErrors received (root port): correctable {dev.aer_rootport_correctable}, "
                   f"non-fatal {dev.aer_rootport_nonfatal}, fatal {dev.aer_rootport_fatal}")
    if dev.aer_errors:
        out.append("\t\tBy type: " + ", ".join(f"{k} {v}" for k, v in dev.aer_errors.items()))
    uncor = [(b, n) for b, n in sorted(AER_UNCOR_ERRORS.items()) if 4 <= b <= 21]
    cor = [(b, n) for b, n in sorted(AER_COR_ERRORS.items()) if b <= 13]
    saved = dev.saved_aer or {}
    if "uncor_mask" in saved:
        out.append(f"\t\tUEMsk:\t{_bits(saved['uncor_mask'], uncor)} (saved)")
    if "uncor_severity" in saved:
        out.append(f"\t\tUESvrt:\t{_bits(saved['uncor_severity'], uncor)} (saved)")
    if "cor_mask" in saved:
        out.append(f"\t\tCEMsk:\t{_bits(saved['cor_mask'], cor)} (saved)")
    if "cap_control" in saved:
        v = saved["cap_control"]
        out.append(f"\t\tAERCap:\tFirst Error Pointer: {v & 0x1F:02x}, "
                   + _bits(v, [(5, "ECRCGenCap"), (6, "ECRCGenEn"), (7, "ECRCChkCap"), (8, "ECRCChkEn")])
                   + " (saved)")
    if "root_command" in saved:
        bits = _bits(saved["root_command"], [(0, "CERptEn"), (1, "NFERptEn"), (2, "FERptEn")])
        out.append(f"\t\tRootCmd: {bits} (saved)")
    return out


def device_text(dev: PciDevice, *, numeric: int = NAMES_AND_NUMBERS, modules: Iterable[str] = ()) -> str:
    """One function as an ``lspci -vv``-like block, from what the dump holds. Register
    lines marked "(saved)" are the copy the last pci_save_state() took. Ids come with
    their names (``numeric`` 2, as ``lspci -vv -nn``; 1: numbers only, as ``-n``); the
    block ends as lspci's with the driver in use and ``modules`` (see
    :mod:`dumpkit.pci.drivers`)."""
    rev = f" (rev {dev.revision:02x})" if dev.revision else ""
    prog_if = ""
    if dev.class_code is not None and (dev.class_code & 0xFF or dev.prog_if_name):
        prog_if = f" (prog-if {dev.class_code & 0xFF:02x}"
        prog_if += f" [{dev.prog_if_name}])" if dev.prog_if_name else ")"
    out = [f"{dev.bdf} {class_text(dev, numeric)}: {id_text(dev, numeric)}{rev}{prog_if}"]
    if has_subsystem(dev):
        out.append(f"\tSubsystem: {subsystem_text(dev, numeric)}")
    if dev.pdev_address is not None:
        out.append(f"\tstruct pci_dev: {dev.pdev_address:#x}")
    if dev.saved_config is not None:
        # what pci_save_state() last copied, not the register at the crash: kernels save at
        # enumeration (6.12 does in pci_bus_add_device(), before a driver binds), suspend
        # and reset, so a driver's later Bus Master or MSI enable may be missing here
        state = "not restored since" if dev.state_saved else "restored since"
        out.append(f"\tControl: {_bits(dev.saved_command, _COMMAND)} "
                   f"(the kernel's last saved copy, {state}; not the state at the crash)")
        out.append(f"\tStatus: {_status(dev.saved_status)} (the kernel's last saved copy)")
    if dev.irq or dev.interrupt_pin:
        pin = chr(ord("A") + dev.interrupt_pin - 1) if dev.interrupt_pin and dev.interrupt_pin <= 4 else "?"
        out.append(f"\tInterrupt: pin {pin} routed to IRQ {dev.irq}")
    if dev.iommu_group is not None:
        out.append(f"\tIOMMU group: {dev.iommu_group}")
    for res in dev.bars:
        out.append(f"\tRegion {res.index}: {_region(res)}")
    if (rom := dev.rom) is not None:
        where = "<unassigned>" if rom.unset else f"{rom.start:08x}"
        out.append(f"\tExpansion ROM at {where}{' [disabled]' if rom.disabled else ''}{_size(rom.size)}")
    for res in dev.resources:
        if res.kind in ("vf_bar", "other"):
            out.append(f"\t{res.name}: {_region(res)}")
    if dev.is_bridge:
        if dev.secondary_bus is not None:
            sub = "??" if dev.subordinate_bus is None else f"{dev.subordinate_bus:02x}"
            out.append(f"\tBus: primary={dev.primary_bus:02x}, secondary={dev.secondary_bus:02x}, subordinate={sub}")
        for res in dev.windows:
            out.append(f"\t{_window(res)}")
    if dev.pcie_cap:
        out += _pcie_lines(dev)
    if dev.msi_enabled is not None or dev.msix_enabled is not None:
        out.append(f"\tMSI: Enable{'+' if dev.msi_enabled else '-'}  "
                   f"MSI-X: Enable{'+' if dev.msix_enabled else '-'}")
    if dev.aer_cap:
        out += _aer_lines(dev)
    kernel = [f"enable_cnt={dev.enable_count}", f"is_busmaster{'+' if dev.is_busmaster else '-'}",
              f"power={dev.power_state}", f"error_state={dev.error_state}",
              f"cfg_access_blocked{'+' if dev.block_cfg_access else '-'}"]
    if dev.reset_methods is not None:
        kernel.append("reset=" + (",".join(dev.reset_methods) or "none"))
    out.append("\tKernel: " + " ".join(kernel))
    if not dev.is_bridge:
        verdict = {True: "yes", False: "no", None: "unknown"}[dev.could_dma]
        out.append(f"\tDMA at crash: {verdict} ({dev.could_dma_reason})")
    if dev.vfio is not None:
        out += vfio_lines(dev.vfio)
    for key, why in dev.unknown.items():
        out.append(f"\tUnknown {key}: {why}")
    out += kernel_lines(dev, modules)
    return "\n".join(out)


def vfio_lines(owner) -> list[str]:
    """A VFIO-owned function's owner, group, container and mappings (``pci -v``)."""
    state = {True: "open", False: "not open", None: "open state unknown"}[owner.is_open]
    out = [f"\tVFIO: {owner.driver}, {state}, owner {owner.owner_text}"]
    group = [f"group {owner.group_id}" if owner.group_id is not None else None,
             f"type {owner.group_type}" if owner.group_type else None,
             f"domain {owner.group_domain}" if owner.group_domain else None,
             f"default domain {owner.default_domain}" if owner.default_domain else None,
             f"container {owner.container}" if owner.container else None,
             None if owner.memory_enabled is None else f"memory space {'on' if owner.memory_enabled else 'off'}"]
    out.append("\t\t" + ", ".join(g for g in group if g))
    for m in owner.mappings[:16]:
        prot = ("r" if m.read else "-") + ("w" if m.write else "-")
        out.append(f"\t\tIOVA {m.iova:#x}-{m.end - 1:#x} {prot} = {m.process or 'owner'} vaddr {m.vaddr:#x}"
                   + ("" if m.iommu_mapped else " (not mapped in the IOMMU)"))
    if len(owner.mappings) > 16:
        out.append(f"\t\t... {len(owner.mappings) - 16} more mappings (--json lists all)")
    for slot in owner.vm_slots[:16]:
        out.append(f"\t\tVM memslot {slot.slot}: guest-physical {slot.gpa:#x}-{slot.gpa + slot.size - 1:#x} "
                   f"= VMM vaddr {slot.hva:#x}")
    if len(owner.vm_slots) > 16:
        out.append(f"\t\t... {len(owner.vm_slots) - 16} more memslots (--json lists all)")
    out += [f"\t\tUnknown {k}: {why}" for k, why in owner.unknown.items()]
    return out


def detail_text(tree: PciTree, bdfs: Iterable[str] | None = None, *, numeric: int = NAMES_AND_NUMBERS,
                modules: Mapping[str, Iterable[str]] | None = None) -> str:
    """``lspci -vv``-like blocks for every function (or those in ``bdfs``), separated by a
    blank line, and a closing note on what a dump cannot show (NOT_IN_DUMP); ``numeric``
    and ``modules`` (by BDF) as in :func:`device_text`."""
    wanted = None if bdfs is None else set(bdfs)
    blocks = [device_text(d, numeric=numeric, modules=(modules or {}).get(d.bdf, ()))
              for d in tree if wanted is None or d.bdf in wanted]
    blocks += [f"!! {err}" for err in tree.errors]
    blocks.append("Not in a dump (config space is not memory):\n"
                  + "\n".join(f"\t{k}: {v}" for k, v in NOT_IN_DUMP.items()))
    return "\n\n".join(blocks)


# --- records, JSON, frames --------------------------------------------------------------------

def _hex(value: int | None, digits: int) -> str | None:
    return None if value is None else f"0x{value:0{digits}x}"


def to_records(tree: PciTree, hex_fields: bool = False,
               modules: Mapping[str, Iterable[str]] | None = None) -> list[dict]:
    """One plain dict per function (``unknown`` kept as a dict, ``resources`` as a list of
    dicts). With ``hex_fields`` every id and register also gets a ``<name>_hex`` string
    beside its number (resources: start_hex, end_hex, size_hex, flags_hex). With
    ``modules`` (by BDF, ``lspci -k``) each record also gets ``kernel_modules``, a list."""
    out = []
    for dev in tree:
        rec = dataclasses.asdict(dev)
        if dev.vfio is not None:
            rec["vfio"].update(owner=dev.vfio.owner_text, is_open=dev.vfio.is_open,
                               writable_bytes=dev.vfio.writable_bytes)
        if modules is not None:
            rec["kernel_modules"] = list(modules.get(dev.bdf, ()))
        if hex_fields:
            with_hex: dict = {}
            for key, value in rec.items():
                with_hex[key] = value
                if key in HEX_FIELDS:
                    with_hex[f"{key}_hex"] = _hex(value, HEX_FIELDS[key])
            with_hex["resources"] = [{**r, "start_hex": _hex(r["start"], 8), "end_hex": _hex(r["end"], 8),
                                      "size_hex": _hex(r["size"], 1), "flags_hex": _hex(r["flags"], 8)}
                                     for r in rec["resources"]]
            with_hex["saved_config_hex"] = (None if dev.saved_config is None
                                            else [_hex(v, 8) for v in dev.saved_config])
            with_hex["saved_pcie_hex"] = (None if dev.saved_pcie is None
                                          else {k: _hex(v, 4) for k, v in dev.saved_pcie.items()})
            with_hex["saved_aer_hex"] = (None if dev.saved_aer is None
                                         else {k: _hex(v, 8) for k, v in dev.saved_aer.items()})
            rec = with_hex
        out.append(rec)
    return out


def to_json(tree: PciTree, modules: Mapping[str, Iterable[str]] | None = None, **extra) -> str:
    """JSON text: ``{"devices": [...], "pci_ids": path, "errors": [...], "not_in_dump": {...},
    **extra}``; numbers stay numbers, ids and registers also come as hex strings; with
    ``modules`` every device has ``kernel_modules`` (see :func:`to_records`)."""
    return json.dumps({"devices": to_records(tree, hex_fields=True, modules=modules), "pci_ids": tree.pci_ids,
                       "errors": tree.errors, "not_in_dump": NOT_IN_DUMP, **extra},
                      indent=1, default=str)


def _resource_summary(res: dict) -> str:
    bits = "64-bit" if res["is_64bit"] else "32-bit" if res["type"] == "mem" else ""
    pref = " prefetchable" if res["prefetchable"] else ""
    extra = f" {bits}" if bits else ""
    return f"{res['name']} {res['type']} {res['start']:#x}-{res['end']:#x} ({res['size']}{extra}{pref})"


def to_frame(tree: PciTree, modules: Mapping[str, Iterable[str]] | None = None):
    """A pandas DataFrame, one row per function, indexed by bdf, names never cut; hex
    strings beside ids and registers; ``unknown``, ``resources``, ``aer_errors`` and the
    saved registers become "a: b; ..." string columns; with ``modules`` a
    ``kernel_modules`` column ("a,b")."""
    import pandas as pd

    rows = []
    for rec in to_records(tree, hex_fields=True, modules=modules):
        if "kernel_modules" in rec:
            rec["kernel_modules"] = ",".join(rec["kernel_modules"])
        rec["unknown"] = "; ".join(f"{k}: {v}" for k, v in rec["unknown"].items())
        rec["reset_methods"] = None if rec["reset_methods"] is None else ",".join(rec["reset_methods"])
        rec["resources"] = "; ".join(_resource_summary(r) for r in rec["resources"])
        rec["aer_errors"] = "; ".join(f"{k}: {v}" for k, v in rec["aer_errors"].items())
        cfg_hex = rec.pop("saved_config_hex")
        rec["saved_config"] = None if cfg_hex is None else " ".join(cfg_hex)
        for key in ("saved_pcie", "saved_aer"):
            hexed = rec.pop(f"{key}_hex")
            rec[key] = None if hexed is None else "; ".join(f"{k}={v}" for k, v in hexed.items())
        rows.append(rec)
    frame = pd.DataFrame(rows).set_index("bdf")
    for col in ("subsystem_vendor", "subsystem_device", "class_code", "revision", "header_type",
                "secondary_bus", "subordinate_bus", "enable_count", "saved_command", "iommu_group",
                "primary_bus", "irq", "interrupt_pin", "pcie_cap", "pcie_cap_version", "devcap", "aer_cap",
                "aer_correctable", "aer_nonfatal", "aer_fatal", "aer_rootport_correctable",
                "aer_rootport_nonfatal", "aer_rootport_fatal", "saved_status"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    frame["pdev_address"] = frame["pdev_address"].astype("UInt64")
    return frame


def resources_frame(tree: PciTree):
    """A pandas DataFrame with one row per resource (BAR, ROM, VF BAR, bridge window) of
    every function: bdf, index, name, kind, type, start, end, size, flags, is_64bit,
    prefetchable, unset, disabled and hex strings."""
    import pandas as pd

    rows = []
    for dev in tree:
        for res in dev.resources:
            rec = {"bdf": dev.bdf, **dataclasses.asdict(res)}
            rec.update(start_hex=_hex(res.start, 8), end_hex=_hex(res.end, 8), flags_hex=_hex(res.flags, 8))
            rows.append(rec)
    columns = ["bdf"] + [f.name for f in dataclasses.fields(PciResource)] + ["start_hex", "end_hex", "flags_hex"]
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("start", "end", "size", "flags"):
        frame[col] = frame[col].astype("UInt64")
    return frame


# --- picture ---------------------------------------------------------------------------------

@dataclass
class TreeRow:
    """One function's row in the tree picture."""

    dev: PciDevice
    depth: int
    y: int
    label: str


@dataclass
class TreeLayout:
    """Where each function goes: one row per function, depth-first, roots at depth 0."""

    rows: list[TreeRow]

    @property
    def max_depth(self) -> int:
        return max((r.depth for r in self.rows), default=0)

    @property
    def max_label(self) -> int:
        return max((len(r.label) for r in self.rows), default=0)

    def by_bdf(self) -> dict[str, TreeRow]:
        return {r.dev.bdf: r for r in self.rows}


def tree_label(dev: PciDevice) -> str:
    """A function's label in the tree picture: dev.fn, name, driver, port type."""
    label = f"{dev.bdf[5:]}  {device_label(dev, 48)}"
    if dev.driver:
        label += f"  [{dev.driver}]"
    if dev.is_bridge and dev.pcie_port_type:
        label += f"  ({dev.pcie_port_type.replace('_', ' ')})"
    return label


def tree_layout(tree: PciTree) -> TreeLayout:
    """Rows of the tree picture, top to bottom."""
    order: list[tuple[PciDevice, int]] = []

    def walk(dev: PciDevice, depth: int) -> None:
        order.append((dev, depth))
        for kid in tree.children(dev.bdf):
            walk(kid, depth + 1)

    for dev in tree.children(None):
        walk(dev, 0)
    n = len(order)
    return TreeLayout([TreeRow(dev, depth, n - i, tree_label(dev)) for i, (dev, depth) in enumerate(order)])


# inches: per row, per label character at 9 pt, per depth step
ROW_IN, CHAR_IN, DEPTH_IN = 0.42, 0.075, 0.45


LEGEND_ROW_IN, TITLE_IN = 0.3, 0.5


def tree_figsize(layout: TreeLayout, legend_rows: int = 3) -> tuple[float, float]:
    """A figure size that keeps every row and label apart, whatever the number of functions."""
    width = max(8.0, 1.0 + DEPTH_IN * (layout.max_depth + 1) + CHAR_IN * (layout.max_label + 10))
    return width, ROW_IN * (len(layout.rows) + 1) + LEGEND_ROW_IN * (legend_rows + 1) + TITLE_IN


def _default_style(dev: PciDevice) -> Style:
    """Could DMA at crash, by the kernel's state alone. A function without a driver whose
    kernel flags say "no" is drawn as unknown: the Bus Master flag is software state and
    firmware may have left the device mastering (the verdict weighs the IOMMU as well)."""
    if dev.is_bridge:
        return BRIDGE
    if not dev.is_endpoint:
        return NOT_JUDGED
    if dev.could_dma is False and dev.driver is None:
        return dma_style(None)
    return dma_style(dev.could_dma)


def plot_tree(tree: PciTree, ax=None, title: str | None = None,
              style: Callable[[PciDevice], Style] | None = None, rings: Iterable[str] = (),
              bold: Callable[[PciDevice], bool] | None = None, legend: Iterable[Style] | None = None):
    """Draw the tree: one row per function, bridges and ports as small white hexagons,
    endpoints by the shared palette (:mod:`dumpkit.palette`: could DMA at crash as known
    bad, unknown, could not DMA as known idle; shape and lightness, not only hue; no
    driver is unknown, never idle, as the kernel's Bus Master flag is software state). The
    figure grows with the number of functions and the longest label; the legend sits
    below the tree, clear of it.

    :param ax: a matplotlib Axes to draw into; a new figure is made if None
    :param style: the style of each function (default: by could-DMA)
    :param rings: BDFs to mark with the reset ring (ports the capture kernel reset)
    :param bold: which labels to set in bold (default: those that could DMA)
    :param legend: the styles to explain (default: those drawn)
    :return: the Axes
    """
    import matplotlib.pyplot as plt

    style = style or _default_style
    bold = bold or (lambda d: bool(d.could_dma))
    layout = tree_layout(tree)
    rings = set(rings)
    styles = {r.dev.bdf: style(r.dev) for r in layout.rows}
    used = list(dict.fromkeys(legend if legend is not None else styles.values()))
    if rings:
        used.append(RESET_RING)
    if ax is None:
        legend_rows = (len(used) + 1) // 2
        width, height = tree_figsize(layout, legend_rows)
        fig, ax = plt.subplots(figsize=(width, height))
        fig.subplots_adjust(left=0.02, right=0.98, top=1 - TITLE_IN / height,
                            bottom=LEGEND_ROW_IN * (legend_rows + 1) / height)
    pos = {r.dev.bdf: r for r in layout.rows}
    for r in layout.rows:
        if r.dev.parent in pos:
            p = pos[r.dev.parent]
            ax.plot([p.depth + 0.15, p.depth + 0.15, r.depth], [p.y - 0.2, r.y, r.y], color="#888888", lw=1,
                    zorder=1)
    for r in layout.rows:
        st = styles[r.dev.bdf]
        ax.scatter([r.depth], [r.y], s=90 if r.dev.is_bridge else 140, zorder=3, gid=f"node {r.dev.bdf}",
                   **st.marker_kwargs())
        label = r.label + ("  [reset]" if r.dev.bdf in rings else "")
        ax.text(r.depth + 0.4, r.y, label, va="center", fontsize=9, fontweight="bold" if bold(r.dev) else "normal")
    ringed = [pos[b] for b in sorted(rings) if b in pos]
    if ringed:
        ax.scatter([r.depth for r in ringed], [r.y for r in ringed], s=300, marker="o", facecolors="none",
                   edgecolors="black", linewidths=2.2, zorder=4, gid="reset-ports")
    # one depth step is DEPTH_IN inches wide, so labels keep their room in any figure width
    axes_in = ax.get_position().width * ax.figure.get_figwidth()
    ax.set_xlim(-0.5, -0.5 + max(layout.max_depth + 7.5, axes_in / DEPTH_IN))
    ax.set_ylim(0.3, len(layout.rows) + 0.7)
    ax.axis("off")
    ax.legend(handles=legend_handles(used, ax), loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=2, fontsize=8,
              frameon=False, borderaxespad=0.2)
    if title:
        ax.set_title(title, loc="left", fontsize=11)
    return ax
