"""Corrupted dumps built at test time from the samples: one page of a chosen kernel object
made undecompressable (found through the dump's own page descriptors), damaged headers,
foreign files in a batch. Each case asserts the documented outcome: an exit code of the
documented set, no traceback, the input untouched, and no plausible wrong answer: the
claims that depended on the damaged object are unknown naming its page, the others are
what the undamaged dump gives."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import drgn
import pytest
from conftest import SAMPLES, cached_dump, cached_samples, sha256
from drgn.helpers.linux.mm import follow_phys
from kdump_damage import damage_page

import dumpkit
from dumpkit.errors import EXIT_CODES
from dumpkit.target.walk import bounded_list, pci_devices
from dumpkit.verdict import judge

SAMPLE = SAMPLES / "nocopy-fault"
CLAIMS = ("could_dma", "did_dma_after_crash", "hit_capture_kernel", "stopped_by_reset")
COMMANDS = {"info": ["info"], "pci": ["pci"], "iommu": ["iommu"], "verdict": ["verdict"],
            "verdict-json": ["verdict", "--json"]}
PAGE = 4096


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_clean(r: subprocess.CompletedProcess) -> None:
    """A documented exit code, no traceback, and a failure is one line on stderr (a batch
    that exits 1 has one line per failed input instead)."""
    assert r.returncode in EXIT_CODES, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if r.returncode not in (0, 1):
        errors = [x for x in r.stderr.splitlines() if x.startswith("dumpkit: error: ")]
        assert len(errors) == 1, r.stderr


# -- where the objects are ----------------------------------------------------------------


def phys_of(prog: drgn.Program, addr: int) -> int:
    """Physical address of a kernel virtual address, through the dump's page tables."""
    return follow_phys(prog["init_mm"].address_of_(), addr).value_()


def by_driver(prog: drgn.Program, driver: str) -> tuple[str, drgn.Object]:
    for name, pdev in pci_devices(prog)[0]:
        drv = pdev.dev.driver
        if drv and drv.name.string_().decode() == driver:
            return name, pdev
    raise LookupError(driver)


@dataclass
class Damage:
    """A damage class: the physical address to damage and the claims ((bdf, claim)) that
    depend on it, found in the undamaged dump."""

    phys: int
    depends: set[tuple[str, str]]


def _translated(baseline) -> list[str]:
    """Endpoints whose could-DMA claim rests on the IOMMU's translation tables."""
    return [e.bdf for e in baseline.endpoints if any("table" in s for s in e.could_dma.sources)]


def loc_root_table(prog, baseline) -> Damage:
    from dumpkit.iommu.vtd.units import collect_units

    root = collect_units(prog)[0].root_table
    return Damage(root, {(b, "could_dma") for b in _translated(baseline)})


def loc_context_table(prog, baseline) -> Damage:
    from dumpkit.iommu.vtd.units import collect_units

    unit = collect_units(prog)[0]
    nic, _ = by_driver(prog, "e1000e")
    bus = int(nic[5:7], 16)
    lo, = struct.unpack_from("<Q", prog.read(unit.root_table + bus * 16, 8, True))
    ctx = lo & ~0xFFF & ((1 << 52) - 1)
    return Damage(ctx, {(e.bdf, "could_dma") for e in baseline.endpoints
                        if e.bdf[5:7] == nic[5:7] and e.bdf in _translated(baseline)})


def loc_iova_table(prog, baseline) -> Damage:
    """The last-level page table holding the NIC's first mapping."""
    from dumpkit.iommu.collect import collect_iommu

    nic, _ = by_driver(prog, "e1000e")
    state = collect_iommu(dumpkit.open(SAMPLE / "vmcore.kdump"))
    leaf = state.mapping(nic).leaves[0]
    table = leaf.path[-2] & ~0xFFF & ((1 << 52) - 1)
    sharing = [m.device for m in state.mappings if any(x.path[-2] & ~0xFFF & ((1 << 52) - 1) == table
                                                       for x in m.leaves)]
    return Damage(table, {(b, "could_dma") for b in sharing})


def loc_intel_iommu(prog, baseline) -> Damage:
    head = prog["dmar_drhd_units"]
    drhd = next(iter(bounded_list(head.address_of_(), "struct dmar_drhd_unit", "list", "units")))
    return Damage(phys_of(prog, drhd.iommu.value_()), {(b, "could_dma") for b in _translated(baseline)})


