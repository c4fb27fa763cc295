"""Every walk over a kernel list is bounded: lists damaged in a copy of the ELF sample
vmcore (a loop, a wild pointer) end each command with one line naming the list and
never hang, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from test_bad_input import _patch_elf_phys, elf_vmcore  # noqa: F401  (fixture)

import dumpkit
from dumpkit.target.walk import ListCorrupt, bounded_list


def _damage_drhd_list(src, dst, damage: str):
    from drgn.helpers.linux.mm import virt_to_phys

    shutil.copy(src, dst)
    prog = dumpkit.open(dst).prog
    head = prog["dmar_drhd_units"]
    first = head.next
    new_next = first.value_() if damage == "loop" else 0xFFFF888F_DEAD0000
    _patch_elf_phys(dst, virt_to_phys(prog, first.next.address_of_()).value_(), new_next.to_bytes(8, "little"))
    return dst


@pytest.mark.parametrize("damage", ["loop", "wild pointer"])
def test_bounded_list_stops_on_damage(tmp_path, elf_vmcore, damage):  # noqa: F811
    broken = _damage_drhd_list(elf_vmcore, tmp_path / "vmcore.elf", damage)
    prog = dumpkit.open(broken).prog
    with pytest.raises(ListCorrupt, match="dmar_drhd_units"):
        list(bounded_list(prog["dmar_drhd_units"].address_of_(), "struct dmar_drhd_unit", "list",
                          "dmar_drhd_units"))


@pytest.mark.parametrize("command", ["dmar", "verdict"])
def test_damaged_iommu_unit_list_is_named_not_hung(tmp_path, elf_vmcore, command):  # noqa: F811
    broken = _damage_drhd_list(elf_vmcore, tmp_path / "vmcore.elf", "loop")
    r = subprocess.run([sys.executable, "-m", "dumpkit.cli", command, str(broken), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr
    assert "dmar_drhd_units" in r.stdout + r.stderr
