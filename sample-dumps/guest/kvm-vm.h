/*
 * vfio-rx --vm: the NIC assigned to a KVM virtual machine, as a VMM assigns it. Included
 * by vfio-rx.c after its register helpers (rd/wr, device_fd).
 *
 * The VMM (this process) creates a VM, puts the VFIO group on the VM's KVM-VFIO device
 * before it opens the device (so the host kernel attaches the VM to it: vfio_device.kvm),
 * gives the VM one memory slot of guest RAM at guest-physical 0 and maps that RAM into
 * the container at IOVA = guest-physical address, as QEMU maps a VM's RAM for an assigned
 * device. One vCPU runs a small driver of ours (guest_code below, 32-bit flat protected
 * mode, no paging): it enables the function's memory decoding and bus mastering through
 * configuration mechanism #1 (ports 0xCF8/0xCFC), brings the link up, builds a legacy RX
 * ring of NDESC descriptors in guest RAM and keeps recycling it. The BAR is not given to
 * the VM as memory: each MMIO access exits to the VMM, which forwards it to the device's
 * BAR0 region (QEMU's slow path for a BAR it does not map), as it forwards configuration
 * accesses to the VFIO config region. HLT exits to the VMM (no in-kernel irqchip), which
 * sleeps 10 ms: the guest's recycle interval.
 *
 * Under QEMU/TCG this runs as a nested guest: the factory's guest CPU is "max" with the
 * AMD vendor, so kvm_amd loads (TCG emulates SVM with nested paging).
 */
#ifndef DUMPKIT_KVM_VM_H
#define DUMPKIT_KVM_VM_H

#include <linux/kvm.h>

#ifndef KVM_DEV_VFIO_FILE                /* the 6.6 headers' name of the same attribute group */
#define KVM_DEV_VFIO_FILE KVM_DEV_VFIO_GROUP
#define KVM_DEV_VFIO_FILE_ADD KVM_DEV_VFIO_GROUP_ADD
#endif

/* guest-physical layout: the parameter block, the code, the ring, its buffers */
#define VM_PARAMS_GPA 0x0000
#define VM_CODE_GPA 0x1000
#define VM_RING_GPA 0x10000
#define VM_BUFS_GPA 0x20000
#define VM_RAM_SIZE (VM_BUFS_GPA + NDESC * BUF_SIZE)
#define VM_BAR0_GPA 0xfebc0000             /* outside guest RAM: every access exits */

/* the parameter block the guest driver keeps (u32 each, at VM_PARAMS_GPA) */
#define VP_STATE 0x0                        /* 1 once the ring is given to the device */
#define VP_RECEIVED 0x4
#define VP_RDH 0x8
#define VP_RDT 0xc

#define S_(x) #x
#define S(x) S_(x)
/* the assembler takes no C suffixes: NDESC, BUF_SIZE and RCTL as plain numbers */
#define A_NDESC 4096
#define A_BUF_SIZE 2048
#define A_RCTL 0x0400801a                   /* EN | UPE | MPE | BAM | SECRC */
_Static_assert(A_NDESC == NDESC && A_BUF_SIZE == BUF_SIZE, "guest driver constants");
_Static_assert(A_RCTL == (RCTL_EN | RCTL_UPE | RCTL_MPE | RCTL_BAM | RCTL_SECRC), "guest RCTL");

/* The guest driver, 32-bit code copied to VM_CODE_GPA (position-independent: absolute
 * addresses are guest-physical constants, jumps relative). Error exits: port 0x10 (a
 * descriptor behind RDH without DD, the index in eax), 0x11 (RDH outside the ring). */