def loc_drhd(prog, baseline) -> Damage:
    head = prog["dmar_drhd_units"]
    drhd = next(iter(bounded_list(head.address_of_(), "struct dmar_drhd_unit", "list", "units")))
    return Damage(phys_of(prog, drhd.value_()), {(b, "could_dma") for b in _translated(baseline)})


def _all_claims(bdfs) -> set[tuple[str, str]]:
    return {(b, c) for b in bdfs for c in CLAIMS}


def _pci_devs_in_page(prog, page: int) -> list[str]:
    return [name for name, pdev in pci_devices(prog)[0] if phys_of(prog, pdev.value_()) & ~0xFFF == page]


def loc_nic_pci_dev(prog, baseline) -> Damage:
    _nic, pdev = by_driver(prog, "e1000e")
    phys = phys_of(prog, pdev.value_())
    return Damage(phys, _all_claims(_pci_devs_in_page(prog, phys & ~0xFFF)))


def loc_nic_pci_bus(prog, baseline) -> Damage:
    _nic, pdev = by_driver(prog, "e1000e")
    phys = phys_of(prog, pdev.bus.value_())
    on = [name for name, p in pci_devices(prog)[0] if phys_of(prog, p.bus.value_()) & ~0xFFF == phys & ~0xFFF
          or phys_of(prog, p.value_()) & ~0xFFF == phys & ~0xFFF]
    return Damage(phys, _all_claims(on))


def _nic_ring(prog):
    from dumpkit.rings.e1000e import e1000e_adapter

    _nic, pdev = by_driver(prog, "e1000e")
    return e1000e_adapter(prog, pdev)[1]


def _did(prog, driver: str) -> set[tuple[str, str]]:
    name, _ = by_driver(prog, driver)
    return {(name, "did_dma_after_crash")}


def loc_rx_descriptors(prog, baseline) -> Damage:
    return Damage(phys_of(prog, _nic_ring(prog).rx_ring.desc.value_()), _did(prog, "e1000e"))


def loc_e1000_ring(prog, baseline) -> Damage:
    return Damage(phys_of(prog, _nic_ring(prog).rx_ring.value_()), _did(prog, "e1000e"))


def loc_e1000_adapter(prog, baseline) -> Damage:
    return Damage(phys_of(prog, _nic_ring(prog).value_()), _did(prog, "e1000e"))


def loc_nvme_queue(prog, baseline) -> Damage:
    _name, pdev = by_driver(prog, "nvme")
    dev = drgn.cast("struct nvme_dev *", pdev.dev.driver_data)
    return Damage(phys_of(prog, dev.queues.value_()), _did(prog, "nvme"))


def loc_nvme_cq(prog, baseline) -> Damage:
    _name, pdev = by_driver(prog, "nvme")
    dev = drgn.cast("struct nvme_dev *", pdev.dev.driver_data)
    return Damage(phys_of(prog, dev.queues[0].cqes.value_()), _did(prog, "nvme"))


def _virtio_net(prog) -> tuple[str, drgn.Object]:
    """The virtio function whose IOMMU translates it (the virtio-net of the sample)."""
    for name, pdev in pci_devices(prog)[0]:
        drv = pdev.dev.driver
        if drv and drv.name.string_().decode() == "virtio-pci":
            vp = drgn.cast("struct virtio_pci_device *", pdev.dev.driver_data)
            if vp.vdev.features.value_() >> 33 & 1:
                return name, vp
    raise LookupError("virtio")


def loc_virtio_used(prog, baseline) -> Damage:
    name, vp = _virtio_net(prog)
    vq = next(iter(bounded_list(vp.vdev.vqs.address_of_(), "struct virtqueue", "list", "vqs")))
    vvq = drgn.container_of(vq, prog.type("struct vring_virtqueue"), "vq")
    return Damage(phys_of(prog, vvq.split.vring.used.value_()), {(name, "did_dma_after_crash")})


