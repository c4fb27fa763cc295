"""The triage row's columns, declared once (:data:`ROW`: name, type, and the tables that
carry it): triage's own table (CSV, JSON, JSONL, a Parquet file: :data:`COLUMNS`, in this
order) and the fleet dataset's dumps table (:data:`dumpkit.fleet.dataset.DUMPS_SCHEMA`,
typed from here). A new column is one line here; the claim columns come from
:data:`dumpkit.verdict.claims.CLAIMS`. No pyarrow here: the CSV path does not load it."""

from __future__ import annotations

from dataclasses import dataclass

from dumpkit.verdict.claims import CLAIMS

__all__ = ["BOTH", "COLUMNS", "Column", "FLEET", "ROW", "TRIAGE", "columns"]

TRIAGE, FLEET = "triage", "fleet"
BOTH = (TRIAGE, FLEET)
STR, INT, BOOL, FLOAT = "string", "int", "bool", "float"


@dataclass(frozen=True)
class Column:
    """One column of the row: its name, its type (string, int, bool or float) and the
    tables it is in."""

    name: str
    type: str
    tables: tuple[str, ...] = BOTH


# in the order of both tables; claim counts are endpoints with "yes", *_unknown those the
# dump cannot tell. The fleet keeps the error as "reason" (with the bookkeeping of a
# dataset: sha256, version, file identity, worker); triage names the crash of a
# capture-state dump (crash_dump, the dataset joins it when read)
ROW: tuple[Column, ...] = (
    Column("dump_sha256", STR, (FLEET,)),
    Column("dumpkit_version", STR, (FLEET,)),
    Column("path", STR),
    Column("directory", STR, (FLEET,)),
    Column("size", INT, (FLEET,)),
    Column("mtime_ns", INT, (FLEET,)),
    Column("kind", STR),
    Column("status", STR),
    Column("error", STR, (TRIAGE,)),
    Column("reason", STR, (FLEET,)),
    Column("kernel_release", STR),
    Column("build_id", STR),
    Column("debug_file", STR, (FLEET,)),
    Column("crash_time", STR),
    Column("panic", STR),
    Column("capture_kernel", BOOL),
    Column("crash_dump", STR, (TRIAGE,)),
    Column("capture_log", STR),
    Column("endpoints", INT),
    *(Column(c.column, INT) for c in CLAIMS),
    Column("faults", INT),
    Column("post_crash_completions", INT),
    Column("ports_reset", INT),
    Column("dma_after_crash_devices", STR),
    *(Column(c.unknown_column, INT) for c in CLAIMS),
    Column("assigned_devices", STR),
    Column("unreadable", STR),
    Column("capture_log_match", STR, (FLEET,)),
    Column("warnings", STR, (FLEET,)),
    Column("iommu", STR, (FLEET,)),
    Column("worker", STR, (FLEET,)),
    Column("seconds", FLOAT),
    Column("analysed_at", STR, (FLEET,)),
)


def columns(table: str) -> list[Column]:
    """The columns of ``table`` (:data:`TRIAGE` or :data:`FLEET`), in order."""
    return [c for c in ROW if table in c.tables]


COLUMNS = [c.name for c in columns(TRIAGE)]
