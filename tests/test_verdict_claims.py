"""The one list of claims (``dumpkit.verdict.claims.CLAIMS``) and what reads it: the
verdict's fields, the triage row, the fleet's tables and the JSON legend name every claim,
in its order, on a committed sample."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import SAMPLES

import dumpkit
from dumpkit.verdict import CLAIMS, EndpointVerdict, judge
from dumpkit.verdict.claims import NAMES
from dumpkit.verdict.render import verdict_frame, verdict_json


def test_every_claim_is_a_field_of_the_verdict_in_order():
    fields = [f.name for f in dataclasses.fields(EndpointVerdict)]
    assert fields[3:3 + len(CLAIMS)] == list(NAMES)
    assert len(set(NAMES)) == len(NAMES) and len({c.column for c in CLAIMS}) == len(CLAIMS)


def test_triage_and_fleet_columns_come_from_the_claims():
    pytest.importorskip("pyarrow")
    from dumpkit.fleet.dataset import DUMPS_SCHEMA, ENDPOINTS_SCHEMA
    from dumpkit.triage import COLUMNS

    for c in CLAIMS:
        assert c.column in COLUMNS and c.unknown_column in COLUMNS
        assert c.column in DUMPS_SCHEMA.names and c.unknown_column in DUMPS_SCHEMA.names
        assert {c.name, f"{c.name}_evidence", f"{c.name}_sources"} <= set(ENDPOINTS_SCHEMA.names)
    assert [n for n in COLUMNS if n in {c.column for c in CLAIMS}] == [c.column for c in CLAIMS]


def test_the_verdict_outputs_give_the_claims_in_order():
    v = judge(dumpkit.open(SAMPLES / "nocopy-fault" / "vmcore.kdump"),
              [SAMPLES / "nocopy-fault" / "capture-dmesg.txt"])
    assert list(verdict_json(v)["legend"]) == list(NAMES)
    columns = list(verdict_frame(v).columns)
    assert [n for n in columns if n in NAMES] == list(NAMES)
    for c in NAMES:
        assert {f"{c}_applicable", f"{c}_evidence", f"{c}_word", f"{c}_basis", f"{c}_phrase"} <= set(columns)