def loc_nic_driver(prog, baseline) -> Damage:
    """The e1000e's struct pci_driver (module data): every function whose driver lives in
    that page loses whether a driver is bound, and with it what it could and did do."""
    _nic, pdev = by_driver(prog, "e1000e")
    page = phys_of(prog, pdev.driver.value_()) & ~0xFFF
    hit = [name for name, p in pci_devices(prog)[0] if p.driver and phys_of(prog, p.driver.value_()) & ~0xFFF == page]
    return Damage(phys_of(prog, pdev.driver.value_()),
                  {(b, c) for b in hit for c in ("could_dma", "did_dma_after_crash")})


def loc_printk(prog, baseline) -> Damage:
    return Damage(phys_of(prog, prog["prb"].text_data_ring.data.value_()), set())


def loc_pci_root_buses(prog, baseline) -> Damage:
    return Damage(phys_of(prog, prog["pci_root_buses"].address_of_().value_()), set())


TINY: dict[str, Callable] = {
    "vtd-root-table": loc_root_table, "vtd-context-table": loc_context_table, "iova-page-table": loc_iova_table,
    "intel-iommu": loc_intel_iommu, "dmar-drhd-unit": loc_drhd, "nic-pci-dev": loc_nic_pci_dev,
    "nic-pci-bus": loc_nic_pci_bus, "e1000e-rx-descriptors": loc_rx_descriptors, "e1000-ring": loc_e1000_ring,
    "e1000-adapter": loc_e1000_adapter, "nvme-queue": loc_nvme_queue, "nvme-completion-queue": loc_nvme_cq,
    "virtio-used-ring": loc_virtio_used, "nic-pci-driver": loc_nic_driver, "printk-ring": loc_printk, "pci-root-buses": loc_pci_root_buses,
}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline():
    """The undamaged sample judged in-process (claims with their sources) and its verdict --json."""
    dump = dumpkit.open(SAMPLE / "vmcore.kdump")
    v = judge(dump, [SAMPLE / "capture-dmesg.txt"])
    r = run_cli("verdict", "--json", str(SAMPLE / "vmcore.kdump"))
    assert r.returncode == 0, r.stderr
    return dump.prog, v, json.loads(r.stdout)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, baseline):
    """name -> (damaged copy with the capture log beside it, Damage); built once each."""
    prog, v, _js = baseline
    made: dict[str, tuple[Path, Damage]] = {}
    before = sha256(SAMPLE / "vmcore.kdump")

    def get(name: str) -> tuple[Path, Damage]:
        if name not in made:
            d = TINY[name](prog, v)
            out = tmp_path_factory.mktemp(name)
            shutil.copy(SAMPLE / "capture-dmesg.txt", out / "capture-dmesg.txt")
            damage_page(SAMPLE / "vmcore.kdump", out / "vmcore.kdump", d.phys)
            made[name] = (out / "vmcore.kdump", d)
        return made[name]

    yield get
    assert sha256(SAMPLE / "vmcore.kdump") == before


@pytest.fixture(scope="module")
def results(damaged):
    """(name, command) -> CompletedProcess, each run once."""
    cache: dict = {}

    def get(name: str, command: str) -> subprocess.CompletedProcess:
        if (name, command) not in cache:
            path, _d = damaged(name)
            cache[name, command] = run_cli(*COMMANDS[command], str(path))
        return cache[name, command]

    return get


# -- damaged pages --------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("name", list(TINY))
def test_damaged_page_command(name, command, damaged, results):
    """Every command on every damaged page: a documented exit, no traceback, and where it
    says something about the damage, the page named."""
    path, d = damaged(name)
    before = sha256(path)
    r = results(name, command)
    assert_clean(r)
    assert sha256(path) == before
    if command == "verdict-json":
        assert r.returncode == 0
        json.loads(r.stdout)
    if command in ("iommu", "verdict") and name in ("vtd-root-table", "vtd-context-table", "iova-page-table"):
        assert f"{d.phys & ~0xFFF:#x}" in r.stdout + r.stderr
        # a fault of a device whose tables are lost is "unknown", never "had no mappings"
        assert "had no page-table mappings" not in r.stdout


def _claims(js: dict) -> dict[tuple[str, str], tuple]:
    return {(e["bdf"], c): (e[c], e[f"{c}_evidence"]) for e in js["endpoints"] for c in CLAIMS}


