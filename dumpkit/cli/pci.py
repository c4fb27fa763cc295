"""dumpkit pci: the PCI tree with DMA-relevant state, in lspci's views and habits."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from dumpkit.cli.output import Records, add_format, emit, render
from dumpkit.cli.shared import SOURCE_HELP, check_vmcoreinfo, kernel_data, open_dump
from dumpkit.errors import AnalysisError, UsageError

NAME = "pci"
HELP = "the PCI tree with DMA-relevant state"
EXAMPLES = ["dumpkit pci sample-dumps/copied-traffic/vmcore.kdump            # the tree (lspci -tv shape)",
            "dumpkit pci DUMP -nn -k -s 02:00.0      # lspci -nnk -s 02:00.0: ids, subsystem, driver",
            "dumpkit pci DUMP -v -s 2:0.0            # the lspci -vv-like block of one function",
            "dumpkit pci DUMP -d 8086: -t            # the tree down to Intel's functions",
            "dumpkit pci DUMP --csv -d ::0200 > nics.csv"]
GLOBALS = ("--debuginfo", "--debuginfod", "--vmcoreinfo")


class SelectAction(argparse.Action):
    """-s and -d append (flag, text) to one list, so that they apply in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        flag = "-s" if option_string in ("-s", "--slot") else "-d"
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((flag, values))
        setattr(namespace, self.dest, items)


def add_arguments(p) -> None:
    p.add_argument("source", help=SOURCE_HELP)
    fmt = add_format(p, PciRecords.formats(), helps={"--json": "JSON: every field, numbers and hex strings",
                                                     "--csv": "CSV, one row per function"})
    fmt.add_argument("--tree", "-t", action="store_true",
                     help="the tree in the shape of lspci -tv, each line's last function marked with its BDF, "
                          "driver and DMA flags (default without -s, -d, -n, -k)")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="one block per function like lspci -vv -nn: ids and names, class, subsystem, struct "
                        "pci_dev address, saved Command/Status, IRQ, BARs, bridge windows, PCIe link, MSI, AER, "
                        "kernel state, DMA at crash, driver and modules (with --tree: the tree, which names "
                        "functions anyway)")
    p.add_argument("-s", "--slot", action=SelectAction, dest="select", metavar="SLOT",
                   help="[[[[DOMAIN]:]BUS]:][DEV][.[FUNC]]: only these functions, as lspci -s (hex; empty or * = any): 02:00.0, 2:0.0, "
                        "0000:02:00.0, 02: (a bus), 1f (a device on any bus), .1 (function 1 anywhere); "
                        "with any view. No match: no output, exit 0. Several -s/-d refine one filter "
                        "as with lspci (a later one sets only the fields it gives)")
    p.add_argument("-d", "--id", action=SelectAction, dest="select", metavar="IDS",
                   help="[VENDOR]:[DEVICE][:CLASS[:PROGIF]]: only functions with these ids, as lspci -d (hex; empty or * = any; x in CLASS is a "
                        "wildcard digit): 8086:10d3, 1af4:, ::0200, ::02xx")
    p.add_argument("-n", dest="numeric", action="count", default=0,
                   help="numeric ids instead of names (-n), or both as lspci -nn: "
                        "'Ethernet controller [0200]: Intel Corporation 82574L ... [8086:10d3]' (-nn); "
                        "without -t/-v: one line per function, as plain lspci")
    p.add_argument("-k", dest="kernel", action="store_true",
                   help="the kernel driver in use and the loaded modules whose PCI driver matches each function, "
                        "as lspci -k (built-in drivers and modules not loaded are not known from a dump); "
                        "without -v: one line per function with its Subsystem, driver and modules; with "
                        "--json/--csv: a kernel_modules field")
    p.add_argument("-D", dest="domains", action="store_true",
                   help="always show the PCI domain in the one-line list (lspci -D; by default only when some "
                        "function is outside domain 0000)")


