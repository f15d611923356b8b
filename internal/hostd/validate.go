package hostd

import (
	"crypto"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/signing"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of a RunRequest (everything else is bounded by the launch).
const (
	maxPath       = 4096
	maxArgs       = 1024
	maxArgsBytes  = 256 << 10
	maxSigners    = 16
	maxName       = 256
	maxBootTimout = 3600
)

// runOptions checks a RunRequest and turns it into launch.Options (without
// what the service adds: id, TPM, attestd, output). A bad field is
// InvalidArgument naming it.
func runOptions(req *bulwarkv1.RunRequest) (launch.Options, error) {
	bad := func(field, format string, a ...any) (launch.Options, error) {
		return launch.Options{}, status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, a...))
	}
	if !policy.ValidName(req.GetPolicy()) {
		return bad("policy", "%q is not a policy name (the admin policy attestd judges the launch by)", trunc(req.GetPolicy()))
	}
	for _, p := range []struct {
		field, path string
		required    bool
	}{{"image", req.GetImage(), true}, {"kernel", req.GetKernel(), false}, {"initrd", req.GetInitrd(), false}} {
		if p.path == "" && !p.required {
			continue
		}
		if len(p.path) > maxPath || strings.IndexByte(p.path, 0) >= 0 || !filepath.IsAbs(p.path) {
			return bad(p.field, "%q: want an absolute path on the host (the host service does not share the client's directory)", trunc(p.path))
		}
	}
	if len(req.GetArgs()) > maxArgs {
		return bad("args", "%d arguments, at most %d", len(req.GetArgs()), maxArgs)
	}
	total := 0
	for i, a := range req.GetArgs() {
		total += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return bad("args", "argument %d contains a NUL byte", i)
		}
	}
	if total > maxArgsBytes {
		return bad("args", "%d bytes, at most %d", total, maxArgsBytes)
	}
	if err := policy.CheckCmdline(req.GetCmdline()); err != nil {
		return bad("cmdline", "%v", err)
	}
	if len(req.GetSigners()) > maxSigners {
		return bad("signers", "%d keys, at most %d", len(req.GetSigners()), maxSigners)
	}
	var signers []crypto.PublicKey
	for i, pem := range req.GetSigners() {
		pub, err := signing.LoadVerifier(pem)
		if err != nil {
			return bad("signers", "key %d: %v", i, err)
		}
		signers = append(signers, pub)
	}
	accel := req.GetAccel()
	switch accel {
	case "":
		accel = kvm.AccelAuto
	case kvm.AccelAuto, kvm.AccelKVM, kvm.AccelTCG:
	default:
		return bad("accel", "%q: want auto, kvm or tcg", trunc(accel))
	}
	cpus, mem := int(req.GetCpus()), int(req.GetMemoryMib())
	if cpus == 0 {
		cpus = 1
	}
	if mem == 0 {
		mem = 512
	}
	if cpus < kvm.MinCPUs || cpus > kvm.MaxCPUs {
		return bad("cpus", "%d: want %d..%d", cpus, kvm.MinCPUs, kvm.MaxCPUs)
	}
	if mem < kvm.MinMemoryMiB || mem > kvm.MaxMemoryMiB {
		return bad("memory_mib", "%d: want %d..%d", mem, kvm.MinMemoryMiB, kvm.MaxMemoryMiB)
	}
	if len(req.GetTemplate()) > maxName || strings.ContainsAny(req.GetTemplate(), "/\x00") {
		return bad("template", "%q: want a template name from 'launcher template ls', or none", trunc(req.GetTemplate()))
	}
	boot := time.Duration(req.GetBootTimeoutSeconds()) * time.Second
	if boot == 0 {
		boot = 120 * time.Second
	}
	if req.GetBootTimeoutSeconds() > maxBootTimout {
		return bad("boot_timeout_seconds", "%d: at most %d", req.GetBootTimeoutSeconds(), maxBootTimout)
	}
	stop := time.Duration(req.GetStopTimeoutSeconds()) * time.Second
	if req.GetStopTimeoutSeconds() > channel.MaxStopGraceSeconds {
		return bad("stop_timeout_seconds", "%d: at most %d", req.GetStopTimeoutSeconds(), channel.MaxStopGraceSeconds)
	}
	if ns := req.GetNetns(); ns != "" || req.GetNetwork() == launch.NetworkTap {
		if req.GetNetwork() != launch.NetworkTap {
			return bad("netns", "a network namespace is for network %q only", launch.NetworkTap)
		}
		if err := kvm.CheckNetNS(ns); err != nil {
			return bad("netns", "%v", err)
		}
	}
	if req.GetPod() {
		if err := checkContainerName(req.GetContainer()); err != nil {
			return bad("container", "%v", err)
		}
	} else if req.GetContainer() != "" {
		return bad("container", "a container name is for a pod (pod) only")
	}
	if _, err := firstContainerStdio(req); err != nil {
		return launch.Options{}, err
	}
	o := launch.Options{
		Pod:    req.GetPod(),
		Policy: req.GetPolicy(), Image: req.GetImage(), Args: req.GetArgs(), Kernel: req.GetKernel(), Initrd: req.GetInitrd(),
		Cmdline: req.GetCmdline(), Signers: signers, Accel: accel, CPUs: cpus, MemoryMiB: mem, Template: req.GetTemplate(),
		BootTimeout: boot, StopGrace: stop, NoCgroup: req.GetNoCgroup(), NoConfine: req.GetNoConfine(),
		Env: req.GetEnv(), WorkingDir: req.GetWorkingDir(), User: req.GetUser(), Network: req.GetNetwork(),
		Ports: req.GetPorts(), Volumes: req.GetVolumes(), Tmpfs: req.GetTmpfs(), Scratch: req.GetScratch(), NetNS: req.GetNetns(),
	}
	for i, v := range o.Volumes {
		if !filepath.IsAbs(v) {
			return bad("volumes", "volume %d %q: want an absolute host directory (HOSTDIR:PATH:ro)", i, trunc(v))
		}
	}
	// The one check of the workload's inputs (its errors name the flag).
	if err := o.ValidateWorkload(); err != nil {
		return bad("workload", "%v", err)
	}
	return o, nil
}

