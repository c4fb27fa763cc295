"""The triage row's one declaration (``dumpkit.triage.schema.ROW``): triage's columns and
the fleet's dumps table are read from it, in its order, with its types."""

from __future__ import annotations

import pytest

from dumpkit.triage import COLUMNS
from dumpkit.triage.schema import FLEET, ROW, TRIAGE, columns


def test_the_csv_columns_are_the_declared_triage_columns():
    assert COLUMNS == [c.name for c in ROW if TRIAGE in c.tables]
    assert len({c.name for c in ROW}) == len(ROW)


def test_the_dumps_table_is_the_declared_fleet_columns_with_their_types():
    pa = pytest.importorskip("pyarrow")
    from dumpkit.fleet.dataset import DUMPS_SCHEMA

    types = {"string": pa.string(), "int": pa.int64(), "bool": pa.bool_(), "float": pa.float64()}
    assert [(f.name, f.type) for f in DUMPS_SCHEMA] == [(c.name, types[c.type]) for c in columns(FLEET)]
    shared = [c.name for c in ROW if set(c.tables) == {TRIAGE, FLEET}]
    assert [n for n in COLUMNS if n in shared] == [n for n in DUMPS_SCHEMA.names if n in shared] == shared