__asm__(".pushsection .rodata.guest_code, \"a\"\n"
	".code32\n"
	".intel_syntax noprefix\n"
	".globl guest_code, guest_code_end\n"
	"guest_code:\n"
	"  mov ebx, " S(VM_BAR0_GPA) "\n"
	"  mov dx, 0xcf8\n"
	"  mov eax, 0x80000004\n"            /* bus 0 dev 0 fn 0: the VM's only function, Command */
	"  out dx, eax\n"
	"  mov dx, 0xcfc\n"
	"  in ax, dx\n"
	"  or ax, 6\n"                       /* memory decoding, bus master */
	"  out dx, ax\n"
	"  mov dword ptr [ebx + " S(E1000_RCTL) "], 0\n"
	"  mov dword ptr [ebx + " S(E1000_IMC) "], 0xffffffff\n"
	"  mov eax, [ebx + " S(E1000_ICR) "]\n"
	"  mov eax, [ebx + " S(E1000_CTRL) "]\n"
	"  or eax, 0x40\n"                   /* CTRL.SLU */
	"  and eax, 0x7bffffff\n"            /* not CTRL.RST, CTRL.PHY_RST */
	"  mov [ebx + " S(E1000_CTRL) "], eax\n"
	"1:\n"
	"  mov eax, [ebx + " S(E1000_STATUS) "]\n"
	"  test eax, 2\n"                    /* STATUS.LU */
	"  jnz 2f\n"
	"  hlt\n"
	"  jmp 1b\n"
	"2:\n"
	"  mov edi, " S(VM_RING_GPA) "\n"
	"  mov eax, " S(VM_BUFS_GPA) "\n"
	"  xor ecx, ecx\n"
	"3:\n"
	"  mov [edi], eax\n"
	"  mov dword ptr [edi + 4], 0\n"
	"  mov dword ptr [edi + 8], 0\n"
	"  mov dword ptr [edi + 12], 0\n"
	"  add edi, 16\n"
	"  add eax, " S(A_BUF_SIZE) "\n"
	"  inc ecx\n"
	"  cmp ecx, " S(A_NDESC) "\n"
	"  jb 3b\n"
	"  mov dword ptr [ebx + " S(E1000_RFCTL) "], 0\n"
	"  mov dword ptr [ebx + " S(E1000_MRQC) "], 0\n"
	"  mov dword ptr [ebx + " S(E1000_RDBAL0) "], " S(VM_RING_GPA) "\n"
	"  mov dword ptr [ebx + " S(E1000_RDBAH0) "], 0\n"
	"  mov dword ptr [ebx + " S(E1000_RDLEN0) "], " S(A_NDESC) " * 16\n"
	"  mov dword ptr [ebx + " S(E1000_RDH0) "], 0\n"
	"  mov dword ptr [ebx + " S(E1000_RDT0) "], 0\n"
	"  mov dword ptr [ebx + " S(E1000_RCTL) "], " S(A_RCTL) "\n"
	"  mov dword ptr [ebx + " S(E1000_RDT0) "], " S(A_NDESC) " - 1\n"
	"  mov dword ptr [" S(VM_PARAMS_GPA) " + " S(VP_STATE) "], 1\n"
	"  xor ecx, ecx\n"                   /* the next descriptor to take back */
	"4:\n"
	"  hlt\n"
	"  mov eax, [ebx + " S(E1000_RDH0) "]\n"
	"  and eax, 0xffff\n"
	"  cmp eax, " S(A_NDESC) "\n"
	"  jae 9f\n"
	"5:\n"
	"  cmp ecx, eax\n"
	"  je 6f\n"
	"  mov edx, ecx\n"
	"  shl edx, 4\n"
	"  add edx, " S(VM_RING_GPA) "\n"
	"  test byte ptr [edx + 12], 1\n"    /* DD */
	"  jz 8f\n"
	"  mov byte ptr [edx + 12], 0\n"
	"  mov word ptr [edx + 8], 0\n"
	"  inc dword ptr [" S(VM_PARAMS_GPA) " + " S(VP_RECEIVED) "]\n"
	"  inc ecx\n"
	"  and ecx, " S(A_NDESC) " - 1\n"
	"  jmp 5b\n"
	"6:\n"
	"  mov [" S(VM_PARAMS_GPA) " + " S(VP_RDH) "], eax\n"
	"  add eax, " S(A_NDESC) " - 1\n"
	"  and eax, " S(A_NDESC) " - 1\n"
	"  mov [ebx + " S(E1000_RDT0) "], eax\n"
	"  mov [" S(VM_PARAMS_GPA) " + " S(VP_RDT) "], eax\n"
	"  jmp 4b\n"
	"8:\n"
	"  mov eax, ecx\n"
	"  mov dx, 0x10\n"
	"  out dx, eax\n"
	"  jmp 8b\n"
	"9:\n"
	"  mov dx, 0x11\n"
	"  out dx, eax\n"
	"  jmp 9b\n"
	"guest_code_end:\n"
	".att_syntax prefix\n"
	".code64\n"
	".popsection\n");
