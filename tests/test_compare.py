"""dumpkit compare on the committed before/after samples (without and with the reset patch):
the narrow text table, the JSON, and both against QEMU's own trace of the runs."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
from conftest import SAMPLES, ground_truth_pci

import dumpkit
from dumpkit.verdict import claim_word, judge
from dumpkit.verdict import words as claim_words
from dumpkit.verdict.claims import NAMES as CLAIMS
from dumpkit.verdict.compare import COMPARE_WIDTH, DumpSide, compare_json, compare_text, compare_verdicts

BEFORE, AFTER = "copied-traffic", "patched-copied"
WORDS = set(claim_words.WORDS)
_WORD = "|".join(re.escape(w) for w in sorted(WORDS, key=len, reverse=True))


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dumpkit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def dump(scenario: str) -> str:
    return str(SAMPLES / scenario / "vmcore.kdump")


def nic(scenario: str) -> str:
    return next(b for b, d in ground_truth_pci(scenario).items() if d["driver"] == "e1000e")


def traced(scenario: str, event: str) -> int:
    run = json.loads((SAMPLES / scenario / "run.json").read_text())
    return run["qemu_events"]["counts"]["crash_to_capture_init"].get(event, 0)


@pytest.fixture(scope="module")
def text() -> str:
    r = run_cli("compare", dump(BEFORE), dump(AFTER))
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def data() -> dict:
    r = run_cli("compare", "--json", dump(BEFORE), dump(AFTER))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def table_rows(text: str) -> dict[str, str]:
    """The table's endpoint lines by BDF."""
    return {m.group(1): line for line in text.splitlines()
            if (m := re.match(r"^[ *+-] ([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ", line))}


def claim_cells(line: str) -> list[str]:
    """The four claim cells of a table line (``a -> b`` kept together)."""
    return re.findall(rf"(?:{_WORD})(?: -> (?:{_WORD}))?", line.split("  ", 2)[-1])[:4]


def test_text_is_narrow_and_has_no_missing_values(text):
    assert max(len(line) for line in text.splitlines()) <= COMPARE_WIDTH
    assert not re.search(r"\bnan\b|\bNaN\b|\bNone\b|<NA>", text)


def test_one_line_per_endpoint_with_short_claim_words(text, data):
    rows = table_rows(text)
    assert list(rows) == [e["bdf"] for e in data["endpoints"]]
    gt = set(ground_truth_pci(BEFORE)) | set(ground_truth_pci(AFTER))
    assert set(rows) <= gt
    for line in rows.values():
        cells = claim_cells(line)
        assert len(cells) == 4, line
        assert {w for c in cells for w in c.split(" -> ")} <= WORDS, line


def test_changes_are_marked_where_a_claim_differs(text, data):
    rows = table_rows(text)
    for e in data["endpoints"]:
        differs = any(c["before"] != c["after"] for c in e["words"].values())
        assert (rows[e["bdf"]][0] == "*") == differs, rows[e["bdf"]]
        assert (e["status"] == "changed") == differs
        # a plain claim (yes/no/unknown/n/a) that changed is a word that changed
        assert all(e["words"][n]["changed"] for n, c in e["claims"].items() if c["changed"])
        for name, c in e["words"].items():
            cell = claim_cells(rows[e["bdf"]])[CLAIMS.index(name)]
            assert cell == (f"{c['before']} -> {c['after']}" if c["changed"] else c["before"]), (e["bdf"], name)
    assert [c["bdf"] for c in data["changes"]] == [e["bdf"] for e in data["endpoints"] if e["status"] != "same"]
    assert f"{len(data['changes'])} of {len(data['endpoints'])} endpoints changed" in text


def test_the_reset_patch_shows_as_the_nic_stopped_by_reset(text, data):
    """QEMU's trace: the NIC wrote receive buffers after the crash in both runs, and only
    the patched capture kernel reset it."""
    bdf = nic(BEFORE)
    assert nic(AFTER) == bdf
    assert traced(AFTER, "e1000e_cb_qdev_reset") >= 1 and traced(BEFORE, "e1000e_cb_qdev_reset") == 0
    e = next(x for x in data["endpoints"] if x["bdf"] == bdf)
    assert e["claims"]["did_dma_after_crash"] == {"before": "yes", "after": "yes", "changed": False}
    assert e["claims"]["stopped_by_reset"] == {"before": "no", "after": "yes", "changed": True}
    for side, scenario in (("before", BEFORE), ("after", AFTER)):
        assert abs(e["post_crash_completions"][side] - traced(scenario, "e1000e_rx_written_to_guest")) <= 5
    assert e["reset_ports"]["before"] is None and e["reset_ports"]["after"]
    assert "no -> yes" in table_rows(text)[bdf]
    assert re.search(rf"^  {re.escape(bdf)}: .* -> .*stopped by reset$", text, re.M)


