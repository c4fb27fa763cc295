"""Reports: a notebook shipped in the package, run on one dump (or a before/after pair) with
papermill and exported to HTML as a person would write it: the conclusion first, then the
pictures and tables that back it, the details, and last the provenance (every input dump
and capture log with its sha256, the debug files with their build-ids, dumpkit and drgn
versions, the parameters and the date). The notebook's code is left out unless asked for.

The notebooks live in ``notebooks/`` at the top of the repository; ``dumpkit/notebooks``
links to it, so they are package data and a wheel install renders
reports too; :func:`copy_notebooks` copies them out for JupyterLab. Helpers the notebooks
share (capture logs of a dump, the capture-kernel timeline) are here, so notebook cells
only call dumpkit.
"""

from __future__ import annotations

import datetime
import importlib.resources
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dumpkit.files import file_sha256
from dumpkit.errors import AnalysisError, DumpkitError, InputError, OutputError
from dumpkit.palette import series_style

__all__ = [
    "BEFORE_AFTER",
    "SINGLE_DUMP",
    "capture_logs",
    "capture_timeline",
    "copy_notebooks",
    "file_sha256",
    "hex_columns",
    "notebook_names",
    "plot_timeline",
    "provenance",
    "provenance_markdown",
    "render_report",
]

SINGLE_DUMP = "01-investigate"
BEFORE_AFTER = "02-dma-at-crash-before-after"
_NOTEBOOK_DIR = "notebooks"

PathLike = str | os.PathLike


# --- the notebooks shipped in the package --------------------------------------------------

def _notebook_dir():
    return importlib.resources.files("dumpkit").joinpath(_NOTEBOOK_DIR)


def notebook_names() -> list[str]:
    """Names (without .ipynb) of the notebooks shipped with dumpkit, sorted."""
    try:
        entries = list(_notebook_dir().iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name.removesuffix(".ipynb") for e in entries if e.name.endswith(".ipynb"))


def _notebook(name: str):
    """The shipped notebook NAME (with or without .ipynb), or a path to any .ipynb file."""
    if name.endswith(".ipynb") and Path(name).is_file():
        return Path(name)
    res = _notebook_dir().joinpath(f"{Path(name).name.removesuffix('.ipynb')}.ipynb")
    if not res.is_file():
        raise InputError(f"no notebook {name}", f"choose one of: {', '.join(notebook_names()) or 'none shipped'}"
                                                " or pass the path of an .ipynb file")
    return res


def copy_notebooks(dest: PathLike, overwrite: bool = False) -> list[Path]:
    """Copy the shipped notebooks into directory ``dest`` (created if missing) for
    JupyterLab. Their parameters cells name no dump: set ``dump`` before running.

    :param overwrite: replace notebooks already there (default: refuse)
    :return: the files written
    :raises OutputError: dest is not a directory, a notebook exists there, or writing fails
    """
    dest = Path(dest)
    names = notebook_names()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{dest} is not a directory", "pass a directory") from None
    except OSError as e:
        raise OutputError(f"cannot create {dest}: {e.strerror}", "choose another directory") from None
    targets = [dest / f"{n}.ipynb" for n in names]
    present = [t.name for t in targets if t.exists()]
    if present and not overwrite:
        raise OutputError(f"{dest} already holds {', '.join(present)}",
                          "choose an empty directory or allow overwriting")
    written = []
    for name, target in zip(names, targets, strict=True):
        try:
            target.write_bytes(_notebook_dir().joinpath(f"{name}.ipynb").read_bytes())
        except OSError as e:
            raise OutputError(f"writing {target} failed: {e.strerror}", "free space or write elsewhere") from None
        written.append(target)
    return written


# --- helpers the notebooks call ---------------------------------------------------------------

def _is_file_source(source: PathLike) -> bool:
    s = str(source)
    return s != "live" and not s.startswith("qmp:")


