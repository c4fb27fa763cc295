"""Run a notebook on a dump with papermill and write HTML whose first block records
provenance: dump sha256, debug file build-id, dumpkit and drgn versions, parameters, date."""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path

from dumpkit.errors import DumpkitError, InputError

__all__ = ["render_report", "NOTEBOOKS", "provenance"]

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def provenance(source: str, debuginfo: str | None, parameters: dict) -> dict:
    import drgn

    import dumpkit

    dump = dumpkit.open(source, debuginfo=debuginfo)
    return {
        "dump": source,
        "dump sha256": dump.sha256() or "live target",
        "kernel build-id": dump.info.build_id,
        "debug file": f"{Path(dump.debug.path).name if dump.debug.path else None} (build-id "
                      f"{dump.debug.build_id or 'checked by drgn'})",
        "dumpkit": dumpkit.__version__,
        "drgn": drgn.__version__,
        "parameters": ", ".join(f"{k}={v!r}" for k, v in parameters.items()),
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
    }


def render_report(source: str, output: str, notebook: str = "02-dma-at-crash-before-after",
                  capture_log: str | None = None, debuginfo: str | None = None,
                  extra: dict | None = None) -> str:
    """Execute notebooks/NOTEBOOK.ipynb with ``dump=source`` (and the capture log, debug
    file, extra parameters) and export it to HTML at output.

    :return: the output path
    """
    try:
        import nbformat
        import papermill
        from nbconvert import HTMLExporter
    except ImportError:
        raise DumpkitError("reports need the notebook extras", "pip install 'dumpkit[notebooks]'") from None
    nb_path = NOTEBOOKS / f"{notebook.removesuffix('.ipynb')}.ipynb"
    if not nb_path.is_file():
        names = ", ".join(p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb")))
        raise InputError(f"no notebook {notebook}", f"choose one of: {names}")
    params = {"dump": str(Path(source).resolve()) if not str(source).startswith(("qmp:", "live")) else source,
              "capture_log": str(Path(capture_log).resolve()) if capture_log else None,
              "debuginfo": debuginfo, **(extra or {})}
    prov = provenance(source, debuginfo, params)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "executed.ipynb"
        try:
            papermill.execute_notebook(str(nb_path), str(executed), parameters=params, cwd=str(NOTEBOOKS),
                                       kernel_name="python3", progress_bar=False, log_output=False)
        except papermill.PapermillExecutionError as e:
            raise DumpkitError(f"notebook {notebook} failed: {e.ename}: {e.evalue}",
                               "run it interactively to see the cell") from None
        nb = nbformat.read(executed, as_version=4)
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in prov.items())
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"## Provenance\n\n| | |\n|---|---|\n{rows}\n"))
    for i, cell in enumerate(nb.cells):   # fixed ids: rendering twice gives the same HTML but the date
        cell.id = f"cell-{i}"
    html, _ = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    Path(output).write_text(html)
    return output
