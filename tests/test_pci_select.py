"""`dumpkit pci` with lspci's selection and naming habits: -s and -d parsed as pciutils'
lib/filter.c parses them, -n/-nn/-k printed as lspci prints them, checked against the
guests' own `lspci -vvv -nn` on every committed sample (and the stock-kernel samples of
the cache, when present, for the "Kernel modules" line); no match is no output, exit 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIRST_KERNEL_DUMPS, REPO, SAMPLES, dump_id, dump_path

import dumpkit
from dumpkit import cli
from dumpkit.pci.select import FilterError, PciFilter, parse_id, parse_slot

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
HEX_IDS = re.compile(r" \[[0-9a-f]{4}(?::[0-9a-f]{4})?\]")


def main_pci(capsys, *args) -> tuple[int, str, str]:
    """The command line run in this process (cli.main, the same code as the dumpkit
    script): (exit code, stdout, stderr)."""
    code = cli.main(["pci", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def run_pci(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", "pci", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env={**os.environ, "DEBUGINFOD_URLS": ""})


# --- the filter grammar, as pciutils' lib/filter.c has it -------------------------------------

A = -1   # any
SLOTS = [   # expression -> (domain, bus, slot, func)
    ("2:0.0", (A, 2, 0, 0)), ("02:00.0", (A, 2, 0, 0)), ("0000:02:00.0", (0, 2, 0, 0)), ("02:", (A, 2, A, A)),
    (".1", (A, A, A, 1)), ("1f", (A, A, 0x1F, A)), ("1F.", (A, A, 0x1F, A)), ("0000:00:1f", (0, 0, 0x1F, A)),
    ("", (A, A, A, A)), ("*", (A, A, A, A)), ("*:*.*", (A, A, A, A)), (":", (A, A, A, A)), ("::", (A, A, A, A)),
    ("0x2:0x1.0x3", (A, 2, 1, 3)), ("0x:", (A, 0, A, A)), ("1:2:3.4", (1, 2, 3, 4)), ("7fffffff::", (0x7FFFFFFF, A, A, A)),
    ("00000000000000ff:", (A, 0xFF, A, A)),
    ("02:0x", (A, 2, 0, A)),                # "0x" alone is 0 once its prefix is skipped
    ("100000000:0:0", (0, 0, 0, A)),        # C's 32-bit arithmetic: nine digits wrap, pciutils accepts it
]
BAD_SLOTS = [
    ("20", "Invalid slot number"), ("100:", "Invalid bus number"), (".8", "Invalid function number"),
    ("80000000::", "Invalid domain number"), ("0:0:0:0", "Too many fields"), ("1.2.3", "Invalid slot/function number"),
    ("g", "Invalid slot number"), ("0:-1", "Invalid slot number"),
    ("x2:", "Invalid bus number"), ("0" * 64, "Expression too long"), ("٢:", "Invalid bus number"),
]
IDS = [   # expression -> (vendor, device, class, class mask, prog-if)
    ("8086:10d3", (0x8086, 0x10D3, A, 0xFFFFFFFF, A)), ("8086:", (0x8086, A, A, 0xFFFFFFFF, A)),
    (":10d3", (A, 0x10D3, A, 0xFFFFFFFF, A)), (":", (A, A, A, 0xFFFFFFFF, A)), ("*:*", (A, A, A, 0xFFFFFFFF, A)),
    ("::0200", (A, A, 0x0200, 0xFFFFFFFF, A)), ("::02xx", (A, A, 0x0200, 0xFFFFFF00, A)),
    ("::0x00", (A, A, 0, 0xFFFFF0FF, A)),   # in the class x is a wildcard digit, never a 0x prefix
    ("::0106:01", (A, A, 0x0106, 0xFFFFFFFF, 1)), ("0x8086:0X10d3", (0x8086, 0x10D3, A, 0xFFFFFFFF, A)),
]
BAD_IDS = [("8086", "At least two fields must be given"), ("1:2:3:4:5", "Too many fields"),
           ("10000:", "Invalid vendor ID"), (":1x", "Invalid device ID"), ("::10000", "Invalid class code"),
           ("::0106:100", "Invalid programming interface code")]


@pytest.mark.parametrize("text,want", SLOTS, ids=[s or "empty" for s, _ in SLOTS])
def test_slot_expressions_pciutils_accepts(text, want):
    f = parse_slot(text)
    assert (f.domain, f.bus, f.slot, f.func) == want
    assert (f.vendor, f.device, f.device_class) == (A, A, A)


@pytest.mark.parametrize("text,message", BAD_SLOTS, ids=[m for _, m in BAD_SLOTS])
def test_slot_expressions_pciutils_refuses(text, message):
    with pytest.raises(FilterError, match=f"^{re.escape(message)}$"):
        parse_slot(text)


@pytest.mark.parametrize("text,want", IDS, ids=[s for s, _ in IDS])
def test_id_expressions_pciutils_accepts(text, want):
    f = parse_id(text)
    assert (f.vendor, f.device, f.device_class, f.class_mask, f.prog_if) == want


@pytest.mark.parametrize("text,message", BAD_IDS, ids=[m for _, m in BAD_IDS])
def test_id_expressions_pciutils_refuses(text, message):
    with pytest.raises(FilterError, match=f"^{re.escape(message)}$"):
        parse_id(text)


def test_later_expressions_refine_one_filter():
    """lspci keeps one filter: a later -s sets only the fields it gives."""
    f = parse_slot(".0", parse_slot("02:"))
    assert (f.bus, f.slot, f.func) == (2, A, 0)
    f = parse_slot(":", parse_slot("02:00.0"))
    assert (f.bus, f.slot, f.func) == (2, 0, 0)
    f = parse_id("::0200", parse_slot("02:"))
    assert (f.bus, f.device_class, f.vendor) == (2, 0x0200, A)
    assert PciFilter().is_any and parse_slot("*:*.*").is_any and not parse_slot(".0").is_any


# --- the guests' own lspci ---------------------------------------------------------------------

def lspci_k(truth_dir: Path) -> dict[str, list[str]]:
    """What `lspci -nn -k` printed in the guest, per slot, derived from its `lspci -vvv -nn`
    (the terse first line has no prog-if; -k adds the Subsystem and kernel lines)."""
    out = {}
    for block in (truth_dir / "lspci-vvv-nn.txt").read_text().split("\n\n"):
        lines = [x for x in block.splitlines() if not x.startswith("lspci:")]
        if not lines:
            continue
        head = re.sub(r" \(prog-if [0-9a-f]{2}(?: \[[^]]*\])?\)$", "", lines[0])
        out[head.split(" ", 1)[0]] = [head] + [x for x in lines[1:] if x.startswith(
            ("\tDeviceName:", "\tSubsystem:", "\tKernel driver in use:", "\tKernel modules:"))]
    return out


def first_kernel_samples() -> list[tuple[str, Path, Path]]:
    return [(dump_id(e), dump_path(e), SAMPLES / e["scenario"] / "ground-truth") for e in FIRST_KERNEL_DUMPS]


SAMPLE_CASES = first_kernel_samples()

# a selection, and the same selection written over the guest's lspci header
# ("02:00.0 Ethernet controller [0200]: Intel ... [8086:10d3]") without dumpkit's code
SELECTIONS = [
    (["-s", "2:0.0"], lambda slot, cls, ids: slot == "02:00.0"),
    (["-s", ".0"], lambda slot, cls, ids: slot.endswith(".0")),
    (["-s", "0000:00:1f"], lambda slot, cls, ids: slot.startswith("00:1f.")),
    (["-s", "5:1"], lambda slot, cls, ids: slot == "05:01.0"),
    (["-d", "1af4:"], lambda slot, cls, ids: ids.startswith("1af4:")),
    (["-d", "8086::01xx"], lambda slot, cls, ids: ids.startswith("8086:") and cls.startswith("01")),
    (["-s", "00:", "-d", ":000c"], lambda slot, cls, ids: slot.startswith("00:") and ids.endswith(":000c")),
]


def header_ids(line: str) -> tuple[str, str, str]:
    slot = line.split(" ", 1)[0]
    numbers = [m.strip(" []") for m in HEX_IDS.findall(line)]
    return slot, numbers[0], numbers[-1]


@pytest.fixture(scope="module", params=SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def sample(request):
    _id, dump, truth_dir = request.param
    return dump, lspci_k(truth_dir)


def test_nn_k_equals_the_guests_lspci(sample):
    dump, truth = sample
    r = run_pci(dump, "-nn", "-k")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    want = [x for lines in truth.values() for x in lines]
    assert r.stdout.splitlines() == want
    assert sum(x.startswith("\tKernel driver in use:") for x in want) >= 10


def test_selected_functions_equal_the_guests_lspci(sample, capsys):
    dump, truth = sample
    for flags, wanted in SELECTIONS:
        code, out, err = main_pci(capsys, dump, "-nn", "-k", *flags)
        assert code == 0 and err == "", (flags, err)
        want = [x for slot, lines in truth.items() if wanted(*header_ids(lines[0])) for x in lines]
        assert want, flags                                   # every selection selects something
        assert out.splitlines() == want, flags


def test_subsystem_names_equal_lspcis():
    dump, truth_dir = SAMPLE_CASES[0][1], SAMPLE_CASES[0][2]
    r = run_pci(dump, "-nn", "-k", "-s", "03:00.0")
    assert r.stdout.splitlines() == lspci_k(truth_dir)["03:00.0"]


def base_class_only(pci_ids: Path = Path("/usr/share/misc/pci.ids")) -> set[str]:
    """Classes ("0002") pci.ids names by their base class alone: lspci keeps the number
    after such a name even without -nn ("Unclassified device [0002]")."""
    named, subs, base = set(), set(), None
    for line in pci_ids.read_text(errors="replace").splitlines():
        if line.startswith("C "):
            base = line.split()[1]
            named.add(base)
        elif base and line.startswith("\t") and not line.startswith("\t\t"):
            subs.add(base + line.split()[0])
        elif line and not line.startswith(("\t", "#")):
            base = None
    return {f"{b}{s:02x}" for b in named for s in range(256)} - subs


def test_names_only_and_numbers_only_equal_the_guests_lspci():
    dump, truth_dir = SAMPLE_CASES[0][1], SAMPLE_CASES[0][2]
    heads = [lines[0] for lines in lspci_k(truth_dir).values()]
    keep = base_class_only()

    def plain_lspci(head: str) -> str:
        """The -nn header as plain lspci writes it: the class number only after a base
        class's name, an unnamed device as "Device 1234:1111" or "Vendor Device 10d3"."""
        head = re.sub(r": Device \[([0-9a-f]{4}:[0-9a-f]{4})\]", r": Device \1", head)
        head = re.sub(r" Device \[[0-9a-f]{4}:([0-9a-f]{4})\]", r" Device \1", head)
        return HEX_IDS.sub(lambda m: m.group(0) if m.group(0).strip(" []") in keep else "", head)

    plain = [plain_lspci(h) for h in heads]
    assert "01:00.0 VGA compatible controller: Device 1234:1111 (rev 02)" in plain
    assert any("[0002]" in x for x in plain)                  # the virtio-fs functions
    r = run_pci(dump, "-s", "")
    assert r.returncode == 0
    assert r.stdout.splitlines() == plain                                   # plain lspci
    r = run_pci(dump, "-n")
    numeric = [f"{s} {c}: {i}" + (m.group(0) if (m := re.search(r" \(rev [0-9a-f]{2}\)$", h)) else "")
               for h in heads for s, c, i in [header_ids(h)]]
    assert r.stdout.splitlines() == numeric                                  # lspci -n
    r = run_pci(dump, "-D", "-s", "2:0.0")
    assert r.stdout.startswith("0000:02:00.0 Ethernet controller: ")