def pci_filter(args):
    """lspci's one filter from every -s and -d, in the order given (a later one overrides
    the fields it gives); None when neither was given. Exit 2 with pciutils' own message
    for what lspci refuses."""
    from dumpkit.pci.select import FilterError, parse_id, parse_slot

    f = None
    for flag, text in args.select or []:
        try:
            f = (parse_slot if flag == "-s" else parse_id)(text, f)
        except FilterError as e:
            fix = ("write [[[[DOMAIN]:]BUS]:][DEV][.[FUNC]] in hex, for example 02:00.0, 2:0.0, 02: or .1"
                   if flag == "-s" else "write [VENDOR]:[DEVICE][:CLASS[:PROGIF]] in hex, for example 8086: or ::0200")
            raise UsageError(f"{flag} {text}: {e}", fix) from None
    return f


def text_view(args) -> str:
    """Which text view ``pci`` prints: tree (-t, or no option), verbose (-v), or list
    (lspci's one line per function: -s, -d, -n or -k without -t/-v)."""
    if args.tree:
        return "tree"
    if args.verbose:
        return "verbose"
    if args.select or args.numeric or args.kernel:
        return "list"
    return "tree"


def check_views(args) -> None:
    """The options that apply to text only, and -k that does not apply to the tree (exit 2)."""
    if args.verbose and args.format != "text":
        raise UsageError("-v applies to text output", "drop --json/--csv, or -v")
    if args.numeric and args.format != "text":
        raise UsageError("-n applies to text output (--json and --csv give names and numbers)",
                         "drop -n, or --json/--csv")
    if args.kernel and args.format == "text" and text_view(args) == "tree":
        raise UsageError("-k applies to the list, -v, --json and --csv views, not the tree",
                         "drop -t, or -k")


@dataclass
class PciRecords(Records):
    """The selected functions of the tree (``part``), in the view the options ask for."""

    args: argparse.Namespace
    tree: object
    part: object
    selected: list
    modules: dict | None
    select: object

    def text(self) -> str:
        from dumpkit.pci.render import NAMES_AND_NUMBERS, detail_text, terse_text, tree_text

        args, view = self.args, text_view(self.args)
        if view == "verbose":
            return detail_text(self.tree, [d.bdf for d in self.selected], numeric=args.numeric or NAMES_AND_NUMBERS,
                               modules=self.modules)
        if view == "list":
            return terse_text(self.tree, self.selected, numeric=args.numeric, kernel=args.kernel,
                              modules=self.modules, domains=True if args.domains else None)
        return tree_text(self.tree, select=None if self.select is None else self.select.matches,
                         numeric=args.numeric)

    def json(self) -> str:
        from dumpkit.pci.render import to_json

        return to_json(self.part, modules=self.modules if self.args.kernel else None)

    def frame(self):
        from dumpkit.pci.render import to_frame

        return to_frame(self.part, modules=self.modules if self.args.kernel else None)


def kernel_modules(args, prog, selected) -> dict | None:
    """lspci -k's modules by BDF, for -k and -v (warnings on stderr)."""
    if not selected or not (args.kernel or (args.format == "text" and text_view(args) == "verbose")):
        return None
    from dumpkit.pci.drivers import kernel_modules as find

    found = find(prog, selected)
    for error in found.errors:
        print(f"dumpkit: warning: kernel modules: {error}", file=sys.stderr)
    return found.by_bdf


def run(args) -> int:
    from dumpkit.pci import collect_pci
    from dumpkit.pci.collect import PciTree

    check_views(args)
    f = pci_filter(args)
    check_vmcoreinfo(args)
    with kernel_data(args.source):
        dump = open_dump(args)
        tree = collect_pci(dump.prog)
        selected = [d for d in tree if f is None or f.matches(d)]
        modules = kernel_modules(args, dump.prog, selected)
    if selected:
        part = PciTree(selected, pci_ids=tree.pci_ids, errors=tree.errors)
        emit(render(PciRecords(args, tree, part, selected, modules, f), args.format))
    # nothing selected: no output and exit 0, as lspci
    if tree.errors:
        # what could be read is printed; the first problem is the error line
        raise AnalysisError(tree.errors[0], f"{len(tree)} functions shown")
    return 0