@pytest.mark.parametrize("name", list(TINY))
def test_no_plausible_wrong_answer(name, damaged, results, baseline):
    """The claims that read the damaged page are unknown and name it; every other claim is
    what the undamaged dump gives, or unknown naming the page where it follows from one that
    is (a function without a driver "did not DMA" because it "could not"); no endpoint
    vanishes."""
    _prog, _v, base_js = baseline
    _path, d = damaged(name)
    got_js = json.loads(results(name, "verdict-json").stdout)
    base, got = _claims(base_js), _claims(got_js)
    page = f"{d.phys & ~0xFFF:#x}"

    def unknown_naming_page(key) -> bool:
        return got[key][0] is None and "unreadable" in got[key][1] and page in got[key][1]

    def settled_otherwise(key) -> bool:
        """Independent evidence (an IOMMU fault the capture kernel logged from the device,
        DMA it did after the crash) gives the undamaged dump's answer; the lost page is
        still named among what the kernel's state could not say."""
        return got[key][0] is not None and got[key][0] == base[key][0] and page in got[key][1] \
            and ("(observed" in got[key][1] or "it did DMA after the crash" in got[key][1])

    lost = {b for b, _c in base if not any(k[0] == b for k in got)}
    for key, (value, _evidence) in base.items():
        if key[0] in lost:
            continue
        if key in d.depends:
            assert unknown_naming_page(key) or settled_otherwise(key), (key, got[key])
        elif got[key][0] != value:
            # "did a reset stop it" and "what did its DMA do to the capture kernel" become
            # applicable when "did it DMA" turns unknown: with no reset line / no fault where
            # the tables were not copied they say "no", which holds whatever the device did
            reset_now_applicable = (key[1] in ("stopped_by_reset", "hit_capture_kernel") and value is None
                                    and got[(key[0], "did_dma_after_crash")][0] is None
                                    and got[key][1].startswith(("no reset line", "no fault from it")))
            assert unknown_naming_page(key) or reset_now_applicable, (key, value, got[key])
    # pages where post-crash writes landed are never invented (untranslated IOVAs taken as
    # physical when the IOMMU state is lost)
    base_pages = {e["bdf"]: set(e["landed_pages"]) for e in base_js["endpoints"]}
    for e in got_js["endpoints"]:
        assert set(e["landed_pages"]) <= base_pages.get(e["bdf"], set()), e["bdf"]
    # a function whose struct pci_dev is lost is listed with unknown claims naming the page
    added = {k[0] for k in got} - {k[0] for k in base}
    assert len(added) == len(lost), (added, lost)
    assert lost <= {b for b, _c in d.depends}, lost
    for key in got:
        if key[0] in added:
            assert unknown_naming_page(key), (key, got[key])


@pytest.mark.parametrize("name", [n for n in TINY if n not in ("printk-ring", "pci-root-buses")])
def test_claims_name_what_they_read(name, damaged, baseline):
    """In the undamaged dump, each claim that depends on the damaged object lists among its
    sources something in the damaged page (an address in it, or the physical table)."""
    prog, v, _js = baseline
    _path, d = damaged(name)
    page = d.phys & ~0xFFF
    checked = 0
    for bdf, claim in d.depends:
        e = v.get(bdf)
        if e is None or claim not in ("could_dma", "did_dma_after_crash"):
            continue
        sources = getattr(e, claim).sources
        assert sources, (bdf, claim)
        assert any(_in_page(prog, s, page) for s in sources), (bdf, claim, sources, hex(page))
        checked += 1
    assert checked or not d.depends


def _in_page(prog, source: str, page: int) -> bool:
    """Whether a source's address ("... @0xffff..." or "@phys 0x...") lies in the page, or
    names a walk that read it."""
    if "@phys " in source:
        addr = int(source.split("@phys ")[1].split()[0], 16)
        if "page tables from root" in source:
            return True         # the walk read every table below its root
        return addr & ~0xFFF == page
    if "@" in source:
        addr = int(source.rsplit("@", 1)[1].split()[0], 16)
        try:
            return phys_of(prog, addr) & ~0xFFF == page
        except (drgn.FaultError, ValueError):
            return False
    return False


# -- triage: one batch of every damaged copy, foreign files and the good dump -------------------


