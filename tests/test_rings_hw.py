"""Ring decoders for the hardware users run (e1000, vmxnet3, vmw_pvscsi, megaraid_sas,
ahci, xhci_hcd) on the stock kernel's hardware-load dumps, against QEMU's own record of
what each device wrote after the crash.

The generator crashes those guests with an NMI injected over QMP: its
``qmp_enter_inject_nmi`` trace line is the crash instant T0 in the trace's clock. The NMI
stops CPU 0 at once; CPU 1 runs on until the panicking CPU stops it with an NMI IPI
(``cpus_stopped_after_crash_s`` in run.json, ~20 ms under TCG), and completions in that
window may still be processed by it. Completions a millisecond before T0 can also still
be unprocessed (the kernel had not got to them). Both windows hold at most the commands
then in flight, a few per device, hence the tolerance of 5 (``TOL``). Where the device
reports its own position (a producer index, an event ring index, a register), the
decoder's device index must equal it exactly.

Devices are found by driver, never by BDF."""

from __future__ import annotations

import json
import lzma
import os
import re
import struct
from functools import cache
from pathlib import Path

import drgn
import pytest
from drgn.helpers.linux.mm import follow_phys
from drgn.helpers.linux.pci import for_each_pci_dev
from kdump_damage import damage_page

import dumpkit
from conftest import SAMPLES, cached_dump
from dumpkit.rings import ahci, e1000, megaraid_sas, pvscsi, ring_evidence, vmxnet3, xhci
from dumpkit.rings.base import read_trail
from dumpkit.rings.generic import generic_evidence

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
HW = ["hw-load", "hw-idle"]
DECODERS = {"e1000": e1000.DECODER, "vmxnet3": vmxnet3.DECODER, "vmw_pvscsi": pvscsi.DECODER,
            "megaraid_sas": megaraid_sas.DECODER, "ahci": ahci.DECODER, "xhci_hcd": xhci.DECODER}
TOL = 5


