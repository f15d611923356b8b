// Package kvm runs workloads in QEMU microvm sandboxes: it probes the
// accelerator (KVM or TCG), extracts a PVH-bootable vmlinux from the host
// kernel, builds the deterministic initramfs (guest agent + modules, then
// the image root filesystem) and drives QEMU over QMP and the guest channel.
package kvm