def test_json_carries_both_sides_inputs_and_verdicts(data):
    for side, scenario in (("before", BEFORE), ("after", AFTER)):
        inputs = data[side]["inputs"]
        assert inputs["dump"] == dump(scenario)
        assert inputs["capture_logs"] == [str(SAMPLES / scenario / "capture-dmesg.txt")]
        assert inputs["capture_checks"] == {inputs["capture_logs"][0]: "consistent"}
        assert re.fullmatch(r"[0-9a-f]{40}", inputs["build_id"]) and inputs["kernel_release"]
        verdicts = {v["bdf"]: v for v in data[side]["verdicts"]["endpoints"]}
        assert set(verdicts) == {e["bdf"] for e in data["endpoints"]}
        for e in data["endpoints"]:
            v = verdicts[e["bdf"]]
            for claim in CLAIMS:
                word = "n/a" if not v[f"{claim}_applicable"] else {True: "yes", False: "no", None: "unknown"}[v[claim]]
                assert e["claims"][claim][side] == word, (side, e["bdf"], claim)
    assert data["before"]["verdicts"]["ports_reset"] == [] and data["after"]["verdicts"]["ports_reset"]


def test_endpoints_on_one_side_only_are_marked():
    """Matching is by BDF: an endpoint the other dump lacks is "only before"/"only after"."""
    d = dumpkit.open(dump(BEFORE))
    v = judge(d, [SAMPLES / BEFORE / "capture-dmesg.txt"])
    gone, new = v.endpoints[0], v.endpoints[-1]
    before = DumpSide("before", "b", dataclasses.replace(v, endpoints=v.endpoints[1:]))
    after = DumpSide("after", "a", dataclasses.replace(v, endpoints=v.endpoints[:-1]))
    cmp = compare_verdicts(before, after)
    status = {e.bdf: e.status for e in cmp.endpoints}
    assert status[gone.bdf] == "only after" and status[new.bdf] == "only before"
    assert {s for b, s in status.items() if b not in (gone.bdf, new.bdf)} == {"same"}
    rows = table_rows(compare_text(cmp))
    assert rows[gone.bdf].startswith("+ ") and rows[new.bdf].startswith("- ")
    assert f"absent -> {claim_word(gone.could_dma)}" in rows[gone.bdf]
    assert {c["bdf"] for c in compare_json(cmp)["changes"]} == {gone.bdf, new.bdf}


def test_compare_json_and_csv_are_exclusive():
    r = run_cli("compare", "--json", "--csv", dump(BEFORE), dump(AFTER))
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_csv_carries_the_same_four_claims_as_the_json(data):
    """compare --csv and --json are one comparison: every endpoint's four claims (plain
    word and top-line word) on both sides, its status and counts, the same in both."""
    import csv
    import io

    r = run_cli("compare", "--format", "csv", dump(BEFORE), dump(AFTER))
    assert r.returncode == 0, r.stderr
    rows = {row["bdf"]: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert list(rows) == [e["bdf"] for e in data["endpoints"]]
    for e in data["endpoints"]:
        row = rows[e["bdf"]]
        assert row["status"] == e["status"]
        for side in ("before", "after"):
            for claim in CLAIMS:
                assert row[f"{claim}_{side}"] == e["claims"][claim][side], (e["bdf"], claim, side)
                assert row[f"{claim}_word_{side}"] == e["words"][claim][side], (e["bdf"], claim, side)
            for field in ("post_crash_completions", "faults"):     # whole numbers, as in the JSON (not 96.0)
                assert row[f"{field}_{side}"] == ("" if e[field][side] is None else str(e[field][side]))
            assert row[f"verdict_{side}"] == e["verdict"][side]
