package kvm

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Accelerators.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// AccelChoice is the result of ChooseAccel: what runs and why.
type AccelChoice struct {
	Accel  string // "kvm" or "tcg"
	Reason string // why, in words for a log line
}

// ErrKVMUnavailable is returned when KVM is forced but does not work here.
var ErrKVMUnavailable = errors.New("kvm: KVM is not usable on this host")

// ProbeKVM reports whether hardware KVM can run unmodified Linux guests
// here: a kvm_intel or kvm_amd module is loaded (kvm_pvm, a paravirtual KVM
// found on some cloud sandboxes, cannot) and /dev/kvm opens read-write. The
// error says what is missing.
func ProbeKVM() error { return probeKVM("/sys/module", "/dev/kvm") }

func probeKVM(sysModule, dev string) error {
	var vendor string
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat(sysModule + "/" + m); err == nil {
			vendor = m
			break
		}
	}
	if vendor == "" {
		if _, err := os.Stat(sysModule + "/kvm_pvm"); err == nil {
			return fmt.Errorf("%w: only kvm_pvm (paravirtual KVM) is loaded, which cannot boot unmodified Linux guests; no kvm_intel or kvm_amd", ErrKVMUnavailable)
		}
		return fmt.Errorf("%w: neither kvm_intel nor kvm_amd is loaded (no VT-x/AMD-V, or nested virtualization off)", ErrKVMUnavailable)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: %s is loaded but %s cannot be opened: %v", ErrKVMUnavailable, vendor, dev, err)
	}
	f.Close()
	return nil
}

// ChooseAccel resolves "auto", "kvm" or "tcg" ("" means "auto"). Forcing
// "kvm" where it does not work is an error; "auto" falls back to TCG and
// says why in the Reason.
func ChooseAccel(want string) (AccelChoice, error) {
	return chooseAccel(want, ProbeKVM)
}

func chooseAccel(want string, probe func() error) (AccelChoice, error) {
	switch want {
	case "", AccelAuto:
		if err := probe(); err != nil {
			return AccelChoice{Accel: AccelTCG, Reason: "using TCG software emulation (much slower than KVM): " + err.Error()}, nil
		}
		return AccelChoice{Accel: AccelKVM, Reason: "using KVM: hardware virtualization is available"}, nil
	case AccelKVM:
		if err := probe(); err != nil {
			return AccelChoice{}, fmt.Errorf("accelerator kvm was requested: %w (use --accel tcg or auto)", err)
		}
		return AccelChoice{Accel: AccelKVM, Reason: "using KVM as requested"}, nil
	case AccelTCG:
		return AccelChoice{Accel: AccelTCG, Reason: "using TCG software emulation as requested"}, nil
	}
	return AccelChoice{}, fmt.Errorf("kvm: unknown accelerator %q (want auto, kvm or tcg)", want)
}

// HostTSCkHz returns the host's TSC frequency in kHz, rounded to whole MHz
// so that the guest command line (which is measured) stays the same across
// reads: /sys/devices/system/cpu/cpu0/tsc_freq_khz when the kernel exposes
// it, else the CPU's base frequency from cpufreq (the TSC runs at the base
// frequency on CPUs with an invariant TSC), else "cpu MHz" from
// /proc/cpuinfo (constant on virtual machines, but it follows frequency
// scaling on some bare-metal hosts: pass an explicit command line there).
func HostTSCkHz() (int, error) {
	for _, p := range []string{
		"/sys/devices/system/cpu/cpu0/tsc_freq_khz",
		"/sys/devices/system/cpu/cpu0/cpufreq/base_frequency",
	} {
		if b, err := os.ReadFile(p); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
				return int(math.Round(float64(n)/1000)) * 1000, nil
			}
		}
	}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("kvm: host TSC frequency: %w", err)
	}
	defer f.Close()
	return tscFromCPUInfo(bufio.NewScanner(f))
}

func tscFromCPUInfo(sc *bufio.Scanner) (int, error) {
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 || mhz > 100000 {
			return 0, fmt.Errorf("kvm: host TSC frequency: bad cpu MHz %q", strings.TrimSpace(v))
		}
		return int(math.Round(mhz)) * 1000, nil
	}
	return 0, errors.New("kvm: host TSC frequency: no \"cpu MHz\" in /proc/cpuinfo")
}

// DefaultCmdline is the guest kernel command line for accel ("kvm" or
// "tcg"). It is deterministic for a given host and accelerator, because it
// is measured and matched by policy. Under TCG it adds tsc_early_khz (the
// host TSC rate): without it the guest sometimes fails to calibrate its
// clock and hangs; and tsc=reliable: QEMU's emulated TSC follows the host's
// monotonic clock, but on a loaded host the guest's clocksource watchdog
// (comparing it with jiffies across vCPU stalls) marked it unstable, fell
// back to jiffies and so to a periodic tick, which costs every idle guest
// 4-6 % of a host core (see cpuModel).
func DefaultCmdline(accel string) (string, error) {
	base := "console=ttyS0 panic=-1 reboot=t quiet loglevel=4 8250.nr_uarts=1"
	switch accel {
	case AccelKVM:
		return base, nil
	case AccelTCG:
		khz, err := HostTSCkHz()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s tsc_early_khz=%d tsc=reliable", base, khz), nil
	}
	return "", fmt.Errorf("kvm: DefaultCmdline: accelerator %q is not kvm or tcg (resolve auto with ChooseAccel first)", accel)
}
