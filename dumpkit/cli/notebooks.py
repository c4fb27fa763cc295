"""dumpkit notebooks: copy the packaged notebooks into a directory for JupyterLab."""

from __future__ import annotations

from dumpkit.cli.output import emit

NAME = "notebooks"
HELP = "copy the packaged notebooks into a directory for JupyterLab"
EXAMPLES = ["dumpkit notebooks ~/dumpkit-notebooks",
            "dumpkit notebooks ~/dumpkit-notebooks --force   # replace the copies already there"]
GLOBALS = ()


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR", help="where to copy them (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already there")


def run(args) -> int:
    from dumpkit.report import copy_notebooks

    paths = copy_notebooks(args.dir, overwrite=args.force)
    emit("\n".join(str(p) for p in paths))
    return 0