def test_verbose_selection_and_numbers():
    dump, truth_dir = SAMPLE_CASES[0][1], SAMPLE_CASES[0][2]
    r = run_pci(dump, "-v", "-n", "-s", "2:0.0")
    assert r.returncode == 0, r.stderr
    blocks = [b for b in r.stdout.split("\n\n") if re.match(r"[0-9a-f]{4}:", b)]
    assert len(blocks) == 1
    head = lspci_k(truth_dir)["02:00.0"][0]
    _slot, cls, ids = header_ids(head)
    assert blocks[0].splitlines()[0] == f"0000:02:00.0 {cls}: {ids}"
    assert "\tKernel driver in use: e1000e" in blocks[0].splitlines()


def test_tree_selection_is_lspci_t_s():
    """lspci -t -s: the selected function with the bridges above it and all below it; the
    guest's lspci -tv cut to the 00:04.0 branch is what lspci -tv -s 04:00.0... shows."""
    dump, truth_dir = SAMPLE_CASES[0][1], SAMPLE_CASES[0][2]
    tv = [x for x in (truth_dir / "lspci-tv.txt").read_text().splitlines() if not x.startswith("lspci:")]
    start = next(i for i, x in enumerate(tv) if x.startswith("           +-04.0"))
    branch = [tv[start]] + [x for x in tv[start + 1:] if x.startswith("           | ")][:1]
    want = ["-[0000:00]---" + branch[0][13:]] + [" " * 13 + x[13:] for x in branch[1:]]
    r = run_pci(dump, "-t", "-s", "00:04.0")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    unmarked = [re.sub(r"  \[[0-9a-f]{4}:[^]]*\](  <[^>]*>)?$", "", x) for x in r.stdout.splitlines()]
    assert unmarked == want
    r = run_pci(dump, "-t", "-d", "1af4:1041")        # the virtio NIC behind the switch
    assert len(r.stdout.splitlines()) == 1 and "[0000:06:00.0 " in r.stdout
    assert r.stdout.startswith("-[0000:00]---04.0-[04-07]----00.0-[05-07]----00.0-[06]----00.0  ")