@pytest.fixture(scope="module")
def triage_rows(tmp_path_factory, damaged):
    out = tmp_path_factory.mktemp("triage")
    text = out / "notes.txt"
    text.write_text("not a dump\n" * 100)
    noise = out / "noise.bin"
    noise.write_bytes(os.urandom(1 << 16))
    elf = out / "program"
    shutil.copy(sys.executable, elf)
    paths = [str(damaged(n)[0]) for n in TINY] + [str(SAMPLE / "vmcore.kdump"), str(text), str(noise), str(elf)]
    r = run_cli("triage", "--engine", "fork", "--jobs", "2", "--format", "jsonl", "-o", str(out / "t.jsonl"),
                *paths, timeout=900)
    assert_clean(r)
    assert r.returncode == 1           # the foreign files are failed inputs; nothing else
    rows = [json.loads(x) for x in (out / "t.jsonl").read_text().splitlines()]
    assert [row["path"] for row in rows] == paths
    return {row["path"]: row for row in rows}, paths


def test_triage_keeps_every_good_row(triage_rows):
    rows, paths = triage_rows
    for p in paths[:len(TINY) + 1]:
        assert rows[p]["status"] == "ok", rows[p]
        assert rows[p]["kind"] == "crash"


@pytest.mark.parametrize("which", ["text", "random bytes", "ELF program"])
def test_triage_foreign_file_is_its_own_kind(triage_rows, which):
    rows, paths = triage_rows
    row = rows[paths[len(TINY) + 1 + ["text", "random bytes", "ELF program"].index(which)]]
    assert row["kind"] == "not a dump" and row["status"] == "error", row
    assert row["error"].startswith("not a dump: "), row


@pytest.mark.parametrize("name", list(TINY))
def test_triage_row_keeps_unknowns(name, damaged, triage_rows):
    """A row never turns an unknown into 0 or "no": post-crash completions are None where a
    decoded ring was unreadable, and the unknown counts cover every claim that was lost."""
    rows, _paths = triage_rows
    good = rows[str(SAMPLE / "vmcore.kdump")]
    path, d = damaged(name)
    row = rows[str(path)]
    for column in ("could_dma", "dma_after_crash", "hit_capture_kernel", "stopped_by_reset"):
        assert row[column] + row[column + "_unknown"] >= good[column], (column, row, good)
    if any(claim == "did_dma_after_crash" for _b, claim in d.depends):
        assert row["post_crash_completions"] is None, row
        # unknown, unless the device's faults in the capture kernel show its DMA after the crash
        assert row["dma_after_crash_unknown"] > good["dma_after_crash_unknown"] or (
            row["faults"] and row["dma_after_crash"] == good["dma_after_crash"]), (row, good)
    else:
        assert row["post_crash_completions"] == good["post_crash_completions"]
    if d.depends:
        assert row["unreadable"] or any(row[c + "_unknown"] for c in ("could_dma", "dma_after_crash")), row


# -- damaged headers ----------------------------------------------------------------------


def _header_damage(src: Path, dst: Path, offset: int, data: bytes) -> None:
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(data)


HEADERS = {
    # disk_dump_header: signature, block_size (int @ 0x1ac), bitmap_blocks (@ 0x1b4), max_mapnr (@ 0x1b8)
    "signature": (0, b"XDUMP   "),
    "block-size-zero": (0x1AC, struct.pack("<i", 0)),
    "bitmap-blocks-huge": (0x1B4, struct.pack("<I", 0x7FFFFFFF)),
    "sub-header-size-huge": (0x1B0, struct.pack("<i", 0x7FFFFFFF)),
}


@pytest.mark.parametrize("command", ["info", "verdict"])
@pytest.mark.parametrize("field", list(HEADERS))
def test_damaged_header(field, command, tmp_path):
    """A damaged kdump header is an input error (exit 3) in one line, never a traceback."""
    offset, data = HEADERS[field]
    dst = tmp_path / "vmcore.kdump"
    _header_damage(SAMPLE / "vmcore.kdump", dst, offset, data)
    r = run_cli(command, str(dst))
    assert_clean(r)
    assert r.returncode == 3, r.stderr


# -- the stock kernel (module list) and AMD-Vi samples, when generated ---------------------------