def _roots() -> list[Path]:
    roots = []
    for manifest in sorted((CACHE / "samples").glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        if data.get("kernel", {}).get("debug_dir") and {d["scenario"] for d in data["dumps"]} >= set(HW):
            roots.append(manifest.parent)
    return roots


ROOTS = _roots()
if not ROOTS and os.environ.get("CI"):
    raise RuntimeError(f"no hardware-load samples under {CACHE / 'samples'}: scripts/setup generates them "
                       "(sample-dumps/generate --scenario hw)")
needs_hw = pytest.mark.skipif(not ROOTS, reason="no hardware-load samples in the cache: run scripts/setup "
                              "(sample-dumps/generate --scenario hw)")
ROOT = max(ROOTS, key=lambda r: (r / "manifest.json").stat().st_mtime) if ROOTS else None


def debug_dir() -> Path:
    kernel = json.loads((ROOT / "manifest.json").read_text())["kernel"]
    return (ROOT / kernel["debug_dir"]).resolve()


@cache
def opened(scenario: str, only_vmlinux: bool = False):
    kernel = json.loads((ROOT / "manifest.json").read_text())["kernel"]
    dbg = [(ROOT / kernel["debug_file"]).resolve()] if only_vmlinux else [debug_dir()]
    return dumpkit.open(cached_dump(ROOT, scenario), debuginfo=dbg)


def run_facts(scenario: str) -> dict:
    return json.loads((ROOT / scenario / "run.json").read_text())


def bound_to(prog: drgn.Program, driver: str) -> drgn.Object:
    """The first PCI function bound to ``driver``."""
    for pdev in for_each_pci_dev(prog):
        drv = pdev.dev.driver
        if drv and drv.name.string_().decode() == driver:
            return pdev
    raise AssertionError(f"no PCI function bound to {driver}")


def pdev_of(scenario: str, driver: str) -> drgn.Object:
    return bound_to(opened(scenario).prog, driver)


@cache
def evidence(scenario: str, driver: str):
    return ring_evidence(opened(scenario).prog, pdev_of(scenario, driver))


def trace_bdf(pdev: drgn.Object) -> str:
    """QEMU's vtd_dmar_translate spelling of a function: bus:slot.func as %02x:%02x.%02x."""
    devfn = pdev.devfn.value_()
    return f"{pdev.bus.number.value_():02x}:{devfn >> 3:02x}.{devfn & 7:02x}"


@cache
def trace(scenario: str) -> tuple[float, list[tuple[float, str, str]]]:
    """(T0, [(time, event, arguments)]) of the scenario's QEMU trace, in time order."""
    with lzma.open(ROOT / scenario / "qemu-trace.log.xz", "rt") as f:
        lines = [(float(m.group(1)), m.group(2), m.group(3))
                 for m in re.finditer(r"^\d+@(\d+\.\d+):(\w+) ?(.*)$", f.read(), re.MULTILINE)]
    lines.sort(key=lambda x: x[0])
    t0 = next(t for t, ev, _ in lines if ev == "qmp_enter_inject_nmi")
    return t0, lines


def after_crash(scenario: str, *events: str) -> list[tuple[float, str, str]]:
    t0, lines = trace(scenario)
    return [x for x in lines if x[0] >= t0 and x[1] in events]


def translated_after_crash(scenario: str, pdev: drgn.Object) -> list[int]:
    """IOVA pages VT-d translated for the function after the NMI (one per DMA access)."""
    bdf = trace_bdf(pdev)
    out = []
    for _t, _ev, args in after_crash(scenario, "vtd_dmar_translate"):
        m = re.match(r"dev (\S+) iova (0x[0-9a-f]+)", args)
        if m and m.group(1) == bdf:
            out.append(int(m.group(2), 16) & ~0xFFF)
    return out


def pages(buffers, prefix: str) -> set[int]:
    out = set()
    for b in buffers:
        if b.label.startswith(prefix):
            out.update(range(b.iova & ~0xFFF, b.iova + b.size, 0x1000))
    return out


def queues(ev, word: str):
    return [q for q in ev.queues if word in q.name]


# --- every decoder, both scenarios ----------------------------------------------------

@needs_hw
@pytest.mark.parametrize("scenario", HW)
@pytest.mark.parametrize("driver", list(DECODERS))
def test_decoder_runs_and_is_named(scenario, driver):
    ev = evidence(scenario, driver)
    d = DECODERS[driver]
    assert ev.status == "decoded", (ev.status, ev.note)
    assert ev.decoder == f"{d.name} {d.version}"
    for q in ev.queues:
        assert 0 <= q.unprocessed <= q.size, q
        assert len(q.dma_addresses) <= 64 * max(q.unprocessed, 1), q


@needs_hw
@pytest.mark.parametrize("driver", list(DECODERS))
def test_idle_devices_left_nothing_unprocessed(driver):
    """hw-idle: the same machine, nothing running; QEMU traced no completion after the NMI."""
    ev = evidence("hw-idle", driver)
    assert ev.unprocessed == 0, [(q.name, q.unprocessed) for q in ev.queues]
    events = {"vmw_pvscsi": ["pvscsi_cmp_ring_put"], "megaraid_sas": ["megasas_qf_complete"],
              "ahci": ["ncq_finish", "ahci_cmd_done"], "xhci_hcd": ["usb_xhci_queue_event"]}.get(driver)
    if events:
        assert after_crash("hw-idle", *events) == []
    else:
        assert translated_after_crash("hw-idle", pdev_of("hw-idle", driver)) == []


# --- hw-load against QEMU's record ----------------------------------------------------

@needs_hw
def test_e1000_against_its_registers_and_vtd_trace():
    """QEMU 7.2's e1000 makes three DMA accesses to the RX descriptor ring per received
    packet (reads the descriptor, writes it back, writes its status byte apart), each
    one VT-d translation. Its RDH register, read over the monitor once the streams had
    stopped, is where it will write next: the decoder's device index exactly."""
    sc, pdev = "hw-load", pdev_of("hw-load", "e1000")
    ev = evidence(sc, "e1000")
    (rx,) = queues(ev, "rx")
    ring = pages(e1000.e1000_buffers(opened(sc).prog, pdev), "e1000 RX descriptor ring")
    accesses = sum(1 for p in translated_after_crash(sc, pdev) if p in ring)
    traced = round(accesses / 3)   # a packet straddling the NMI leaves a remainder
    assert traced > 0 and abs(rx.unprocessed - traced) <= TOL, (rx.unprocessed, traced)
    regs = run_facts(sc)["e1000_registers"]
    after, before = regs["capture_saving"], regs["before_nmi"]
    assert rx.device_index == after["RDH"]
    assert abs(rx.unprocessed - (after["RDH"] - before["RDH"]) % rx.size) <= TOL
    (tx,) = queues(ev, "tx")
    assert tx.unprocessed == 0 and tx.device_index == after["TDH"]


@needs_hw
def test_vmxnet3_against_vtd_trace():
    """QEMU 7.2's vmxnet3 reads each RX completion descriptor (to check it is free)
    before writing it: two translations per completion. It has no trace events of its own."""
    sc, pdev = "hw-load", pdev_of("hw-load", "vmxnet3")
    ev = evidence(sc, "vmxnet3")
    bufs = vmxnet3.vmxnet3_buffers(opened(sc).prog, pdev)
    comp = set().union(*(pages(bufs, f"vmxnet3 rxq{q} completion ring") for q in range(32)))
    traced = round(sum(1 for p in translated_after_crash(sc, pdev) if p in comp) / 2)
    decoded = sum(q.unprocessed for q in queues(ev, "rxq"))
    assert traced > 0 and abs(decoded - traced) <= TOL, (decoded, traced)
    assert sum(q.unprocessed for q in queues(ev, "txq")) == 0


@needs_hw
@pytest.mark.parametrize("driver", ["e1000", "vmxnet3"])
def test_nic_buffers_are_pages_the_nic_wrote_after_the_crash(driver):
    sc, pdev = "hw-load", pdev_of("hw-load", driver)
    ev = evidence(sc, driver)
    written = set(translated_after_crash(sc, pdev))
    addrs = [a for q in ev.queues for a in q.dma_addresses]
    # the translation trace starts just before the NMI: a completion the NIC wrote in the
    # instant before it, and the kernel had not processed yet, has its buffer page outside
    # (seen: one of 30 on a fresh run); the others are pages QEMU's VT-d translated after it
    unexplained = {a & ~0xFFF for a in addrs} - written
    assert addrs and len(unexplained) <= TOL, sorted(map(hex, unexplained))


@needs_hw
def test_pvscsi_against_completion_trace():
    """pvscsi_cmp_ring_put traces the guest address of each completion descriptor QEMU
    writes. (QEMU 7.2's pvscsi addresses guest memory physically, past the vIOMMU; the
    guest gives it an identity domain, so ring addresses are physical.)"""
    sc = "hw-load"
    ev = evidence(sc, "vmw_pvscsi")
    (cmp,) = queues(ev, "completion")
    traced = after_crash(sc, "pvscsi_cmp_ring_put")
    assert abs(cmp.unprocessed - len(traced)) <= TOL, (cmp.unprocessed, len(traced))
    base = next(b.iova for b in pvscsi.pvscsi_buffers(opened(sc).prog, pdev_of(sc, "vmw_pvscsi"))
                if b.label == "pvscsi completion ring")
    _t0, lines = trace(sc)
    last = [int(a.split()[-1], 16) for _t, e, a in lines if e == "pvscsi_cmp_ring_put"][-1]
    assert cmp.device_index == ((last - base) // pvscsi.CMP_DESC_SIZE + 1) % cmp.size


@needs_hw
def test_megaraid_sas_against_reply_queue_trace():
    """megasas_qf_complete traces each context QEMU puts on the MFI reply queue and the
    slot (head) it puts it in; the producer index the decoder reads follows the last."""
    sc = "hw-load"
    ev = evidence(sc, "megaraid_sas")
    (q,) = ev.queues
    traced = after_crash(sc, "megasas_qf_complete")
    assert abs(q.unprocessed - len(traced)) <= TOL, (q.unprocessed, len(traced))
    _t0, lines = trace(sc)
    heads = [int(re.search(r"head (0x[0-9a-f]+)", a).group(1), 16) for _t, e, a in lines if e == "megasas_qf_complete"]
    assert q.device_index == (heads[-1] + 1) % q.size


@needs_hw
def test_ahci_against_ncq_trace():
    """ncq_finish / ahci_cmd_done mark each completion QEMU's AHCI writes (SDB or D2H
    FIS). Memory keeps only the last SDB FIS per port, so the decoder counts at most
    the last NCQ completion's tags: it may undercount, never by more than the commands
    in flight (three readers)."""
    sc = "hw-load"
    ev = evidence(sc, "ahci")
    decoded = ev.unprocessed
    traced = after_crash(sc, "ncq_finish", "ahci_cmd_done")
    assert abs(decoded - len(traced)) <= TOL, (decoded, len(traced))
    if traced:
        # the port's last completion is QEMU's last SDB FIS: if the kernel still counted
        # that tag as issued, the decoder reports it
        last_port = int(re.search(r"\)\[(\d+)\]", traced[-1][2]).group(1))
        port = next(q for q in ev.queues if f"port {last_port} " in q.name)
        assert port.unprocessed <= len(traced)


@needs_hw
def test_xhci_against_event_trace():
    """usb_xhci_queue_event traces each event TRB QEMU writes and its ring index."""
    sc = "hw-load"
    ev = evidence(sc, "xhci_hcd")
    (q,) = ev.queues
    traced = after_crash(sc, "usb_xhci_queue_event")
    assert abs(q.unprocessed - len(traced)) <= TOL, (q.unprocessed, len(traced))
    _t0, lines = trace(sc)
    idx = [int(re.search(r"idx (\d+)", a).group(1)) for _t, e, a in lines if e == "usb_xhci_queue_event"]
    assert q.device_index == (idx[-1] + 1) % q.size


@needs_hw
@pytest.mark.parametrize("driver", ["vmw_pvscsi", "megaraid_sas", "ahci", "xhci_hcd"])
def test_storage_completions_name_their_buffers(driver):
    """Each unprocessed completion leads to the command's buffers. (Unlike the NICs,
    these controllers' emulations map a command's buffers when they take the command,
    before the crash, so the post-crash VT-d trace does not list them.)"""
    ev = evidence("hw-load", driver)
    for q in ev.queues:
        assert len(q.dma_addresses) >= q.unprocessed, q
        assert all(0 < a < 1 << 64 for a in q.dma_addresses), q


@needs_hw
def test_post_crash_dma_lands_in_the_verdict():
    from dumpkit.verdict import judge

    v = judge(opened("hw-load"), [ROOT / "hw-load" / "capture-dmesg.txt"])
    for driver in ("e1000", "vmxnet3"):
        e = next(e for e in v.endpoints if e.driver == driver)
        assert e.did_dma_after_crash.value is True and e.post_crash_completions > 0, driver


# --- what each decoder read, and an unreadable ring named -------------------------------

# how each decoder's own ring labels begin (its DmaBuffer labels begin the same way)
LABEL_PREFIX = {"e1000": "e1000 ", "vmxnet3": "vmxnet3 ", "vmw_pvscsi": "pvscsi ", "megaraid_sas": "megaraid_sas ",
                "ahci": "ahci ", "xhci_hcd": "xhci "}
# on hw-load each decoder reads at least these (label prefixes): its driver structs and rings
READ_ON_LOAD = {
    "e1000": ["struct net_device", "struct e1000_adapter", "struct e1000_rx_ring rx0", "e1000 RX descriptor ring 0",
              "e1000 rx0 buffer_info array", "struct e1000_tx_ring tx0", "e1000 TX descriptor ring 0"],
    "vmxnet3": ["struct net_device", "struct vmxnet3_adapter", "struct vmxnet3_rx_queue rxq0",
                "vmxnet3 rxq0 completion ring", "vmxnet3 rxq0 ring0 buf_info array", "struct vmxnet3_tx_queue txq0",
                "vmxnet3 txq0 completion ring"],
    "vmw_pvscsi": ["struct Scsi_Host", "struct pvscsi_adapter", "pvscsi rings state page", "pvscsi completion ring",
                   "pvscsi cmd_map", "struct scsi_cmnd", "struct scatterlist[]"],
    "megaraid_sas": ["struct megasas_instance", "megaraid_sas MFI producer index", "megaraid_sas MFI consumer index",
                     "megaraid_sas MFI reply queue", "megaraid_sas cmd_list", "struct megasas_cmd (context",
                     "struct scsi_cmnd"],
    "ahci": ["struct ata_host", "struct ata_port 0", "struct ahci_port_priv 0", "ahci port 0 received FIS area",
             "ahci port 0 command list", "struct scatterlist[] of ata"],
    "xhci_hcd": ["struct usb_hcd", "struct xhci_hcd", "struct xhci_ring (event ring 0)",
                 "struct xhci_segment 0 of event ring 0", "xhci event ring 0 segment 0", "struct xhci_virt_device",
                 "xhci slot "],
}


def split_source(source: str) -> tuple[str, int]:
    label, addr = source.rsplit(" @", 1)
    return label, int(addr, 16)


def _struct_type(prog: drgn.Program, label: str) -> drgn.Type | None:
    """The type a "struct NAME ..." label names (None for a ring or array label)."""
    words = label.split()
    if words[0] != "struct" or words[1].endswith("[]"):
        return None
    return prog.type(f"struct {words[1]}")


def ring_of(prog: drgn.Program, driver: str) -> tuple[str, int]:
    """(label, kernel address) of one ring each decoder reads, found from the driver's
    structures here rather than from the decoder's record."""
    pdev = bound_to(prog, driver)
    if driver == "e1000":
        return "e1000 RX descriptor ring 0", e1000.e1000_adapter(prog, pdev)[1].rx_ring[0].desc.value_()
    if driver == "vmxnet3":
        adapter = vmxnet3.vmxnet3_adapter(prog, pdev)[1]
        return "vmxnet3 rxq0 completion ring", adapter.rx_queue[0].comp_ring.base.value_()
    if driver == "vmw_pvscsi":
        return "pvscsi completion ring", pvscsi.pvscsi_adapter(prog, pdev).cmp_ring.value_()
    if driver == "megaraid_sas":
        return "megaraid_sas MFI reply queue", megaraid_sas.megasas_instance(prog, pdev).reply_queue.value_()
    if driver == "ahci":
        ap, pp = ahci.ahci_ports(prog, pdev)[0]
        return f"ahci port {ap.port_no.value_()} received FIS area", pp.rx_fis.value_()
    (num, ring), *_ = xhci.xhci_event_rings(prog, xhci.xhci_hcd(prog, pdev))
    return f"xhci event ring {num} segment 0", ring.first_seg.trbs.value_()


@needs_hw
@pytest.mark.parametrize("driver", list(DECODERS))
def test_sources_are_objects_of_the_dump(driver):
    """On hw-load every decoder names the driver structures and rings it read: one address
    per source, readable in the dump (a struct's whole size), each label a kernel struct
    type the debug info has or one of the decoder's own ring names."""
    prog = opened("hw-load").prog
    ev = evidence("hw-load", driver)
    assert ev.status == "decoded", (ev.status, ev.note)
    labels = [split_source(s)[0] for s in ev.sources]
    for want in READ_ON_LOAD[driver]:
        assert any(label.startswith(want) for label in labels), (want, ev.sources)
    pdev = pdev_of("hw-load", driver)
    assert ev.sources[0] == f"struct pci_dev {ev.device} @{pdev.value_():#x}"
    for source in ev.sources:
        label, addr = split_source(source)
        assert "@" not in label, source
        t = _struct_type(prog, label)
        if t is None:
            assert label.startswith((LABEL_PREFIX[driver], "struct scatterlist[] of ")), source
            prog.read(addr, 1)
        else:
            prog.read(addr, t.size)
    # the rings the sources name are where the driver's own structures put them
    rings = {label: addr for label, addr in map(split_source, ev.sources)}
    label, addr = ring_of(prog, driver)
    assert rings[label] == addr, (label, hex(addr), ev.sources)


@needs_hw
@pytest.mark.parametrize("driver", list(DECODERS))
def test_unreadable_ring_is_unknown_naming_its_page(driver, tmp_path):
    """One ring's page made undecompressable in a copy of hw-load: the undamaged dump
    decodes it; the damaged one gives no count (status "error", unprocessed None) and a
    note naming the ring and the page, with the ring among the sources."""
    prog = opened("hw-load").prog
    good = evidence("hw-load", driver)
    assert good.status == "decoded" and good.unprocessed is not None, (good.status, good.note)
    label, addr = ring_of(prog, driver)
    page = follow_phys(prog["init_mm"].address_of_(), addr).value_() & ~0xFFF
    damage_page(ROOT / "hw-load" / "vmcore.kdump", tmp_path / "vmcore.kdump", page)
    bad = dumpkit.open(tmp_path / "vmcore.kdump", debuginfo=[debug_dir()]).prog
    ev = ring_evidence(bad, bound_to(bad, driver))
    assert ev.status != "decoded" and ev.unprocessed is None, (ev.status, ev.queues)
    assert ev.note.startswith(f"{label} unreadable at {addr:#x}"), ev.note
    assert f"page {page:#x} of the dump" in ev.note, ev.note
    assert f"{label} @{addr:#x}" in ev.sources, ev.sources


# --- debug info, absent devices, drivers without a decoder -----------------------------

@needs_hw
def test_without_module_debug_info_the_claim_says_what_to_install():
    prog = opened("hw-load", only_vmlinux=True).prog
    release = opened("hw-load").info.kernel_release
    for driver in DECODERS:
        pdev = next(p for p in for_each_pci_dev(prog) if p.dev.driver and p.dev.driver.name.string_().decode() == driver)
        ev = ring_evidence(prog, pdev)
        assert ev.status == "no debug info", (driver, ev.status)
        assert "no debug info for module" in ev.note and f"linux-image-{release}-dbg" in ev.note, ev.note


def test_decoders_do_not_run_where_their_devices_are_absent():
    """The committed samples have none of these drivers bound (their xHCI has no driver)."""
    names = {f"{d.name} {d.version}" for d in DECODERS.values()}
    for scenario in ("idle", "copied-traffic"):
        prog = dumpkit.open(SAMPLES / scenario / "vmcore.kdump").prog
        for pdev in for_each_pci_dev(prog):
            ev = ring_evidence(prog, pdev)
            assert ev.decoder not in names, (scenario, ev.device, ev.decoder)


def test_generic_evidence_says_what_is_and_is_not_known():
    prog = dumpkit.open(SAMPLES / "idle" / "vmcore.kdump").prog
    texts = {}
    for pdev in for_each_pci_dev(prog):
        drv = pdev.dev.driver
        texts[drv.name.string_().decode() if drv else None] = generic_evidence(prog, pdev, [4096, 0, 8192])
    assert texts[None].startswith("no driver bound") and "Without a driver" in texts[None]
    bound = texts["pcieport"]
    assert bound.startswith("no ring decoder for driver pcieport")
    assert "DMA mask 32-bit" in bound or "DMA mask 64-bit" in bound
    assert "2 writable IOMMU mapping(s), 12288 bytes" in bound
    assert "Not known from memory" in bound and "without the managed API" in bound
    pdev = next(iter(for_each_pci_dev(prog)))
    assert "IOMMU mappings not examined" in generic_evidence(prog, pdev)
    assert "no writable IOMMU mapping" in generic_evidence(prog, pdev, lambda _p: [])


# --- megaraid_sas Fusion: no QEMU model, decoded from a synthetic controller ------------

@needs_hw
def test_megaraid_fusion_reply_queues_from_synthetic_memory():
    """QEMU emulates only the MFI generation, so the Fusion path runs on a made-up
    instance: the module's own types, laid out in a memory segment by this test."""
    # a fresh copy of the dump for the module's types; the made-up controller lives in a
    # memory segment at an address the dump does not map
    prog = dumpkit.open(ROOT / "hw-load" / "vmcore.kdump", debuginfo=[debug_dir()]).prog
    inst_t, fusion_t = prog.type("struct megasas_instance"), prog.type("struct fusion_context")
    cmd_t = prog.type("struct megasas_cmd_fusion")
    base, depth = 0xFFFFFFFF00000000, 16
    layout = {"inst": base, "fusion": base + 0x10000, "cmds": base + 0x40000, "cmdlist": base + 0x48000,
              "replies": base + 0x50000}
    mem = bytearray(0x60000)

    def put(addr: int, fmt: str, value: int) -> None:
        data = struct.pack(fmt, value)
        mem[addr - base:addr - base + len(data)] = data

    def member(t, path: str) -> int:
        return drgn.offsetof(t, path)

    put(layout["inst"] + member(inst_t, "ctrl_context"), "<Q", layout["fusion"])
    put(layout["inst"] + member(inst_t, "adapter_type"), "<B", 3)          # INVADER_SERIES
    put(layout["inst"] + member(inst_t, "msix_vectors"), "<I", 2)
    put(layout["inst"] + member(inst_t, "max_fw_cmds"), "<H", 8)
    put(layout["fusion"] + member(fusion_t, "reply_q_depth"), "<I", depth)
    put(layout["fusion"] + member(fusion_t, "cmd_list"), "<Q", layout["cmdlist"])
    for q in range(2):
        put(layout["fusion"] + member(fusion_t, f"reply_frames_desc[{q}]"), "<Q", layout["replies"] + q * depth * 8)
        put(layout["fusion"] + member(fusion_t, f"reply_frames_desc_phys[{q}]"), "<Q", 0xabc0000 + q * depth * 8)
        for i in range(depth):
            put(layout["replies"] + (q * depth + i) * 8, "<Q", (1 << 64) - 1)
    for smid in range(1, 9):
        cmd = layout["cmds"] + smid * cmd_t.size
        put(layout["cmdlist"] + (smid - 1) * 8, "<Q", cmd)
        put(cmd + member(cmd_t, "io_request_phys_addr"), "<Q", 0x5000000 + smid * 0x100)
    # queue 0: driver at 14, controller posted SMIDs 3, 5, 7 at 14, 15, 0 (wrapping)
    put(layout["fusion"] + member(fusion_t, "last_reply_idx[0]"), "<H", 14)
    for slot, smid in ((14, 3), (15, 5), (0, 7)):
        put(layout["replies"] + slot * 8, "<Q", smid << 16 | 0x0)   # SCSI IO success descriptor
    put(layout["fusion"] + member(fusion_t, "last_reply_idx[1]"), "<H", 4)
    prog.add_memory_segment(base, len(mem), lambda addr, count, offset, physical: bytes(mem[offset:offset + count]))
    inst = drgn.Object(prog, prog.pointer_type(inst_t), value=layout["inst"])
    assert megaraid_sas._is_fusion(inst)
    trail: list = []
    token = read_trail().set(trail)
    try:
        q0, q1 = megaraid_sas._fusion(prog, inst)
    finally:
        read_trail().reset(token)
    read = {label: addr for label, addr, _size in trail}
    assert read["struct fusion_context"] == layout["fusion"]
    assert read["megaraid_sas reply queue 0"] == layout["replies"]
    assert read["megaraid_sas reply queue 1"] == layout["replies"] + depth * 8
    assert read["struct megasas_cmd_fusion (SMID 7)"] == layout["cmds"] + 7 * cmd_t.size
    assert (q0.size, q0.unprocessed, q0.driver_index, q0.device_index) == (16, 3, 14, 1)
    assert q0.dma_addresses == [0x5000300, 0x5000500, 0x5000700]
    assert (q1.unprocessed, q1.driver_index, q1.device_index) == (0, 4, 4)