def capture_logs(dump, capture_log: PathLike | Sequence[PathLike] | None = None) -> list[str]:
    """The capture-kernel logs to use for a dump: the given one(s), or, when None, those
    saved beside the dump under their usual names (capture-dmesg.txt, vmcore-dmesg.txt,
    kexec-dmesg.log). An empty list means none.

    :param dump: a :class:`dumpkit.Dump` or a dump's path
    """
    if capture_log is not None:
        logs = [capture_log] if isinstance(capture_log, (str, os.PathLike)) else list(capture_log)
        return [str(p) for p in logs]
    from dumpkit.kdump.capture import find_capture_logs

    path = getattr(dump, "path", None) if not isinstance(dump, (str, os.PathLike)) else (
        Path(dump) if _is_file_source(dump) else None)
    return [str(p) for p in find_capture_logs(Path(path) if path is not None else None)]


def _read_text(path: PathLike) -> str:
    p = Path(path)
    try:
        return p.read_bytes().decode(errors="replace")
    except OSError as e:
        raise InputError(f"capture log {p}: {e.strerror}", "check the path") from None


def capture_timeline(logs: PathLike | Sequence[PathLike], side: str | None = None) -> list[dict]:
    """Events of capture-kernel logs in time order: IOMMU table copies and faults (as
    :func:`dumpkit.iommu.faults.parse_log` reads them) and the port-reset patch's
    ``kdump:`` lines (as :func:`dumpkit.verdict.judge` reads them).

    :param side: recorded in every event (for example "before"/"after")
    :return: dicts with side, log, time (s since the capture kernel booted), event, device
    """
    from dumpkit.iommu.faults import _strip, parse_log
    from dumpkit.verdict import NOT_RESET_LINE, RESET_LINE

    if isinstance(logs, (str, os.PathLike)):
        logs = [logs]
    events = []
    for log in logs:
        text, name = _read_text(log), Path(log).name
        for r in parse_log(text, name):
            events.append({"side": side, "log": name, "time": r.time,
                           "event": r.kind + (f" {r.reason}" if r.reason else ""), "device": r.requester})
        for line in text.splitlines():
            t, body = _strip(line)
            m = RESET_LINE.search(body) or NOT_RESET_LINE.search(body)
            if m:
                events.append({"side": side, "log": name, "time": t,
                               "event": "kdump: " + body[m.end("port"):].split("kdump: ", 1)[1].strip(),
                               "device": m.group("port")})
    return sorted(events, key=lambda e: (e["time"] is None, e["time"] or 0.0))


def plot_timeline(events: list[dict], ax=None, title: str | None = None):
    """The timeline of :func:`capture_timeline` events (of one or more sides) as a
    scatter of event kind against capture-kernel time.

    :return: the matplotlib axes, or None when there is no timed event
    """
    import matplotlib.pyplot as plt

    timed = [e for e in events if e["time"] is not None]
    if not timed:
        return None
    kinds = list(dict.fromkeys(e["event"] for e in timed))
    if ax is None:
        _fig, ax = plt.subplots(figsize=(12, 0.35 * len(kinds) + 1.5))
    sides = list(dict.fromkeys(e["side"] for e in timed))
    for i, side in enumerate(sides):
        mine = [e for e in timed if e["side"] == side]
        style = series_style(i)     # the shared palette: lightness and marker shape per side
        ax.scatter([e["time"] for e in mine], [kinds.index(e["event"]) for e in mine], s=50, marker=style.marker,
                   c=[style.face], edgecolors="black", linewidths=0.8, label=side or "capture kernel")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.invert_yaxis()   # earliest kind of event on top
    ax.set_xlabel("capture kernel time (s since boot)")
    if len(sides) > 1:
        ax.legend(title="dump")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    ax.figure.tight_layout()
    return ax


def hex_columns(frame, *columns: str):
    """A copy of a DataFrame with the given columns (addresses, register values) shown in
    hex; missing values stay empty. Columns the frame lacks are skipped."""
    import pandas as pd

    out = frame.copy()
    for col in columns:
        if col in out:
            out[col] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else f"{int(v):#x}"
                        for v in out[col]]
    return out


# --- provenance -----------------------------------------------------------------------------

def _debuginfo_list(debuginfo: PathLike | Sequence[PathLike] | None) -> list[str] | None:
    if debuginfo is None:
        return None
    items = [debuginfo] if isinstance(debuginfo, (str, os.PathLike)) else list(debuginfo)
    return [str(Path(p).resolve()) for p in items] or None


def _abs_source(source: PathLike) -> str:
    return str(Path(source).resolve()) if _is_file_source(source) else str(source)


