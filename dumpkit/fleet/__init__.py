"""Fleet triage: many dumps of many kernels on a dask.distributed cluster into a Parquet
dataset (``dumpkit triage PATH... -o DIR --format parquet``), and the tables notebook 03
shows from it. See docs/fleet-triage.md."""

from dumpkit.fleet.dataset import Dataset, fleet_views, load_dataset
from dumpkit.fleet.debugindex import DebugIndex, KernelDebug, dump_identity, read_vmcoreinfo

__all__ = ["Dataset", "DebugIndex", "KernelDebug", "dump_identity", "fleet_views", "load_dataset",
           "read_vmcoreinfo"]