@pytest.mark.parametrize("view", [[], ["-t"], ["-v"], ["--json"], ["--csv"], ["-nn", "-k"], ["-k", "--json"]],
                         ids=["list", "tree", "verbose", "json", "csv", "nn-k", "k-json"])
def test_no_match_is_no_output_and_exit_0(view):
    r = run_pci(SAMPLE_CASES[0][1], "-s", "ff:1f.7", *view)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_selection_with_json_and_csv():
    dump = SAMPLE_CASES[0][1]
    tree = dumpkit.open(dump).pci()
    r = run_pci(dump, "--json", "-s", "0000:00:1f")
    assert [d["bdf"] for d in json.loads(r.stdout)["devices"]] == [d.bdf for d in tree if d.bdf.startswith("0000:00:1f.")]
    r = run_pci(dump, "--csv", "-d", "8086:", "-k")
    rows = r.stdout.splitlines()
    assert rows[0].startswith("bdf,") and "kernel_modules" in rows[0].split(",")
    assert [x.split(",", 1)[0] for x in rows[1:]] == [d.bdf for d in tree if d.vendor == 0x8086]
    r = run_pci(dump, "--json", "-k", "-s", "02:")
    assert [d["kernel_modules"] for d in json.loads(r.stdout)["devices"]] == [[]]   # e1000e is built in here