def _dump_facts(role: str, dump) -> tuple[dict, list[dict]]:
    """The dump's row (sha256 filled in later) and its debug files."""
    row = {"role": role, "path": dump.source if dump.path is None else str(dump.path),
           "kernel": dump.info.kernel_release, "kernel build-id": dump.info.build_id, "sha256": None}
    files = [{"dump": role, "what": "kernel (vmlinux)", "path": dump.debug.path,
              "build-id": dump.debug.build_id or "checked by drgn", "note": f"found by {dump.debug.origin}"}]
    for m in dump.modules():   # a module without debug file: its build-id says which one to get
        files.append({"dump": role, "what": f"module {m.name}", "path": m.debug_file,
                      "build-id": m.build_id, "note": m.status if m.debug_file else (m.reason or m.status)})
    return row, files


def provenance(dumps: dict[str, PathLike], logs: dict[str, Sequence[PathLike]],
               debuginfo: PathLike | Sequence[PathLike] | None, parameters: dict,
               notebook: str | None = None) -> dict:
    """Every input of a report: the dumps (path, sha256, kernel and its build-id), capture
    logs (path, sha256), the debug files dumpkit loaded for each dump (the vmlinux and each
    module's, with build-ids), dumpkit, drgn and Python versions, the notebook, the
    parameters and the date.

    :param dumps: role ("dump", "after") -> source
    :param logs: role -> that dump's capture logs
    :raises DumpkitError: a dump that does not open (as :func:`dumpkit.open`)
    """
    prov, _pending = _provenance_start(dumps, logs, debuginfo, parameters, notebook)
    return _provenance_finish(prov, _pending)


def _provenance_start(dumps, logs, debuginfo, parameters, notebook):
    """Open the dumps (errors now, before any notebook runs) and start hashing the dump
    and log files in threads (hashlib releases the GIL; a vmcore can be gigabytes)."""
    import drgn

    import dumpkit

    pool = ThreadPoolExecutor(max_workers=4)
    pending = []
    rows, files, log_rows = [], [], []
    try:
        for role, source in dumps.items():
            dump = dumpkit.open(source, debuginfo=_debuginfo_list(debuginfo))
            row, dfiles = _dump_facts(role, dump)
            rows.append(row)
            files += dfiles
            if dump.path is not None:
                pending.append((row, pool.submit(file_sha256, dump.path)))
            else:
                row["sha256"] = "live target"
        for role, paths in logs.items():
            for p in paths:
                row = {"dump": role, "path": str(Path(p).resolve()), "sha256": None}
                log_rows.append(row)
                pending.append((row, pool.submit(file_sha256, p)))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    prov = {
        "dumps": rows,
        "capture logs": log_rows,
        "debug files": files,
        "software": {"dumpkit": dumpkit.__version__, "drgn": drgn.__version__,
                     "python": f"{platform.python_version()} ({sys.executable})", "notebook": notebook},
        "parameters": dict(parameters),
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
    }
    return prov, (pool, pending)


def _provenance_finish(prov: dict, pending) -> dict:
    pool, jobs = pending
    try:
        for row, fut in jobs:
            try:
                row["sha256"] = fut.result()
            except OSError as e:
                raise InputError(f"{row['path']}: {e.strerror}", "check the path") from None
    finally:
        pool.shutdown(wait=True)
    return prov


def _cell(value) -> str:
    text = "—" if value is None or value == "" else str(value)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _table(rows: list[dict]) -> str:
    if not rows:
        return "none\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def provenance_markdown(prov: dict) -> str:
    """The provenance of :func:`provenance` as a Markdown block: what ran, when and with
    which parameters, then the dumps, capture logs and debug files."""
    about = [{"item": "date", "value": prov["date"]}]
    about += [{"item": k, "value": v} for k, v in prov["software"].items() if v]
    about.append({"item": "parameters", "value": ", ".join(f"{k}={'—' if v is None else repr(v)}"
                                                         for k, v in prov["parameters"].items())})
    return (f"## Provenance\n\n{_table(about)}\n"
            f"### Dumps\n\n{_table(prov['dumps'])}\n"
            f"### Capture logs\n\n{_table(prov['capture logs'])}\n"
            f"### Debug files\n\n{_table(prov['debug files'])}")


# --- rendering --------------------------------------------------------------------------------

