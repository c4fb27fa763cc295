"""The lspci-grade PCI view against the ground truth taken inside the guests: BARs, IRQs,
ids and link speed against pci.json (sysfs and the full config space the guest read),
the detail view against lspci -vv, the tree against lspci -tv, the JSON hex fields; on
every committed sample dump and, when present, the stock-kernel samples in the cache."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import drgn
import pytest
from conftest import CAPTURE_KERNEL_DUMPS, DUMPS, REPO, SAMPLES, dump_id, dump_path
from drgn.helpers.linux.device import dev_name

import dumpkit
from dumpkit.pci import collect_pci
from dumpkit.pci.collect import LAYOUT_CACHE_KEY, pci_layout
from dumpkit.pci.drivers import kernel_modules
from dumpkit.pci.ids import PciIds, cache_dir
from dumpkit.pci.render import (HEX_FIELDS, detail_text, device_text, lspci_name, resources_frame, to_frame,
                                to_json, tree_text)

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")


def _cases() -> list[tuple[str, Path | dict, Path]]:
    """(id, dump (manifest entry or path), ground-truth directory) for every sample dump."""
    out = []
    for entry in DUMPS:
        sub = "capture-ground-truth" if entry in CAPTURE_KERNEL_DUMPS else "ground-truth"
        out.append((dump_id(entry), entry, SAMPLES / entry["scenario"] / sub))
    for manifest in sorted((CACHE / "samples").glob("*/manifest.json")):
        for entry in json.loads(manifest.read_text())["dumps"]:
            path = manifest.parent / entry["file"]
            truth = path.parent / "ground-truth"
            if entry["kind"] == "first-kernel vmcore" and path.exists() and (truth / "pci.json").exists():
                out.append((f"stock:{manifest.parent.name}:{entry['scenario']}", path, truth))
    return out


CASES = _cases()


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    _id, dump, truth_dir = request.param
    d = dumpkit.open(dump_path(dump) if isinstance(dump, dict) else dump)
    truth = json.loads((truth_dir / "pci.json").read_text())["devices"]
    return d, collect_pci(d.prog), truth, truth_dir


# --- ground-truth helpers ----------------------------------------------------------------------

def config(gt: dict) -> bytes:
    return bytes.fromhex(gt["config"])


def u32(cfg: bytes, off: int) -> int:
    return struct.unpack_from("<I", cfg, off)[0]


def config_bars(cfg: bytes) -> dict[int, dict]:
    """The BARs as the guest read them: address, type, 64-bit, prefetchable (no sizes:
    sizing a BAR means writing it, which the ground truth did not do)."""
    count = {0: 6, 1: 2, 2: 1}.get(cfg[0x0E] & 0x7F, 0)
    out, i = {}, 0
    while i < count:
        low = u32(cfg, 0x10 + 4 * i)
        if low & 1:
            out[i] = {"type": "io", "address": low & ~0x3, "is_64bit": False, "prefetchable": False, "raw": low}
            i += 1
            continue
        is_64 = (low >> 1) & 3 == 2
        address = low & ~0xF
        if is_64:
            address |= u32(cfg, 0x10 + 4 * (i + 1)) << 32
        out[i] = {"type": "mem", "address": address, "is_64bit": is_64, "prefetchable": bool(low & 8), "raw": low}
        i += 2 if is_64 else 1
    return out


def find_cap(cfg: bytes, cap_id: int) -> int:
    pos, seen = cfg[0x34] & ~3 if cfg[0x06] & 0x10 else 0, set()
    while pos and pos not in seen and pos < 0x100:
        seen.add(pos)
        if cfg[pos] == cap_id:
            return pos
        pos = cfg[pos + 1] & ~3
    return 0


def find_ext_cap(cfg: bytes, cap_id: int) -> int:
    pos, seen = 0x100, set()
    while len(cfg) > 0x100 and pos and pos not in seen:
        seen.add(pos)
        header = u32(cfg, pos)
        if header in (0, 0xFFFFFFFF):
            return 0
        if header & 0xFFFF == cap_id:
            return pos
        pos = header >> 20
    return 0


def lspci_blocks(truth_dir: Path) -> dict[str, list[str]]:
    """lspci -vvv -nn blocks by bus:dev.fn (lspci leaves out domain 0000)."""
    path = truth_dir / "lspci-vvv-nn.txt"
    if not path.exists():
        return {}
    blocks: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ", line):
            current = m.group(1)
            blocks[current] = [line]
        elif current and line.startswith("\t"):
            blocks[current].append(line)
    return blocks


def short(bdf: str) -> str:
    return bdf[5:] if bdf.startswith("0000:") else bdf


# --- BARs, IRQ, ids, capabilities --------------------------------------------------------------

def test_bars_match_config_space(case):
    _d, tree, truth, _dir = case
    checked = 0
    for dev in tree:
        cfg = config(truth[dev.bdf])
        bars = config_bars(cfg)
        kernel = {r.index: r for r in dev.bars}
        for index, res in kernel.items():
            assert index in bars, (dev.bdf, index)
            gt = bars[index]
            assert res.type == gt["type"], (dev.bdf, index)
            if res.type == "mem":
                assert (res.is_64bit, res.prefetchable) == (gt["is_64bit"], gt["prefetchable"]), (dev.bdf, index)
            if not res.unset:
                assert res.start == gt["address"], (dev.bdf, index, hex(res.start), hex(gt["address"]))
                assert res.size > 0 and res.size & (res.size - 1) == 0, (dev.bdf, index, res.size)
                assert res.start % res.size == 0, (dev.bdf, index)       # BARs are naturally aligned
            checked += 1
        # every BAR the device decodes is in the kernel's resources (64-bit upper halves excepted)
        for index, gt in bars.items():
            if gt["raw"] & ~0xF or gt["type"] == "io" and gt["raw"] & ~0x3:
                assert index in kernel, (dev.bdf, index)
    assert checked >= 5


def test_bar_sizes_types_and_windows_match_lspci(case):
    """The detail view's Region, Expansion ROM, bridge window, Bus, Interrupt, IOMMU group and
    driver lines equal lspci -vv's (lspci's [disabled]/[virtual] and window [NN-bit] notes
    come from live config space and are left out of the comparison)."""
    _d, tree, _truth, truth_dir = case
    blocks = lspci_blocks(truth_dir)
    if not blocks:
        pytest.skip("no lspci -vvv in this ground truth (capture kernel)")
    assert set(blocks) == {short(d.bdf) for d in tree}
    compared = 0
    prefixes = ("\tRegion ", "\tExpansion ROM", "\tI/O behind", "\tMemory behind", "\tPrefetchable memory behind",
                "\tInterrupt:", "\tIOMMU group:", "\tKernel driver in use:")

    def norm(line: str) -> str:
        line = line.replace(" [virtual]", "")
        if "behind bridge" in line:
            line = re.sub(r" \[(16|32|64)-bit\]$", "", line)
        elif line.startswith("\tRegion"):
            line = line.replace(" [disabled]", "")
        return line

    for dev in tree:
        ours = device_text(dev).splitlines()
        theirs = blocks[short(dev.bdf)]
        theirs_lines = [norm(x) for x in theirs if x.startswith(prefixes) and not x.endswith("bridge: [disabled]")]
        assert [norm(x) for x in ours if x.startswith(prefixes)] == theirs_lines, dev.bdf
        bus = next((x for x in theirs if x.startswith("\tBus: ")), None)
        if bus:
            ours_bus = next(x for x in ours if x.startswith("\tBus: "))
            assert bus.startswith(ours_bus), dev.bdf
        compared += len(theirs_lines)
    assert compared > 3 * len(tree)


def test_header_and_subsystem_numbers_match_lspci(case):
    _d, tree, _truth, truth_dir = case
    blocks = lspci_blocks(truth_dir)
    if not blocks:
        pytest.skip("no lspci -vvv in this ground truth (capture kernel)")
    numbers = re.compile(r"\[[0-9a-f]{4}(?::[0-9a-f]{4})?\]|\(rev [0-9a-f]{2}\)|\(prog-if [0-9a-f]{2}")
    for dev in tree:
        ours, theirs = device_text(dev).splitlines(), blocks[short(dev.bdf)]
        assert numbers.findall(ours[0]) == numbers.findall(theirs[0]), dev.bdf
        sub = [numbers.findall(x) for x in theirs if x.startswith("\tSubsystem:")]
        assert [numbers.findall(x) for x in ours if x.startswith("\tSubsystem:")] == sub, dev.bdf


def test_irq_matches_sysfs(case):
    _d, tree, truth, _dir = case
    for dev in tree:
        assert dev.irq == int(truth[dev.bdf]["sysfs"]["irq"]), dev.bdf
        assert dev.interrupt_pin == config(truth[dev.bdf])[0x3D], dev.bdf


def test_ids_match_config_space(case):
    _d, tree, truth, _dir = case
    for dev in tree:
        cfg = config(truth[dev.bdf])
        assert (dev.vendor, dev.device) == struct.unpack_from("<HH", cfg, 0), dev.bdf
        assert dev.revision == cfg[0x08] and dev.class_code == int.from_bytes(cfg[0x09:0x0C], "little"), dev.bdf
        sysfs = truth[dev.bdf]["sysfs"]
        assert (dev.subsystem_vendor, dev.subsystem_device) == \
            (int(sysfs["subsystem_vendor"], 16), int(sysfs["subsystem_device"], 16)), dev.bdf


def test_capability_offsets_match_config_space(case):
    _d, tree, truth, _dir = case
    for dev in tree:
        cfg = config(truth[dev.bdf])
        assert dev.pcie_cap == find_cap(cfg, 0x10), dev.bdf
        if dev.pcie_cap:
            flags = struct.unpack_from("<H", cfg, dev.pcie_cap + 2)[0]
            assert dev.pcie_cap_version == flags & 0xF, dev.bdf
            assert dev.devcap == u32(cfg, dev.pcie_cap + 4), dev.bdf
        assert dev.aer_cap == find_ext_cap(cfg, 0x01), dev.bdf


def test_link_speed_matches_sysfs(case):
    """The kernel's cached speed of each function's link equals what sysfs read from Link
    Status in the guest; functions without a link the kernel caches have none in sysfs
    (or "Unknown"), except upstream-facing functions on a root bus (a PCIe-to-PCI bridge
    there has Link registers, but no bridge above it whose bus would cache the speed)."""
    _d, tree, truth, _dir = case
    linked = uncached = 0
    for dev in tree:
        sysfs = truth[dev.bdf]["sysfs"].get("current_link_speed")
        if dev.link_speed is not None:
            assert dev.link_speed == sysfs, dev.bdf
            linked += 1
        elif dev.parent is None and dev.pcie_port_type not in ("root_port", "downstream_port"):
            uncached += sysfs not in (None, "Unknown")
        else:
            assert sysfs in (None, "Unknown"), (dev.bdf, sysfs)
    assert linked + uncached == sum(gt["sysfs"].get("current_link_speed") not in (None, "Unknown")
                                    for gt in truth.values())


def test_saved_state_matches_config_space(case):
    """What pci_save_state() saved: the ids and BARs of the header, and the AER masks and
    severities, equal the registers the guest read (drivers do not move BARs or AER masks
    after probing); the PCIe control registers are those of the same capability."""
    _d, tree, truth, _dir = case
    saved = 0
    for dev in tree:
        if dev.saved_config is None:
            assert not dev.state_saved and dev.saved_pcie is None and dev.saved_aer is None, dev.bdf
            continue
        cfg = config(truth[dev.bdf])
        live = list(struct.unpack_from("<16I", cfg, 0))
        bar_dwords = {0: range(4, 10), 1: range(4, 6)}.get(dev.header_type, range(0))
        assert dev.saved_config[0] == live[0], dev.bdf
        assert [dev.saved_config[i] for i in bar_dwords] == [live[i] for i in bar_dwords], dev.bdf
        if dev.header_type == 1:
            assert dev.saved_config[6] & 0xFFFFFF == live[6] & 0xFFFFFF, dev.bdf     # bus numbers
        assert dev.saved_status == dev.saved_config[1] >> 16
        if dev.aer_cap and dev.saved_aer:
            a = dev.aer_cap
            assert dev.saved_aer["uncor_mask"] == u32(cfg, a + 0x08), dev.bdf
            assert dev.saved_aer["uncor_severity"] == u32(cfg, a + 0x0C), dev.bdf
            assert dev.saved_aer["cor_mask"] == u32(cfg, a + 0x14), dev.bdf
            assert dev.saved_aer["cap_control"] & ~0x1F == u32(cfg, a + 0x18) & ~0x1F, dev.bdf
        if dev.pcie_cap:
            assert set(dev.saved_pcie) == {"devctl", "lnkctl", "sltctl", "rtctl", "devctl2", "lnkctl2", "sltctl2"}
        saved += 1
    assert saved >= 2     # at least the NIC and the NVMe controller, whose drivers saved their state


def test_aer_counters_and_error_state(case):
    _d, tree, _truth, _dir = case
    for dev in tree:
        assert dev.error_state == "normal", dev.bdf
        if dev.aer_cap:
            assert dev.aer_correctable is not None and dev.aer_fatal is not None, dev.bdf
            assert sum(dev.aer_errors.values()) <= dev.aer_correctable + dev.aer_nonfatal + dev.aer_fatal
            assert (dev.aer_rootport_correctable is not None) == (dev.pcie_port_type == "root_port"), dev.bdf
        else:
            assert dev.aer_correctable is None, dev.bdf


def test_pci_dev_address_is_the_kernel_object(case):
    d, tree, _truth, _dir = case
    for dev in tree:
        pdev = drgn.Object(d.prog, "struct pci_dev *", dev.pdev_address)
        assert dev_name(pdev.dev.address_of_()).decode() == dev.bdf
        assert pdev.vendor.value_() == dev.vendor


def test_nothing_unknown_on_these_kernels(case):
    _d, tree, _truth, _dir = case
    assert {d.bdf: d.unknown for d in tree if d.unknown} == {}
    assert tree.errors == []


# --- renderers ---------------------------------------------------------------------------------

def _structure(text: str) -> list[str]:
    """lspci -tv lines without the names after each dev.fn (and without dumpkit's marks)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"  \[[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\b.*$", "", line.rstrip())
        out.append(re.sub(r"([0-9a-f]{2}\.[0-7])  .*$", r"\1", line))
    return out


def test_tree_has_the_shape_of_lspci_tv(case):
    _d, tree, _truth, truth_dir = case
    path = truth_dir / "lspci-tv.txt"
    if not path.exists():
        pytest.skip("no lspci -tv in this ground truth (capture kernel)")
    truth = [line for line in path.read_text().splitlines() if not line.startswith("lspci:")]
    assert _structure(tree_text(tree, marks=False)) == _structure("\n".join(truth))
    assert _structure(tree_text(tree)) == _structure("\n".join(truth))
    # each leaf line names the function as lspci -tv does (vendor and device, never cut)
    ours = tree_text(tree, marks=False).splitlines()
    for dev in tree:
        if not dev.is_bridge:
            assert sum(line.endswith(f"{dev.slot:02x}.{dev.function:x}  {lspci_name(dev)}") for line in ours) >= 1


def test_tree_marks_dma_capable_functions_with_their_bdf(case):
    _d, tree, _truth, _dir = case
    text = tree_text(tree)
    lines = text.splitlines()
    for dev in tree:
        if not dev.is_bridge:
            line = next(x for x in lines if f"[{dev.bdf}" in x)
            assert ("<DMA" in line) == bool(dev.could_dma), dev.bdf
            if dev.driver:
                assert f"[{dev.bdf} {dev.driver}]" in line
    assert sum("<DMA" in line for line in lines) == sum(bool(d.could_dma) for d in tree)


def test_json_keeps_numbers_and_adds_hex(case):
    _d, tree, _truth, _dir = case
    data = json.loads(to_json(tree))
    assert [r["bdf"] for r in data["devices"]] == [d.bdf for d in tree]
    assert "link_width" in data["not_in_dump"]
    for rec, dev in zip(data["devices"], tree, strict=True):
        for name, digits in HEX_FIELDS.items():
            value = getattr(dev, name)
            assert rec[name] == value, (dev.bdf, name)
            assert rec[f"{name}_hex"] == (None if value is None else f"0x{value:0{digits}x}"), (dev.bdf, name)
        assert int(rec["vendor_hex"], 16) == rec["vendor"] and int(rec["pdev_address_hex"], 16) == dev.pdev_address
        assert rec["vendor_name"] == dev.vendor_name and rec["device_name"] == dev.device_name   # whole names
        for r, res in zip(rec["resources"], dev.resources, strict=True):
            assert (r["start"], r["end"], r["size"], r["flags"]) == (res.start, res.end, res.size, res.flags)
            assert int(r["start_hex"], 16) == res.start and int(r["flags_hex"], 16) == res.flags
        if dev.saved_config is not None:
            assert [int(x, 16) for x in rec["saved_config_hex"]] == dev.saved_config


def test_frames_never_cut_names(case):
    _d, tree, _truth, _dir = case
    frame = to_frame(tree)
    assert list(frame.index) == [d.bdf for d in tree]
    for dev in tree:
        row = frame.loc[dev.bdf]
        for col in ("vendor_name", "device_name", "subsystem_vendor_name", "class_name"):
            value = getattr(dev, col)
            assert (row[col] == value) if value is not None else (row[col] is None or row[col] != row[col])
        assert int(row["pdev_address"]) == dev.pdev_address and row["vendor_hex"] == f"0x{dev.vendor:04x}"
    csv = frame.to_csv()
    assert all(d.device_name in csv for d in tree if d.device_name)
    res = resources_frame(tree)
    assert len(res) == sum(len(d.resources) for d in tree)
    assert set(res["kind"]) <= {"bar", "rom", "vf_bar", "window", "other"}


def test_detail_view_covers_every_function(case):
    _d, tree, _truth, _dir = case
    text = detail_text(tree)
    for dev in tree:
        assert f"\n{dev.bdf} " in f"\n{text}"
        assert f"struct pci_dev: {dev.pdev_address:#x}" in text
    assert "Not in a dump" in text and "link_width" in text
    one = detail_text(tree, [tree.devices[0].bdf])
    assert one.startswith(tree.devices[0].bdf) and tree.devices[-1].bdf not in one


# --- probes, pci.ids, imports ------------------------------------------------------------------

def test_layout_is_probed_once_per_program(case):
    d, _tree, _truth, _dir = case
    layout = pci_layout(d.prog)
    assert d.prog.cache[LAYOUT_CACHE_KEY] is layout
    collect_pci(d.prog)
    assert pci_layout(d.prog) is layout
    assert layout.has("resource") and layout.n_resources >= 11 and layout.bridge_index in (7, 13)


def _full_parse(text: str) -> tuple[dict, dict, dict]:
    """A plain whole-file parse of pci.ids: the reference for the lazy lookups."""
    vendors, devices, subsystems = {}, {}, {}
    vendor = device = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if not line.startswith("\t"):
            m = re.match(r"([0-9a-f]{4})\s+(.*)", line)
            vendor = int(m.group(1), 16) if m else None
            if m:
                vendors[vendor] = m.group(2).strip()
        elif vendor is not None and not line.startswith("\t\t"):
            code, name = line.strip().split(None, 1)
            device = int(code, 16)
            devices[(vendor, device)] = name
        elif vendor is not None:
            sv, sd, name = line.strip().split(None, 2)
            subsystems[(vendor, device, int(sv, 16), int(sd, 16))] = name
    return vendors, devices, subsystems


SMALL_IDS = """# test pci.ids
8086  Intel Corporation
\t10d3  82574L Gigabit Network Connection
\t\t8086 a01f  Gigabit CT Desktop Adapter
\t\t8086 0000  Some Subsystem
\t29c0  82G33/G31/P35/P31 Express DRAM Controller
\t\t1af4 1100  QEMU Virtual Machine
1af4  Red Hat, Inc.
\t1041  Virtio 1.0 network device
# a comment between vendors
1b36  Red Hat, Inc.
\t000c  QEMU PCIe Root port
S 1af4
\t1100  Generic QEMU subsystem
C 02  Network controller
\t00  Ethernet controller
C 06  Bridge
\t04  PCI bridge
\t\t00  Normal decode
"""


def test_pci_ids_index_is_cached_and_lookups_are_lazy(tmp_path, monkeypatch):
    monkeypatch.setenv("DUMPKIT_CACHE", str(tmp_path / "cache"))
    ids_file = tmp_path / "pci.ids"
    ids_file.write_text(SMALL_IDS)
    first = PciIds(str(ids_file))
    assert first.vendor(0x8086) == "Intel Corporation" and first.index_source == "built"
    assert len(list(cache_dir().glob("*.json"))) == 1
    second = PciIds(str(ids_file))
    assert second.vendor(0x1af4) == "Red Hat, Inc." and second.index_source == "cache"
    assert second.loaded_vendors == []                              # vendor names come from the index
    assert second.device(0x8086, 0x10d3) == "82574L Gigabit Network Connection"
    assert second.loaded_vendors == [0x8086]                        # only the block asked for was read
    assert second.subsystem(0x8086, 0x10d3, 0x8086, 0xA01F) == "Gigabit CT Desktop Adapter"
    assert second.subsystem(0x8086, 0x29c0, 0x1af4, 0x1100) == "QEMU Virtual Machine"
    assert second.subsystem(0x1b36, 0x000c, 0x1af4, 0x1100) == "Generic QEMU subsystem"   # S block
    assert second.subsystem(0x1af4, 0x1041, 0x1af4, 0x1041) == "Virtio 1.0 network device"  # same ids
    assert second.subsystem(0x1b36, 0x000c, 0x1b36, 0x0000) is None
    assert second.device(0x8086, 0x1234) is None and second.vendor(0x1234) is None
    assert second.class_name(0x020000) == "Ethernet controller"
    assert second.class_name(0x060400) == "PCI bridge (Normal decode)"
    assert second.class_name(0x067700) == "Bridge"
    # the key is path + mtime + size: a changed file gets a new index
    ids_file.write_text(SMALL_IDS.replace("82574L", "82574L (changed)"))
    os.utime(ids_file, ns=(1, 1))
    third = PciIds(str(ids_file))
    assert third.device(0x8086, 0x10d3) == "82574L (changed) Gigabit Network Connection"
    assert third.index_source == "built" and len(list(cache_dir().glob("*.json"))) == 2


def test_pci_ids_index_survives_an_unwritable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DUMPKIT_CACHE", str(blocker))           # a file: the cache dir cannot be made
    ids_file = tmp_path / "pci.ids"
    ids_file.write_text(SMALL_IDS)
    ids = PciIds(str(ids_file))
    assert ids.device(0x1b36, 0x000c) == "QEMU PCIe Root port" and ids.index_source == "built"


@pytest.mark.skipif(not Path("/usr/share/misc/pci.ids").exists(), reason="no system pci.ids")
def test_lazy_lookups_equal_a_full_parse_of_the_system_pci_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("DUMPKIT_CACHE", str(tmp_path))
    path = "/usr/share/misc/pci.ids"
    vendors, devices, subsystems = _full_parse(Path(path).read_text(errors="replace"))
    ids = PciIds(path)
    assert all(ids.vendor(v) == name for v, name in vendors.items())
    assert all(ids.device(v, d) == name for (v, d), name in devices.items())
    assert all(ids.subsystem(*key) == name for key, name in list(subsystems.items())[::7])
    again = PciIds(path)
    again.device(0x8086, 0x10d3)
    assert again.index_source == "cache" and again.loaded_vendors == [0x8086]


def test_collection_and_text_rendering_import_no_pandas_or_matplotlib():
    code = ("import sys, dumpkit\n"
            f"d = dumpkit.open({str(dump_path(DUMPS[0]))!r})\n"
            "from dumpkit.pci.render import tree_text, detail_text, to_json\n"
            "t = d.pci(); tree_text(t); detail_text(t); to_json(t)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'matplotlib')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the command line: dumpkit pci --tree and -v -------------------------------------------------

def _cli_cases() -> list[tuple[str, Path, Path]]:
    """A committed first-kernel sample and, when present, one stock-kernel sample of the cache."""
    out = []
    for id_, dump, truth in CASES:
        if isinstance(dump, dict):
            if dump["kind"] == "first-kernel vmcore" and not out:
                out.append((id_, dump_path(dump), truth))
        elif len(out) < 2 and (truth / "lspci-tv.txt").exists():
            out.append((id_, dump, truth))
    return out


CLI_CASES = _cli_cases()


def run_pci(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", "pci", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module", params=CLI_CASES, ids=[c[0] for c in CLI_CASES])
def cli_case(request):
    _id, dump, truth_dir = request.param
    return dump, collect_pci(dumpkit.open(dump).prog), truth_dir


def test_cli_tree_has_the_shape_of_lspci_tv(cli_case):
    dump, tree, truth_dir = cli_case
    for flags in (["--tree"], ["-t", "-v"], []):
        r = run_pci(dump, *flags)
        assert r.returncode == 0 and r.stderr == "", (flags, r.stderr)
        assert r.stdout == tree_text(tree) + "\n"
    truth = [x for x in (truth_dir / "lspci-tv.txt").read_text().splitlines() if not x.startswith("lspci:")]
    assert _structure(r.stdout) == _structure("\n".join(truth))
    assert r.stdout.startswith("-[0000:00]-+-00.0  ")


def test_cli_verbose_is_one_lspci_block_per_function(cli_case):
    dump, tree, truth_dir = cli_case
    r = run_pci(dump, "-v")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    modules = kernel_modules(dumpkit.open(dump).prog, tree).by_bdf      # -v ends blocks as lspci -v: driver, modules
    assert r.stdout == detail_text(tree, modules=modules) + "\n"
    blocks = {b.split(" ", 1)[0]: b for b in r.stdout.split("\n\n") if re.match(r"[0-9a-f]{4}:", b)}
    assert list(blocks) == [d.bdf for d in tree]
    theirs = lspci_blocks(truth_dir)
    numbers = re.compile(r"\[[0-9a-f]{4}(?::[0-9a-f]{4})?\]|\(rev [0-9a-f]{2}\)")
    for dev in tree:
        block = blocks[dev.bdf].splitlines()
        assert numbers.findall(block[0]) == numbers.findall(theirs[short(dev.bdf)][0]), dev.bdf
        assert f"\tstruct pci_dev: {dev.pdev_address:#x}" in block
        regions = [x for x in theirs[short(dev.bdf)] if x.startswith("\tRegion ")]
        assert [x for x in block if x.startswith("\tRegion ")] == [x.replace(" [disabled]", "").replace(
            " [virtual]", "") for x in regions], dev.bdf
        drivers = [x for x in theirs[short(dev.bdf)] if x.startswith("\tKernel driver in use:")]
        assert [x for x in block if x.startswith("\tKernel driver in use:")] == drivers, dev.bdf


def test_cli_verbose_selects_slots(cli_case):
    dump, tree, _truth_dir = cli_case
    ep = next(d for d in tree if d.driver and not d.is_bridge)
    modules = kernel_modules(dumpkit.open(dump).prog, tree).by_bdf
    for slot in (ep.bdf, short(ep.bdf), short(ep.bdf).upper()):
        r = run_pci(dump, "-v", "-s", slot)
        assert r.returncode == 0, r.stderr
        assert r.stdout == detail_text(tree, [ep.bdf], modules=modules) + "\n"
    bus = short(ep.bdf).split(":")[0] + ":"
    r = run_pci(dump, "-v", "-s", bus)
    assert r.stdout.count("\tstruct pci_dev: ") == sum(d.bdf.startswith(f"0000:{bus}") for d in tree)
    r = run_pci(dump, "-v", "-s", "ff:1f.7")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")      # as lspci: no match, no output


@pytest.mark.parametrize("flags", [["-v", "--json"], ["-v", "--csv"], ["-v", "-s", "zz"], ["-n", "--csv"],
                                   ["--tree", "-k"]])
def test_cli_verbose_option_conflicts_exit_2(flags):
    r = run_pci(dump_path(DUMPS[0]), *flags)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("dumpkit: error: ") and len(r.stderr.splitlines()) == 1