// checkContainerName checks a pod container's name: 1..128 of
// [A-Za-z0-9_.-], not "." or ".." (it names its log file).
func checkContainerName(n string) error {
	if n == "" || len(n) > 128 || n == "." || n == ".." || strings.Trim(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
		return fmt.Errorf("%q: want 1..128 characters from [A-Za-z0-9_.-]", trunc(n))
	}
	return nil
}

// addContainerOptions checks an AddContainerRequest (but its id) and
// turns it into launch.ContainerOptions (without the output writers). A
// bad field is InvalidArgument naming it.
func addContainerOptions(req *bulwarkv1.AddContainerRequest) (launch.ContainerOptions, error) {
	bad := func(field, format string, a ...any) (launch.ContainerOptions, error) {
		return launch.ContainerOptions{}, status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, a...))
	}
	if err := checkContainerName(req.GetName()); err != nil {
		return bad("name", "%v", err)
	}
	if p := req.GetImage(); len(p) > maxPath || strings.IndexByte(p, 0) >= 0 || !filepath.IsAbs(p) {
		return bad("image", "%q: want an absolute path on the host (the host service does not share the client's directory)", trunc(p))
	}
	if len(req.GetArgs()) > channel.MaxContainerArgs {
		return bad("args", "%d arguments, at most %d", len(req.GetArgs()), channel.MaxContainerArgs)
	}
	total := 0
	for i, a := range req.GetArgs() {
		total += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return bad("args", "argument %d contains a NUL byte", i)
		}
	}
	if total > channel.MaxContainerArgsBytes {
		return bad("args", "%d bytes, at most %d", total, channel.MaxContainerArgsBytes)
	}
	o := launch.Options{Env: req.GetEnv(), WorkingDir: req.GetWorkingDir(), User: req.GetUser()}
	if err := o.ValidateWorkload(); err != nil {
		switch {
		case len(req.GetEnv()) > 0 && strings.HasPrefix(err.Error(), "-e"):
			return bad("env", "%v", err)
		case strings.HasPrefix(err.Error(), "-w"):
			return bad("working_dir", "%v", err)
		case strings.HasPrefix(err.Error(), "--user"):
			return bad("user", "%v", err)
		}
		return bad("env", "%v", err)
	}
	co := launch.ContainerOptions{Name: req.GetName(), Image: req.GetImage(), Args: req.GetArgs(), Env: o.Env, WorkingDir: o.WorkingDir, User: o.User}
	if err := containerStdio(&co, "", req.GetStdin(), req.GetTty()); err != nil {
		return launch.ContainerOptions{}, err
	}
	return co, nil
}

// trunc shortens a rejected value for an error message.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
