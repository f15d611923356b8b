// Package kvm runs workloads in QEMU microvm sandboxes: it probes the
// accelerator (KVM or TCG), extracts a PVH-bootable vmlinux from the host
// kernel, builds the deterministic initramfs (guest agent + modules, then
// the image's root filesystem) and drives QEMU over QMP and the guest
// channel (kvm/channel, a virtio-serial port) to the agent (kvm/agent).
//
// # A launch
//
//	choice, err := kvm.ChooseAccel("auto")          // "kvm" where it works, else "tcg" (Reason says why)
//	cmdline, err := kvm.DefaultCmdline(choice.Accel) // measured: compute it before booting
//	vmlinux, err := kvm.DefaultKernel(ctx)           // host kernel as ELF vmlinux, cached in the state dir
//	base, err := kvm.BuildBaseInitramfs(kvm.BaseOptions{Agent: agentELF, KernelVersion: hk.Version})
//	rootfs, err := kvm.BuildImageInitramfs(img)      // img: a verified v1.Image
//
//	sb, err := kvm.Start(ctx, kvm.Config{
//		Kernel: pinnedKernel, Initrd: pinnedBase, ImageInitrd: rootfs, // *os.File (memfds) or KernelPath/InitrdPath
//		Cmdline: cmdline, Accel: choice.Accel, CPUs: 1, MemoryMiB: 512,
//		Stdout: os.Stdout, Stderr: os.Stderr, Console: consoleLog, Logger: log,
//	})
//	defer sb.Close()                       // always safe; ends QEMU if it still runs (QMP quit, then SIGKILL)
//	pub, err := sb.GuestKey(ctx)           // waits for the agent's HELLO (BootTimeout applies)
//	// ... record pub in the launch event, attest, have attestd wrap secrets to pub ...
//	if denied { sb.Abort("policy denied"); return }
//	err = sb.StartWorkload(ctx, []kvm.Secret{{Name: "db", Wrapped: w}}, nil)
//	code, err := sb.Wait(ctx)              // the workload's exit code
//
// Start returns once QEMU runs the guest. Cancelling the ctx given to Start
// kills the VM at any time; so does the launcher's death (QEMU runs with
// PR_SET_PDEATHSIG=SIGKILL in its own process group). A guest that does not
// say HELLO within BootTimeout is killed and the error (ErrBootTimeout)
// carries the last 40 console lines. StartWorkload returns a *GuestError
// when the agent refuses to start (a secret that does not open: the
// workload never runs). Wait returns the exit code, or an error when none
// came back (ErrBootTimeout, ErrAborted, *GuestError, context errors, QEMU
// dying).
//
// # Accelerators
//
// "auto" uses KVM when kvm_intel or kvm_amd is loaded and /dev/kvm opens
// read-write, else TCG with a warning naming the reason (kvm_pvm, a
// paravirtual KVM found on some cloud sandboxes, cannot boot unmodified
// guests and counts as no KVM). "kvm" fails where KVM does not work; "tcg"
// always emulates. Sandbox.Accel reports what ran: never quote TCG timings
// as KVM ones. Under TCG the default command line adds tsc_early_khz (the
// host TSC rate) because the guest otherwise sometimes hangs calibrating
// its clock.
//
// # Resources
//
// CPUs and MemoryMiB size the VM. QEMU starts inside a cgroup of its own,
// on cgroup v2 (/sys/fs/cgroup/bulwark/NAME) or v1 (the cpu, memory and pids
// hierarchies), limited to CPUs of CPU bandwidth, MemoryMiB plus QEMU's
// overhead without swap, and 1,024 tasks. Start fails when no cgroup can be
// made, unless Config.CgroupParent is "none".
//
// See docs/sandbox.md for the initramfs layout and the channel protocol.
package kvm