def _cached(scenario: str) -> Path:
    """The cached scenario's first-kernel dump, whatever its kernel release and capture
    path; a skip locally when it is not generated, an error in CI."""
    root = cached_samples(scenario)
    if root is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"no {scenario} sample in the cache: scripts/setup generates it")
        pytest.skip(f"stock-kernel sample {scenario} not generated")
    return cached_dump(root, scenario)


def _damage_run(src: Path, phys: int, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    from dumpkit.kdump.capture import find_capture_logs

    for f in find_capture_logs(src) + list(src.parent.glob("capture-dmesg*")):
        shutil.copy(f, tmp_path / f.name)
    damage_page(src, tmp_path / src.name, phys)
    return run_cli(*args, str(tmp_path / src.name))


def test_damaged_module_list(tmp_path):
    """The e1000e module's struct module unreadable (drgn stops at it silently): the module
    list is shown cut at that page, and the claims that need the modules after it are
    unknown naming it, never "no DMA"."""
    src = _cached("distro-nocopy-fault")
    prog = dumpkit.open(src).prog
    mod = next(m for m in bounded_list(prog["modules"].address_of_(), "struct module", "list", "modules")
               if m.name.string_() == b"e1000e")
    phys = phys_of(prog, mod.value_())
    r = _damage_run(src, phys, tmp_path, "verdict", "--json")
    assert_clean(r)
    assert r.returncode == 0
    nic = next(e for e in json.loads(r.stdout)["endpoints"] if e["driver"] == "e1000e")
    # unknown, unless its faults in the capture kernel show its DMA after the crash
    assert nic["did_dma_after_crash"] is None or (nic["faults"] and nic["did_dma_after_crash"] is True), nic
    assert f"{phys & ~0xFFF:#x}" in nic["did_dma_after_crash_evidence"], nic
    info = run_cli("info", str(tmp_path / src.name))
    assert_clean(info)
    assert "module list" in info.stdout and f"{phys & ~0xFFF:#x}" in info.stdout


def _amd(tmp_path, what: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess, int]:
    from dumpkit.iommu.amd.units import collect_units

    src = _cached("amd-copied-traffic")
    prog = dumpkit.open(src).prog
    unit = collect_units(prog)[0]
    addr = unit.dev_table if what == "device table" else unit.evt_buf
    nic, _ = by_driver(prog, "e1000e")
    if what == "device table":
        bus, dev, fn = int(nic[5:7], 16), int(nic[8:10], 16), int(nic[11])
        addr += (bus << 8 | dev << 3 | fn) * 32     # the NIC's own entry
    phys = phys_of(prog, addr)
    r = _damage_run(src, phys, tmp_path, "verdict", "--json")
    (tmp_path / "iommu").mkdir()
    r2 = run_cli("iommu", str(tmp_path / src.name))
    return r, r2, phys


def test_amd_device_table_page(tmp_path):
    r, r_iommu, phys = _amd(tmp_path, "device table")
    assert_clean(r)
    assert_clean(r_iommu)
    nic = next(e for e in json.loads(r.stdout)["endpoints"] if e["driver"] == "e1000e")
    # what the IOMMU allowed it is lost; that it could DMA follows only from its DMA after the crash
    assert nic["could_dma"] is None or (nic["did_dma_after_crash"] is True and "it did DMA after the crash"
                                        in nic["could_dma_evidence"]), nic
    assert f"{phys & ~0xFFF:#x}" in nic["could_dma_evidence"], nic


def test_amd_event_log_page(tmp_path):
    """The event log lost: the IOMMU report says so naming the page; the verdict, which does
    not read it, is unchanged."""
    r, r_iommu, phys = _amd(tmp_path, "event log")
    assert_clean(r)
    assert_clean(r_iommu)
    assert r.returncode == 0 and r_iommu.returncode == 0
    assert "event log" in r_iommu.stdout and f"{phys & ~0xFFF:#x}" in r_iommu.stdout
    good = run_cli("verdict", "--json", str(_cached("amd-copied-traffic")))
    claims = {(e["bdf"], c): e[c] for e in json.loads(good.stdout)["endpoints"] for c in CLAIMS}
    assert {(e["bdf"], c): e[c] for e in json.loads(r.stdout)["endpoints"] for c in CLAIMS} == claims
