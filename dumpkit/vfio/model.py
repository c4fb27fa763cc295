"""What the crashed kernel knew of a PCI function owned through VFIO, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

from dumpkit.vfio.kvm import VmSlot, gpa_of

__all__ = ["VfioMapping", "VfioOwner", "Process", "process_of"]


@dataclass(frozen=True)
class Process:
    """A process as the kernel's ``task_struct`` named it."""

    pid: int
    comm: str

    def __str__(self) -> str:
        return f"pid {self.pid} {self.comm}"


def process_of(task) -> Process | None:
    """The ``struct task_struct *`` ``task`` as a :class:`Process`, or None for NULL."""
    if not task:
        return None
    return Process(task.pid.value_(), task.comm.string_().decode(errors="replace"))


@dataclass(frozen=True)
class VfioMapping:
    """One ``VFIO_IOMMU_MAP_DMA`` of the type1 container (``struct vfio_dma``): the
    device sees ``size`` bytes at ``iova``, which are the process's memory at ``vaddr``."""

    iova: int
    size: int
    vaddr: int
    read: bool
    write: bool
    process: Process | None
    iommu_mapped: bool
    address: int                 # the struct vfio_dma *

    @property
    def end(self) -> int:
        return self.iova + self.size

    def contains(self, iova: int) -> bool:
        return self.iova <= iova < self.end


@dataclass
class VfioOwner:
    """A function bound to a VFIO driver (``vfio-pci`` or a ``*-vfio-pci`` variant).

    :param open_count: how many opens of the device are live (0: nobody has it; vfio-pci
        clears Bus Master and resets the function when the last one closes)
    :param group_type: "iommu" (translated by an IOMMU), "emulated" (mediated, no DMA of
        its own) or "no-iommu" (unsafe no-IOMMU mode: DMA reaches all memory)
    :param container: the IOMMU backend the group is attached to ("vfio-iommu-type1 v2"),
        "iommufd" for a device bound through iommufd, None when the group has none
    :param vm: a ``struct kvm`` is attached: a VM owns it; ``vm_pid`` is the VMM's pid
        where the kernel keeps it, ``vm_slots`` the VM's memory slots (guest-physical
        ranges of the VMM's memory), empty when unreadable (``unknown["vm_slots"]`` says why)
    :param mappings: the container's DMA mappings (every device in the container sees them)
    :param group_domain, default_domain: the IOMMU group's current domain type
        ("unmanaged" while VFIO owns it) and the one the kernel's DMA API uses
    :param memory_enabled: Memory Space Enable as vfio-pci's virtual config space keeps it
        (it keeps no Bus Master bit: that write goes to the device only)
    :param unknown: what could not be read, and why (name -> reason)
    :param sources: the kernel objects read, with their addresses
    """

    bdf: str
    driver: str
    device_address: int | None = None
    open_count: int | None = None
    group_id: int | None = None
    group_type: str | None = None
    container: str | None = None
    vm: bool = False
    vm_pid: int | None = None
    vm_slots: list[VmSlot] = field(default_factory=list)
    mappings: list[VfioMapping] = field(default_factory=list)
    group_domain: str | None = None
    default_domain: str | None = None
    memory_enabled: bool | None = None
    unknown: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def is_open(self) -> bool | None:
        return None if self.open_count is None else self.open_count > 0

    @property
    def processes(self) -> list[Process]:
        """Who mapped the memory the device can reach (the type1 container records the
        mapping task's thread-group leader)."""
        return list(dict.fromkeys(m.process for m in self.mappings if m.process is not None))

    @property
    def writable_bytes(self) -> int:
        return sum(m.size for m in self.mappings if m.write)

    @property
    def owner_text(self) -> str:
        """Who owns it, in words: "a VM (VMM pid 812)", "userspace (pid 301 vfio-rx)"."""
        who = ", ".join(str(p) for p in self.processes)
        if self.vm:
            vmm = f"VMM pid {self.vm_pid}" if self.vm_pid is not None else "VMM pid not kept by this kernel"
            return f"a VM ({vmm}" + (f"; mapped by {who}" if who else "") + ")"
        return f"userspace ({who})" if who else "userspace (no process recorded: no DMA mapping)"

    def _guest_physical(self, vaddr: int, whose: str) -> str:
        # from the VM's memslots, not assumed: a VMM maps guest RAM at IOVA = guest-physical
        # address only without a virtual IOMMU in the guest
        vmm = f"VMM memory at {vaddr:#x}, mapped by {whose}"
        hit = gpa_of(self.vm_slots, vaddr)
        if hit:
            return f"guest-physical {hit[1]:#x} of the VM (memslot {hit[0].slot}; {vmm})"
        if self.vm_slots:
            return f"{vmm}, in none of the VM's {len(self.vm_slots)} memory slots"
        why = self.unknown.get("vm_slots") or self.unknown.get("vm") or "the VM's memory slots were not read"
        return f"{vmm}; guest-physical address unknown: {why}"

    def mapping_at(self, iova: int) -> VfioMapping | None:
        """The mapping that holds ``iova``, or None."""
        return next((m for m in self.mappings if m.contains(iova)), None)

    def describe_iova(self, iova: int) -> str | None:
        """``iova`` in the owner's terms: "IOVA 0x… = offset 0x… of pid N comm's buffer at
        0x…"; for a VM the guest-physical address its memory slots give that memory;
        None when no mapping holds it."""
        m = self.mapping_at(iova)
        if m is None:
            return None
        offset, vaddr = iova - m.iova, m.vaddr + iova - m.iova
        whose = str(m.process) if m.process else "the owner"
        if self.vm:
            return f"IOVA {iova:#x} = " + self._guest_physical(vaddr, whose)
        return f"IOVA {iova:#x} = offset {offset:#x} of {whose}'s buffer at {m.vaddr:#x} (address {vaddr:#x})"