@pytest.mark.parametrize("flags,words", [(["-s", "20"], "Invalid slot number"), (["-s", "1:2:3:4"], "Too many fields"),
                                         (["-d", "8086"], "At least two fields"), (["-n", "--json"], "-n"),
                                         (["-k", "-t"], "-k"), (["-v", "--csv"], "-v")])
def test_bad_selection_or_options_exit_2(flags, words):
    r = run_pci(SAMPLE_CASES[0][1], *flags)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("dumpkit: error: ") and len(r.stderr.splitlines()) == 1 and words in r.stderr


# --- Kernel modules on stock kernels (modules loaded), when the cache has them ---------------------

def stock_samples(per_kernel: int = 2) -> list[tuple[str, Path, Path]]:
    """Per stock kernel in the cache, its scenarios with the most modules first."""
    out = []
    for manifest in sorted((CACHE / "samples").glob("*/manifest.json")):
        cases = []
        data = json.loads(manifest.read_text())
        if not data["kernel"].get("debug_package"):
            continue        # our own kernels build their drivers in: no modules to compare
        for entry in data["dumps"]:
            path = manifest.parent / entry["file"]
            truth = manifest.parent / entry["scenario"] / "ground-truth"
            if entry["kind"] == "first-kernel vmcore" and path.exists() and (truth / "lspci-vvv-nn.txt").exists():
                cases.append((f"stock:{manifest.parent.name}:{entry['scenario']}", path, truth))
        out += sorted(cases, key=lambda c: -(c[2] / "lspci-vvv-nn.txt").read_text().count("Kernel modules:"))[:per_kernel]
    return out


STOCK = stock_samples()


@pytest.mark.skipif(not STOCK, reason="no stock-kernel samples in the cache (scripts/setup generates them)")
@pytest.mark.parametrize("case", STOCK, ids=[c[0] for c in STOCK])
def test_kernel_modules_are_lspcis_that_were_loaded(case):
    """lspci names the modules whose aliases match (modules.alias on disk); a dump knows the
    loaded ones: dumpkit's line is lspci's, less the modules the dump shows were not loaded."""
    _id, dump, truth_dir = case
    d = dumpkit.open(dump)
    loaded = {m.name for m in d.modules()}
    r = run_pci(dump, "-nn", "-k")
    assert r.returncode == 0, r.stderr
    ours = {}
    for line in r.stdout.splitlines():
        if not line.startswith("\t"):
            slot = line.split(" ", 1)[0]
            ours[slot] = []
        elif line.startswith("\tKernel modules: "):
            ours[slot] = line.split(": ", 1)[1].split(", ")
    truth = lspci_k(truth_dir)
    assert set(ours) == set(truth)
    named = 0
    for slot, lines in truth.items():
        theirs = next((x.split(": ", 1)[1].split(", ") for x in lines if x.startswith("\tKernel modules: ")), [])
        assert ours[slot] == [m for m in theirs if m in loaded], slot
        named += bool(ours[slot])
    # every stock guest loads at least e1000e and nvme (6.12 and 7.x build virtio_pci in)
    assert named >= 2