extern const unsigned char guest_code[], guest_code_end[];

struct vm {
	int kvm, fd, vcpu;
	struct kvm_run *run;
	unsigned char *ram;
	uint32_t cf8;                       /* configuration address latched at port 0xCF8 */
	uint64_t cfg_off;                   /* the VFIO config region's offset in the device fd */
	uint64_t mmio_exits, io_exits, hlt_exits;
};

/* the VM and its KVM-VFIO device, the group put on it: before VFIO_GROUP_GET_DEVICE_FD,
 * so that opening the device attaches the VM to it */
static void vm_create(struct vm *vm, int group)
{
	vm->kvm = open("/dev/kvm", O_RDWR);
	if (vm->kvm < 0)
		die("/dev/kvm: %s (kvm_amd not loaded, or the CPU has no SVM)", strerror(errno));
	if (ioctl(vm->kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		die("KVM API version is not %d", KVM_API_VERSION);
	vm->fd = ioctl(vm->kvm, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	struct kvm_create_device cd = {.type = KVM_DEV_TYPE_VFIO};
	if (ioctl(vm->fd, KVM_CREATE_DEVICE, &cd))
		die("KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO): %s", strerror(errno));
	int32_t gfd = group;
	struct kvm_device_attr a = {.group = KVM_DEV_VFIO_FILE, .attr = KVM_DEV_VFIO_FILE_ADD,
				    .addr = (uintptr_t)&gfd};
	if (ioctl(cd.fd, KVM_SET_DEVICE_ATTR, &a))
		die("KVM-VFIO: adding the group: %s", strerror(errno));
}

/* guest RAM (already populated, mapped at IOVA 0 by the caller) as the VM's memory slot 0,
 * the driver copied in, one vCPU in flat 32-bit protected mode at VM_CODE_GPA */
static void vm_boot(struct vm *vm, void *ram, size_t size, uint64_t cfg_off)
{
	vm->ram = ram;
	vm->cfg_off = cfg_off;
	struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = size,
						.userspace_addr = (uintptr_t)ram};
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r))
		die("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
	size_t n = guest_code_end - guest_code;
	if (VM_CODE_GPA + n > VM_RING_GPA)
		die("guest code of %zu bytes overlaps the ring", n);
	memcpy(vm->ram + VM_CODE_GPA, guest_code, n);
	vm->vcpu = ioctl(vm->fd, KVM_CREATE_VCPU, 0);
	if (vm->vcpu < 0)
		die("KVM_CREATE_VCPU: %s", strerror(errno));
	int mmsz = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	vm->run = mmap(NULL, mmsz, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu, 0);
	if (mmsz <= 0 || vm->run == MAP_FAILED)
		die("mmap of the vCPU's kvm_run: %s", strerror(errno));
	struct kvm_sregs s;
	if (ioctl(vm->vcpu, KVM_GET_SREGS, &s))
		die("KVM_GET_SREGS: %s", strerror(errno));
	struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
				   .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
	struct kvm_segment data = code;
	data.type = 3;
	data.selector = 16;
	s.cs = code;
	s.ds = s.es = s.fs = s.gs = s.ss = data;
	s.cr0 |= 1;                         /* PE, no paging */
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &s))
		die("KVM_SET_SREGS: %s", strerror(errno));
	struct kvm_regs regs = {.rip = VM_CODE_GPA, .rflags = 2};
	if (ioctl(vm->vcpu, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS: %s", strerror(errno));
}

static uint32_t vm_param(const struct vm *vm, uint32_t off)
{
	return *(volatile uint32_t *)(vm->ram + VM_PARAMS_GPA + off);
}

/* a port access of the guest's: configuration mechanism #1 forwarded to the VFIO config
 * region of the one function, the driver's error ports fatal */
static void vm_port(struct vm *vm)
{
	struct kvm_run *run = vm->run;
	unsigned char *data = (unsigned char *)run + run->io.data_offset;
	uint16_t port = run->io.port;
	int out = run->io.direction == KVM_EXIT_IO_OUT;
	vm->io_exits++;
	if (port == 0x10 || port == 0x11)
		die("guest driver: %s (0x%x)", port == 0x10 ? "a descriptor behind RDH has no DD" :
		    "RDH outside the ring", *(uint32_t *)data);
	if (port == 0xcf8 && run->io.size == 4) {
		if (out)
			vm->cf8 = *(uint32_t *)data;
		else
			*(uint32_t *)data = vm->cf8;
		return;
	}
	if (port >= 0xcfc && port < 0xd00) {
		uint64_t off = (vm->cf8 & 0xfc) + (port - 0xcfc);
		if ((vm->cf8 & 0x80ffff00u) != 0x80000000u) {   /* another bus/device: none */
			if (!out)
				memset(data, 0xff, run->io.size);
			return;
		}
		ssize_t got = out ? pwrite(device_fd, data, run->io.size, vm->cfg_off + off)
				  : pread(device_fd, data, run->io.size, vm->cfg_off + off);
		if (got != run->io.size)
			die("config %s at 0x%" PRIx64 ": %s", out ? "write" : "read", off, strerror(errno));
		return;
	}
	die("guest port access 0x%x (%s, %d bytes) not emulated", port, out ? "out" : "in", run->io.size);
}

static void vm_mmio(struct vm *vm)
{
	struct kvm_run *run = vm->run;
	uint64_t a = run->mmio.phys_addr;
	vm->mmio_exits++;
	if (a < VM_BAR0_GPA || a + run->mmio.len > VM_BAR0_GPA + 0x20000 || run->mmio.len != 4)
		die("guest MMIO at 0x%" PRIx64 " (%u bytes) outside BAR0", a, run->mmio.len);
	uint32_t reg = a - VM_BAR0_GPA, v;
	if (run->mmio.is_write) {
		memcpy(&v, run->mmio.data, 4);
		wr(reg, v);
	} else {
		v = rd(reg);
		memcpy(run->mmio.data, &v, 4);
	}
}

/* one KVM_RUN until the guest halts (its 10 ms wait): exits served on the way */
static void vm_run_until_hlt(struct vm *vm)
{
	for (;;) {
		if (ioctl(vm->vcpu, KVM_RUN, 0) && errno != EINTR)
			die("KVM_RUN: %s", strerror(errno));
		switch (vm->run->exit_reason) {
		case KVM_EXIT_HLT:
			vm->hlt_exits++;
			return;
		case KVM_EXIT_MMIO:
			vm_mmio(vm);
			break;
		case KVM_EXIT_IO:
			vm_port(vm);
			break;
		case KVM_EXIT_INTR:
			break;
		default:
			die("vCPU exit %u not handled (hardware reason 0x%llx)", vm->run->exit_reason,
			    (unsigned long long)vm->run->hw.hardware_exit_reason);
		}
	}
}

#endif
