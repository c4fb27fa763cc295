"""The fleet-triage Parquet dataset: ``DIR/dumps/`` and ``DIR/endpoints/``, one fragment
per dump in each (``<sha256>-v<dumpkit version>.parquet``), written as each dump finishes.

A dump's endpoints fragment is written before its dumps fragment, each through a
temporary name and an atomic rename: a dumps row on disk means the dump is complete.
Rows are keyed by the dump's SHA-256 and the dumpkit version that analysed it. Error
rows of a dump whose SHA-256 is not known (timed out, worker died before hashing) are
keyed by a hash of the path and removed when that path later succeeds.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dumpkit.triage.schema import FLEET, columns
from dumpkit.verdict.claims import CLAIMS

__all__ = ["DUMPS_SCHEMA", "ENDPOINTS_SCHEMA", "Dataset", "fleet_views", "load_dataset"]

S, INT, B, F = pa.string(), pa.int64(), pa.bool_(), pa.float64()


def _claim_fields(c) -> list[tuple[str, pa.DataType]]:
    """A claim's columns in the endpoints table: its value, whether it applies (where its
    spec keeps that), its evidence and its sources."""
    applicable = [(c.name + "_applicable", B)] if c.fleet_applicable else []
    return [(c.name, B), *applicable, (c.name + "_evidence", S), (c.name + "_sources", S)]


ARROW = {"string": S, "int": INT, "bool": B, "float": F}      # the row schema's types (dumpkit.triage.schema)
DUMPS_SCHEMA = pa.schema([(c.name, ARROW[c.type]) for c in columns(FLEET)])
ENDPOINTS_SCHEMA = pa.schema([
    ("dump_sha256", S), ("dumpkit_version", S), ("path", S), ("kernel_release", S),
    ("bdf", S), ("vendor_device", S), ("name", S), ("driver", S),
    *(f for c in CLAIMS for f in _claim_fields(c)),
    ("post_crash_completions", INT), ("faults", INT), ("decoder", S), ("reset_ports", S), ("summary", S),
    ("dma_owner", S),
])


def _version() -> str:
    import dumpkit

    return dumpkit.__version__


def _coerce(rows: list[dict], schema: pa.Schema) -> pa.Table:
    cols = {}
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_integer(f.type):
            vals = [None if v is None else int(v) for v in vals]
        elif pa.types.is_floating(f.type):
            vals = [None if v is None or v != v else float(v) for v in vals]
        elif pa.types.is_boolean(f.type):
            vals = [None if v is None else bool(v) for v in vals]
        else:
            vals = [None if v is None else str(v) for v in vals]
        cols[f.name] = pa.array(vals, type=f.type)
    return pa.Table.from_pydict(cols, schema=schema)


def path_key(path: str) -> str:
    return "path-" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:32]


class Dataset:
    """A dataset directory being written (created if missing)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.dumps_dir = self.root / "dumps"
        self.endpoints_dir = self.root / "endpoints"
        self.version = _version()

    def create(self) -> None:
        self.dumps_dir.mkdir(parents=True, exist_ok=True)
        self.endpoints_dir.mkdir(parents=True, exist_ok=True)

    def _name(self, key: str) -> str:
        return f"{key}-v{self.version}.parquet"

    @staticmethod
    def _write(table: pa.Table, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, dest)

    def write(self, row: dict, endpoints: list[dict]) -> None:
        """One dump's fragment: its endpoints, then its dumps row (the completion mark)."""
        row = {**row, "dumpkit_version": self.version,
               "analysed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        row.setdefault("directory", str(Path(row["path"]).parent.resolve()))
        key = row.get("dump_sha256") or path_key(row["path"])
        eps = [{**e, "dump_sha256": row.get("dump_sha256"), "dumpkit_version": self.version,
                "path": row["path"], "kernel_release": row.get("kernel_release")} for e in endpoints]
        self._write(_coerce(eps, ENDPOINTS_SCHEMA), self.endpoints_dir / self._name(key))
        self._write(_coerce([row], DUMPS_SCHEMA), self.dumps_dir / self._name(key))
        if row.get("dump_sha256"):      # a path-keyed error row of an earlier run is superseded
            for d in (self.dumps_dir, self.endpoints_dir):
                (d / self._name(path_key(row["path"]))).unlink(missing_ok=True)

    def done(self) -> tuple[set[str], set[tuple[str, int, int]]]:
        """(SHA-256s, (path, size, mtime_ns)) of dumps this dumpkit version finished with
        status ok: a later run skips them unless forced. Errors are tried again."""
        shas: set[str] = set()
        stats: set[tuple[str, int, int]] = set()
        if not self.dumps_dir.is_dir():
            return shas, stats
        suffix = f"-v{self.version}.parquet"
        files = [p for p in self.dumps_dir.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".")]
        for p in files:
            try:
                t = pq.read_table(p, columns=["dump_sha256", "path", "size", "mtime_ns", "status"]).to_pylist()
            except Exception:
                continue        # a damaged fragment: its dump is done again
            for r in t:
                if r["status"] == "ok" and r["dump_sha256"]:
                    shas.add(r["dump_sha256"])
                    stats.add((r["path"], r["size"], r["mtime_ns"]))
        return shas, stats


