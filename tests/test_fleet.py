"""Fleet triage on a real dask cluster: a scheduler and two single-threaded worker
processes on 127.0.0.1 started with dask's own CLI, dumps of two kernels (the committed
samples and, when generated, the stock kernels' ones in the cache) with --debuginfo DIR.
Every dump gets its row, a second run skips them all, a killed worker loses no row, the
embedded cluster needs no flags, and a dump without debug info names its kernel."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from conftest import SAMPLES  # noqa: E402

from dumpkit.fleet import DebugIndex, dump_identity, fleet_views, load_dataset  # noqa: E402

CACHE = Path(os.environ.get("DUMPKIT_CACHE") or Path.home() / ".cache" / "dumpkit")
DISTRO_ROOTS = sorted(m.parent for m in (CACHE / "samples").glob("*/manifest.json"))
# crashes and capture-state dumps, as the manifests name them (the name follows the capture path)
DISTRO_DUMPS = sorted(r / d["file"] for r in DISTRO_ROOTS for d in json.loads((r / "manifest.json").read_text())["dumps"]
                      if (r / d["file"]).is_file())
# each cached kernel's debug info as its manifest names it: a stock kernel's unpacked -dbg
# tree, or our own build's directory (the iommufd scenario's 6.12)
DISTRO_DEBUG = sorted({(r / (k.get("debug_dir") or k["debug_file"])).resolve()
                       for r in DISTRO_ROOTS for k in [json.loads((r / "manifest.json").read_text())["kernel"]]})
DUMPKIT = [sys.executable, "-m", "dumpkit.cli"]
ENV = {**os.environ, "DEBUGINFOD_URLS": "", "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
       "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0", "DASK_LOGGING__DISTRIBUTED": "error"}
COMMITTED = sorted(SAMPLES.glob("*/*.kdump"))


def dask_cli(*args) -> list[str]:
    exe = shutil.which("dask")
    return [exe, *args] if exe else [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, Client) of a scheduler and two single-threaded workers."""
    from distributed import Client

    sfile = tmp_path_factory.mktemp("dask") / "scheduler.json"
    procs = [subprocess.Popen(dask_cli("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                       "--scheduler-file", str(sfile)), env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 30
        while not sfile.exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, "scheduler did not start"
            time.sleep(0.1)
        for _ in range(2):
            procs.append(subprocess.Popen(dask_cli("worker", "--scheduler-file", str(sfile), "--nthreads", "1",
                                                   "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard",
                                                   "--memory-limit", "4GiB"),
                                          env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = Client(scheduler_file=str(sfile), timeout="30s")
        client.wait_for_workers(2, timeout=60)
        yield client.scheduler.address, client
        client.close()
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def triage(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*DUMPKIT, "triage", *map(str, args)], text=True, capture_output=True,
                          env={**ENV, **(env or {})}, timeout=300, **kw)


def test_index_maps_each_dump_to_its_kernel():
    index = DebugIndex.build([SAMPLES / "kernel", *DISTRO_DEBUG])
    for dump in COMMITTED + DISTRO_DUMPS:
        release, build_id = dump_identity(dump)
        assert release and build_id
        assert index.lookup(build_id) is not None, dump
    assert len({dump_identity(d)[1] for d in COMMITTED + DISTRO_DUMPS}) == 1 + len(DISTRO_ROOTS)


def test_two_kernels_on_a_cluster_every_row_then_all_skipped(cluster, tmp_path):
    address, _client = cluster
    out = tmp_path / "fleet"
    debug = [a for d in DISTRO_DEBUG for a in ("--debuginfo", d)]
    inputs = [SAMPLES, *DISTRO_ROOTS]
    r = triage(*inputs, *debug, "--scheduler", address, "-o", out, "--format", "parquet")
    assert r.returncode == 0, r.stderr
    dumps, endpoints = load_dataset(out)
    assert sorted(dumps["path"]) == sorted(str(p.resolve()) for p in COMMITTED + DISTRO_DUMPS)
    assert (dumps["status"] == "ok").all(), dumps[["path", "reason"]]
    assert dumps["dump_sha256"].str.len().eq(64).all() and dumps["dump_sha256"].is_unique
    crashes = dumps[dumps["kind"] == "crash"]
    caps = dumps[dumps["kind"] == "capture-state dump"]
    states = [p for p in COMMITTED + DISTRO_DUMPS if p.name == "capture-state.kdump"]
    assert len(caps) == len(states) and caps["endpoints"].isna().all()
    assert crashes.set_index("path").loc[str(SAMPLES.resolve() / "nocopy-fault" / "vmcore.kdump"),
                                         "capture_dump"].endswith("capture-state.kdump")
    assert crashes["capture_log_match"].notna().all()
    assert set(endpoints["dump_sha256"]) == set(crashes["dump_sha256"])
    assert crashes["kernel_release"].nunique() == 1 + len(DISTRO_ROOTS)    # a cache directory per kernel
    views = fleet_views(dumps, endpoints)
    post = views["post_crash_dma"]
    assert "e1000e" in set(post["driver"]) and (post["post_crash_completions"] > 0).all()
    assert set(views["verdicts_by_kernel_driver"]["kernel_release"]) == set(crashes["kernel_release"])
    assert views["failures"].empty

    fragments = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    start = time.monotonic()
    r = triage(*inputs, *debug, "--scheduler", address, "-o", out, "--format", "parquet")
    assert r.returncode == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == fragments
    assert time.monotonic() - start < 15


def test_a_killed_worker_loses_no_row(cluster, tmp_path):
    address, client = cluster
    client.wait_for_workers(2, timeout=60)
    out = tmp_path / "fleet"
    dumps = [SAMPLES / sc / "vmcore.kdump" for sc in ("idle", "nocopy-fault", "copied-traffic", "patched-nocopy")]
    proc = subprocess.Popen([*DUMPKIT, "triage", *map(str, dumps), "--scheduler", address, "-o", str(out),
                             "--format", "parquet"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        busy = [w for w, keys in client.processing().items() if any("dumpkit-triage" in str(k) for k in keys)]
        if busy:
            victim = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        else:
            time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    rows, _eps = load_dataset(out)
    assert sorted(rows["path"]) == sorted(str(d.resolve()) for d in dumps)
    assert (rows["status"] == "ok").all(), rows[["path", "reason"]]
    client.wait_for_workers(2, timeout=60)      # the nanny replaced it


def test_embedded_cluster_needs_no_flags_and_names_a_kernel_without_debug_info(tmp_path):
    inputs = [SAMPLES / "idle" / "vmcore.kdump"]
    env = {}
    if DISTRO_DUMPS:        # a stock-kernel dump away from its manifest: no debug info anywhere
        lone = tmp_path / "elsewhere" / "vmcore"
        lone.parent.mkdir()
        os.link(DISTRO_DUMPS[0], lone) if os.stat(DISTRO_DUMPS[0]).st_dev == os.stat(tmp_path).st_dev \
            else shutil.copy(DISTRO_DUMPS[0], lone)
        inputs.append(lone)
        env = {"DUMPKIT_CACHE": str(tmp_path / "no-cache")}
    out = tmp_path / "fleet"
    r = triage(*inputs, "--jobs", "2", "-o", out, "--format", "parquet", env=env)
    dumps, _eps = load_dataset(out)
    ok = dumps[dumps["status"] == "ok"]
    assert list(ok["path"]) == [str(inputs[0])]
    if DISTRO_DUMPS:
        assert r.returncode == 1
        bad = dumps[dumps["status"] == "error"].iloc[0]
        release, build_id = dump_identity(DISTRO_DUMPS[0])
        assert release in bad["reason"] and build_id in bad["reason"]
        assert bad["kernel_release"] == release and bad["build_id"] == build_id
        assert f"{lone}: " in r.stderr
    else:
        assert r.returncode == 0, r.stderr
