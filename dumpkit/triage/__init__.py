"""Batch triage: many dumps, each in a worker process with a time limit; one bad dump gets
an error row and never costs the others. Two engines: one forked process per dump
(:func:`iter_triage`, ``--engine fork``) and dask.distributed
(:func:`dumpkit.fleet.rows.iter_triage_cluster`: an embedded LocalCluster or an existing
cluster, and the Parquet dataset of a fleet), which reads the rows made here; the row's
columns are declared once in :mod:`dumpkit.triage.schema`.

Rows reach the output as the dumps finish (in input order, each as soon as every dump
before it is done), so an interruption or a crash keeps every finished row. A dump taken
of a running capture kernel is a "capture-state dump", not a crash: its row says so and
names the crash dump in the same directory.
"""

from dumpkit.triage.local import default_jobs, iter_triage, triage
from dumpkit.triage.output import OutputLock, RowWriter, check_output
from dumpkit.triage.rows import (COLUMNS, DUMP_MAGICS, FORMATS, KIND_CAPTURE, KIND_CRASH, KIND_NOT_A_DUMP,
                                 analyse, find_dumps, not_a_dump_row, triage_one, verdict_counts)

__all__ = ["COLUMNS", "DUMP_MAGICS", "FORMATS", "KIND_CAPTURE", "KIND_CRASH", "KIND_NOT_A_DUMP", "OutputLock",
           "RowWriter", "analyse", "check_output", "default_jobs", "find_dumps", "iter_triage",
           "not_a_dump_row", "triage", "triage_one", "verdict_counts"]