def _kernel_manager_class():
    """A kernel manager that starts the notebook's kernel with this Python, so a report
    from any install (a venv, a wheel) runs the dumpkit it was called from, whatever
    Jupyter kernelspecs the user has, over Unix sockets."""
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class ThisPythonKernelManager(AsyncKernelManager):
        # Unix sockets, not TCP ports on localhost: other local users cannot reach the kernel
        transport = "ipc"

        @property
        def kernel_spec(self):
            # ipykernel's own spec for sys.executable, with what this ipykernel supports
            spec = {**get_kernel_dict(), "display_name": f"Python {platform.python_version()} (dumpkit report)"}
            spec["argv"] = [sys.executable if a == spec["argv"][0] else a for a in spec["argv"]]
            return KernelSpec(resource_dir=tempfile.gettempdir(), **spec)

    return ThisPythonKernelManager


def _checked_logs(paths: list[str]) -> list[str]:
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError(f"capture log {p}: no such file" if not p.exists() else f"capture log {p} is not a file",
                             "check the path")
        out.append(str(p.resolve()))
    return out


def _nbconvert_templates() -> list[str]:
    """nbconvert's templates where its own install put them (PREFIX/share/jupyter), when
    Jupyter does not look there: it looks in this Python's prefix, which in a venv with
    system site packages is not where a system nbconvert keeps them."""
    import nbconvert
    from jupyter_core.paths import jupyter_path

    # PREFIX/lib/pythonX.Y/site-packages/nbconvert/__init__.py -> PREFIX/share/jupyter/...
    own = Path(nbconvert.__file__).resolve().parents[4] / "share" / "jupyter" / "nbconvert" / "templates"
    known = {Path(p).resolve() for p in jupyter_path("nbconvert", "templates")}
    return [str(own)] if own.is_dir() and own not in known else []


def _dumpkit_error(ename: str, evalue: str, notebook: str) -> DumpkitError:
    """A notebook's dumpkit exception re-raised here with its class (and exit code)."""
    import dumpkit.verdict  # noqa: F401  (CaptureMismatch and other subclasses defined there)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    cls = next((c for c in subclasses(DumpkitError) if c.__name__ == ename), None)
    if ename == "DumpkitError":
        cls = DumpkitError
    if cls is not None:
        return cls(f"notebook {notebook}: {evalue}")
    return DumpkitError(f"notebook {notebook} failed: {ename}: {evalue}", "run it interactively to see the cell")