def _read(directory: Path, schema: pa.Schema):
    import pandas as pd

    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith(".")) if directory.is_dir() else []
    tables = []
    for p in files:
        try:
            tables.append(pq.read_table(p, schema=schema))
        except Exception:
            continue
    if not tables:
        dtypes = {pa.int64(): "Int64", pa.bool_(): "boolean", pa.float64(): "Float64"}
        return pd.DataFrame({f.name: pd.Series(dtype=dtypes.get(f.type, "object")) for f in schema})
    mapper = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.float64(): pd.Float64Dtype()}
    return pa.concat_tables(tables).to_pandas(types_mapper=mapper.get)


def load_dataset(path: str | os.PathLike):
    """(dumps, endpoints) DataFrames of a fleet-triage dataset directory.

    Where a dump was analysed by several dumpkit versions the newest analysis is kept.
    Capture-state dumps are attached to the crashes of their directory: crash rows get
    ``capture_dump`` (its path), capture-state rows ``crash_dump``.
    """
    root = Path(path)
    dumps = _read(root / "dumps", DUMPS_SCHEMA)
    endpoints = _read(root / "endpoints", ENDPOINTS_SCHEMA)
    if len(dumps):
        dumps["_key"] = dumps["dump_sha256"].fillna(dumps["path"])
        dumps = dumps.sort_values("analysed_at").drop_duplicates("_key", keep="last").drop(columns="_key")
        keep = set(zip(dumps["dump_sha256"], dumps["dumpkit_version"], strict=True))
        if len(endpoints):
            mask = [(s, v) in keep for s, v in zip(endpoints["dump_sha256"], endpoints["dumpkit_version"], strict=True)]
            endpoints = endpoints[mask]
        caps = dumps[dumps["kind"] == "capture-state dump"].groupby("directory")["path"].agg(",".join)
        crashes = dumps[dumps["kind"] == "crash"].groupby("directory")["path"].agg(",".join)
        is_crash, is_cap = dumps["kind"] == "crash", dumps["kind"] == "capture-state dump"
        dumps["capture_dump"] = dumps["directory"].map(caps).where(is_crash)
        dumps["crash_dump"] = dumps["directory"].map(crashes).where(is_cap)
        dumps = dumps.sort_values("path").reset_index(drop=True)
    else:
        dumps["capture_dump"] = dumps["crash_dump"] = None
    return dumps, endpoints.reset_index(drop=True)


def fleet_views(dumps, endpoints) -> dict:
    """Tables for a fleet: ``verdicts_by_kernel_driver``, ``post_crash_dma`` (endpoints
    that did DMA after the crash), ``faults_by_device_model``, ``failures`` (dumps that
    could not be triaged, with the reason), ``dumps_by_kernel``."""
    import pandas as pd

    crashes = dumps[(dumps["kind"] == "crash") & (dumps["status"] == "ok")]
    eps = endpoints[endpoints["dump_sha256"].isin(crashes["dump_sha256"])].copy()
    eps["driver"] = eps["driver"].fillna("(none)")
    claims = [c.name for c in CLAIMS]
    for c in claims:
        eps[c + "_yes"] = eps[c].eq(True).fillna(False).astype(bool)
        eps[c + "_unknown"] = eps[c].isna()
    agg = {"dumps": ("dump_sha256", "nunique"), "endpoints": ("bdf", "size"),
           **{c: (c + "_yes", "sum") for c in claims},
           **{c + "_unknown": (c + "_unknown", "sum") for c in claims},
           "post_crash_completions": ("post_crash_completions", "sum"), "faults": ("faults", "sum")}
    by_kd = (eps.groupby(["kernel_release", "driver"], dropna=False).agg(**agg).reset_index()
             if len(eps) else pd.DataFrame(columns=["kernel_release", "driver", *agg]))
    post = eps[eps["did_dma_after_crash"].eq(True).fillna(False).astype(bool)][
        ["path", "kernel_release", "bdf", "vendor_device", "name", "driver", "post_crash_completions", "faults",
         "hit_capture_kernel", "stopped_by_reset", "decoder", "dump_sha256"]].reset_index(drop=True)
    if len(eps):
        faults = (eps.groupby(["vendor_device", "name"], dropna=False)
                  .agg(endpoints=("bdf", "size"), with_faults=("faults", lambda s: int((s > 0).sum())),
                       faults=("faults", "sum"), dumps=("dump_sha256", "nunique"))
                  .reset_index().sort_values(["faults", "endpoints"], ascending=False).reset_index(drop=True))
    else:
        faults = pd.DataFrame(columns=["vendor_device", "name", "endpoints", "with_faults", "faults", "dumps"])
    failures = dumps[dumps["status"] != "ok"][["path", "kernel_release", "build_id", "reason", "dump_sha256"]]
    by_kernel = (dumps.groupby(["kernel_release", "kind", "status"], dropna=False).size()
                 .rename("dumps").reset_index()) if len(dumps) else pd.DataFrame(
        columns=["kernel_release", "kind", "status", "dumps"])
    return {"verdicts_by_kernel_driver": by_kd, "post_crash_dma": post, "faults_by_device_model": faults,
            "failures": failures.reset_index(drop=True), "dumps_by_kernel": by_kernel}
