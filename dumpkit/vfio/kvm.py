"""The VM a VFIO device is attached to (``vfio_device.kvm``): the VMM's pid and the VM's
memory slots, which turn the VMM's memory that the container mapped into the VM's
guest-physical addresses.

``struct kvm`` is defined in ``include/linux/kvm_host.h``. Debian's vmlinux debug info
has it whole (code built into the kernel includes that header), so kvm.ko's debug file is
not needed there (tests/test_vfio.py checks it); vfio's own debug info knows the type by
name only, hence the lookup by name.

Layout history (probes made once per program, :func:`dumpkit.kernel.has_member`):

- v5.17 (commit a54d806688fe, "KVM: Keep memslots in tree-based structures instead of
  array-based ones"): ``struct kvm_memslots`` keeps its slots in ``gfn_tree``, an rb-tree
  of ``kvm_memory_slot.gfn_node[node_idx]``; before, an array ``memslots[used_slots]``.
- v5.18 added ``struct kvm.userspace_pid`` (the VMM's pid, for its stats files).
- Address space 0 is the guest's memory; x86 keeps a second one for SMM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.rbtree import rb_first, rb_next

from dumpkit.kernel import has_member

__all__ = ["VmSlot", "VmFacts", "gpa_of", "vm_facts", "MAX_SLOTS"]

PAGE_SHIFT = 12
# KVM_MEM_SLOTS_NUM is SHRT_MAX: a longer tree is damage
MAX_SLOTS = 32767
NO_KVM_TYPE = ("struct kvm is not in the loaded debug info (neither vmlinux's nor a module's: pass the kvm "
               "module's debug file with --debuginfo)")


@dataclass(frozen=True)
class VmSlot:
    """One memory slot of the VM: guest-physical ``gpa`` .. +``size`` is the VMM's memory
    at ``hva``."""

    slot: int
    gpa: int
    size: int
    hva: int

    def gpa_of(self, hva: int) -> int | None:
        """The guest-physical address of the VMM's address ``hva``, or None outside the slot."""
        return self.gpa + hva - self.hva if self.hva <= hva < self.hva + self.size else None


@dataclass
class VmFacts:
    """What the crashed kernel kept of a VM: ``pid`` of its VMM (None before v5.18), its
    memory slots in guest-physical order, and what could not be read, with why."""

    address: int
    pid: int | None = None
    slots: list[VmSlot] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)



def gpa_of(slots: list[VmSlot], hva: int) -> tuple[VmSlot, int] | None:
    """The slot of ``slots`` that holds the VMM's address ``hva``, and its guest-physical
    address, or None."""
    for s in slots:
        gpa = s.gpa_of(hva)
        if gpa is not None:
            return s, gpa
    return None


def _slot(mem: drgn.Object) -> VmSlot:
    npages = mem.npages.value_()
    return VmSlot(mem.id.value_(), mem.base_gfn.value_() << PAGE_SHIFT, npages << PAGE_SHIFT,
                  mem.userspace_addr.value_())


def _tree_slots(slots: drgn.Object) -> list[VmSlot]:
    """v5.17+: the gfn rb-tree of the active set, bounded and loop-checked."""
    idx = slots.node_idx.value_()
    out, seen = [], set()
    node = rb_first(slots.gfn_tree.address_of_())
    while node:
        if node.value_() in seen or len(out) >= MAX_SLOTS:
            raise ValueError(f"the VM's memslot tree loops or exceeds {MAX_SLOTS} slots at {node.value_():#x}")
        seen.add(node.value_())
        # gfn_node[idx] is the node of this set: step back to the slot
        mem = drgn.Object(slots.prog_, "struct kvm_memory_slot *",
                          node.value_() - drgn.offsetof(slots.prog_.type("struct kvm_memory_slot"),
                                                        f"gfn_node[{idx}]"))
        out.append(_slot(mem))
        node = rb_next(node)
    return out


def _array_slots(slots: drgn.Object) -> list[VmSlot]:
    """Before v5.17: ``memslots[used_slots]``."""
    n = slots.used_slots.value_()
    if not 0 <= n <= MAX_SLOTS:
        raise ValueError(f"the VM's memslot array claims {n} slots")
    return sorted((_slot(slots.memslots[i]) for i in range(n)), key=lambda s: s.gpa)


def vm_facts(kvm: drgn.Object) -> VmFacts:
    """The VMM's pid and the VM's memory slots (address space 0) of ``kvm`` (a
    ``struct kvm *``, possibly of an incomplete type). Never raises: what could not be
    read is in ``unknown``."""
    prog = kvm.prog_
    facts = VmFacts(kvm.value_())
    try:
        # by name: the complete type of kvm.ko's debug info, where vfio's is a declaration
        kvm = drgn.Object(prog, "struct kvm *", kvm.value_())
        kvm.memslots  # noqa: B018 (the complete type, or an error)
    except (LookupError, AttributeError, TypeError):
        facts.unknown["vm"] = NO_KVM_TYPE
        return facts
    if has_member(prog, "struct kvm", "userspace_pid"):
        facts.pid = kvm.userspace_pid.value_()
    else:
        facts.unknown["pid"] = "struct kvm has no userspace_pid (before v5.18)"
    try:
        slots = kvm.memslots[0]
        if not slots:
            facts.unknown["slots"] = "the VM has no memslot set"
        elif has_member(prog, "struct kvm_memslots", "gfn_tree"):
            facts.slots = _tree_slots(slots)
        else:
            facts.slots = _array_slots(slots)
    except (drgn.FaultError, LookupError, ValueError) as e:
        facts.slots = []
        facts.unknown["slots"] = f"the VM's memory slots are unreadable: {e}"
    return facts