def render_report(source: PathLike, output: PathLike, notebook: str | None = None,
                  capture_log: PathLike | Sequence[PathLike] | None = None,
                  debuginfo: PathLike | Sequence[PathLike] | None = None,
                  after: PathLike | None = None,
                  after_capture_log: PathLike | Sequence[PathLike] | None = None, progress: bool = False,
                  show_code: bool = False) -> str:
    """Run a shipped notebook on a dump and write it as HTML: its outputs (the conclusion
    first) and, last, its provenance.

    Without ``after`` the single-dump notebook (:data:`SINGLE_DUMP`) reports ``source``
    alone; with ``after`` the before/after notebook (:data:`BEFORE_AFTER`) compares the
    two. The notebook receives every parameter (``dump``, ``capture_log``, ``debuginfo``
    and, if it takes them, ``after``, ``after_capture_log``), so nothing falls back to
    a default naming another dump.

    :param notebook: a shipped notebook's name (see :func:`notebook_names`) or an .ipynb path
    :param capture_log: the capture kernel's log(s); None: those saved beside the dump
        (capture-dmesg.txt, vmcore-dmesg.txt); ``[]``: none
    :param debuginfo: debug files or directories for :func:`dumpkit.open`
    :param after: a second dump, the "after" side of a comparison
    :param after_capture_log: as ``capture_log``, for ``after``
    :param progress: show papermill's progress bar over the notebook's cells on stderr
    :param show_code: include the notebook's code cells (default: outputs and text only,
        as ``jupyter nbconvert --no-input``)
    :return: the output path
    :raises DumpkitError: with the class (exit code) of what failed
    """
    try:
        import nbformat
        import papermill
        from nbconvert import HTMLExporter
    except ImportError:
        raise DumpkitError("reports need the notebook extras", "pip install 'dumpkit[notebooks]'") from None
    name = notebook or (BEFORE_AFTER if after is not None else SINGLE_DUMP)
    nb_res = _notebook(name)
    nb_name = Path(str(nb_res)).name.removesuffix(".ipynb")
    with importlib.resources.as_file(nb_res) as nb_path:
        declared = set(papermill.inspect_notebook(str(nb_path)))
        if "dump" not in declared:
            raise InputError(f"notebook {nb_name} does not take one dump",
                             f"choose {SINGLE_DUMP} or {BEFORE_AFTER}, or run it with papermill")
        if after is not None and "after" not in declared:
            raise InputError(f"notebook {nb_name} compares nothing (no 'after' parameter)",
                             f"use {BEFORE_AFTER} for a before/after report")
        dumps = {"dump": _abs_source(source)}
        logs = {"dump": _checked_logs(capture_logs(source, capture_log))}
        if after is not None:
            dumps["after"] = _abs_source(after)
            logs["after"] = _checked_logs(capture_logs(after, after_capture_log))
        params = {"dump": dumps["dump"], "capture_log": logs["dump"], "debuginfo": _debuginfo_list(debuginfo),
                  "after": dumps.get("after"), "after_capture_log": logs.get("after")}
        params = {k: v for k, v in params.items() if k in declared}
        prov, pending = _provenance_start(dumps, logs, debuginfo, params,
                                          f"{nb_name} (sha256 {file_sha256(nb_path)[:16]})")
        with tempfile.TemporaryDirectory(prefix="dumpkit-report-") as tmp:
            executed = Path(tmp) / "executed.ipynb"
            try:
                papermill.execute_notebook(str(nb_path), str(executed), parameters=params, cwd=tmp,
                                           kernel_name="python3", progress_bar=progress, log_output=False,
                                           kernel_manager_class=_kernel_manager_class())
            except BaseException as e:
                pending[0].shutdown(wait=False, cancel_futures=True)
                if isinstance(e, papermill.PapermillExecutionError):
                    raise _dumpkit_error(e.ename, e.evalue, nb_name) from None
                if type(e).__name__ == "DeadKernelError":   # nbclient: the kernel process died
                    raise AnalysisError(f"notebook {nb_name}: its Python process died reading {dumps['dump']}",
                                        "run the notebook interactively or dumpkit info on the dump") from None
                raise
            nb = nbformat.read(executed, as_version=4)
    prov = _provenance_finish(prov, pending)
    # the notebook's own default parameters are not this report's: papermill's injected cell says what ran
    nb.cells = [c for c in nb.cells if "parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.cells.append(nbformat.v4.new_markdown_cell(provenance_markdown(prov)))   # last: the reader wants the answer
    nb.metadata["title"] = f"dumpkit report: {nb_name}"
    for i, cell in enumerate(nb.cells):   # fixed ids: rendering twice gives the same HTML but the date
        cell.id = f"cell-{i}"
    templates = _nbconvert_templates()
    html, _ = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True, exclude_input=not show_code,
                           extra_template_basedirs=templates, extra_template_paths=templates).from_notebook_node(nb)
    _write_whole(Path(output), _readable(html))
    return str(output)


REPORT_CSS = """<style>
/* dumpkit report: nothing wider than the page (pictures scale down, tables wrap) */
body { max-width: 100%; overflow-wrap: anywhere; }
.jp-RenderedImage img, .jp-OutputArea-output img { max-width: 100%; height: auto; }
.jp-RenderedHTMLCommon table { table-layout: auto; max-width: 100%; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal; overflow-wrap: anywhere; }
.jp-OutputArea-output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
</style>
"""


def _readable(html: str) -> str:
    """The exported page with :data:`REPORT_CSS` at the end of its head."""
    head = html.find("</head>")
    return html if head < 0 else html[:head] + REPORT_CSS + html[head:]


def _write_whole(output: Path, text: str) -> None:
    """Write beside the output and rename over it: a full disk or a signal never leaves a
    cut report in its place (a device or FIFO output is written directly)."""
    import os
    import stat

    try:
        regular = stat.S_ISREG(os.stat(output).st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:
        output.write_text(text)
        return
    real = Path(os.path.realpath(output))
    tmp = real.with_name(f".{real.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, real)
    finally:
        tmp.unlink(missing_ok=True)
