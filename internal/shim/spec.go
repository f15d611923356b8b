package shim

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulwark-project/bulwark/policy"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The annotations the shim reads from the container's OCI spec (ctr run
// --annotation, or a pod's annotations passed on by the CRI plugin).
const (
	// AnnotationPolicy names the admin policy attestd judges the launch
	// by. Required.
	AnnotationPolicy = "bulwark.dev/policy"
	// AnnotationKernel and AnnotationInitrd are absolute host paths of the
	// guest kernel and base initramfs (default: the host service's). The
	// policy pins their digests, so these only choose among what it allows.
	// Whoever creates a container names them, and the root host service
	// reads them: they must lie in a directory the node's admin lists in
	// GuestDirsEnv (containerd's environment); without it they are refused.
	AnnotationKernel = "bulwark.dev/kernel"
	AnnotationInitrd = "bulwark.dev/initrd"
	// AnnotationTemplate is a template's name, or "none" to boot cold.
	AnnotationTemplate = "bulwark.dev/template"
	// AnnotationSignature is the image's cosign signature, exactly what
	// 'launcher sign --image' writes to IMAGE.sig (base64 text), and
	// AnnotationSignaturePayload the signed payload, IMAGE.payload.json,
	// base64-encoded. Both or neither.
	AnnotationSignature        = "bulwark.dev/image-signature"
	AnnotationSignaturePayload = "bulwark.dev/image-signature-payload"
	// AnnotationPodVM, on a CRI pod, chooses how its containers run:
	// "true" (the default) puts them all in one VM, the pod's, booted at
	// the first one's start; "false" runs each in a sandbox of its own.
	AnnotationPodVM = "bulwark.dev/pod-vm"
)

// podVMMode reads a CRI pod's AnnotationPodVM (from its sandbox
// container's spec): whether its containers share one VM.
func podVMMode(a map[string]string) (bool, error) {
	switch v := a[AnnotationPodVM]; v {
	case "", "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, fmt.Errorf("%w: annotation %s: %q: want true or false", errBadSpec, AnnotationPodVM, trunc(v))
	}
}

// GuestDirsEnv names the environment variable (of containerd, inherited
// by the shim) listing the directories, separated by ':', that the
// kernel and initrd annotations may name files in.
const GuestDirsEnv = "BULWARK_GUEST_DIRS"

// inGuestDirs resolves p (symlinks too) and reports whether it lies in
// one of the directories listed in dirs (GuestDirsEnv's value).
func inGuestDirs(p, dirs string) (string, error) {
	if dirs == "" {
		return "", fmt.Errorf("refused: %s is not set in containerd's environment, so no container may choose the guest's files (set it to the directories that hold allowed kernels and initrds)", GuestDirsEnv)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	for _, d := range filepath.SplitList(dirs) {
		if !filepath.IsAbs(d) {
			continue
		}
		rd, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue
		}
		if strings.HasPrefix(real, strings.TrimSuffix(rd, "/")+"/") {
			return real, nil
		}
	}
	return "", fmt.Errorf("%s is outside the directories %s allows (%s)", real, GuestDirsEnv, dirs)
}

// maxAnnotation bounds what one annotation may carry.
const maxAnnotation = 64 << 10

// launchConfig is what a container's spec asks of its launch.
type launchConfig struct {
	Policy, Kernel, Initrd, Template string
	// Signature and Payload are the image's signature files' contents
	// (nil: none supplied).
	Signature, Payload []byte
	// Args is the process's command line from the spec.
	Args []string
	// Env, WorkingDir and User are what the spec's process sets over the
	// image's config (processOverrides), passed as 'launcher run -e, -w,
	// -u' pass them: measured into the launch event, judged by the
	// policy.
	Env        []string
	WorkingDir string
	User       string
	// NetNS is the network namespace the spec joins (a CRI pod's own,
	// set up by its CNI): the sandbox then takes it over through a tap
	// (network "tap"). Empty: the container has the host's network or a
	// new, empty one, and the sandbox no network.
	NetNS string
}

// errBadSpec marks a container spec the shim cannot launch.
var errBadSpec = errors.New("bulwark shim: bad container spec")

// errTerminal refuses a terminal for the own process of a container that
// runs as a sandbox of its own: such a workload is launched by the host
// service's Run, which gives it no stdin and no terminal. A container of
// a pod VM may have one (attach.go), and so may an exec'd process
// (crictl exec -i -t).
var errTerminal = errors.New("a terminal for a container's own process (CRI tty: true, ctr run -t) is supported only in a pod VM (pod annotation " + AnnotationPodVM + "): a container that runs as a sandbox of its own has no stdin and its output is its stdout and stderr; run the pod as a pod VM, or drop tty (crictl exec -it into it works)")

// parseSpec reads the launch settings from a container's OCI spec. Errors
// name the annotation.
func parseSpec(s *specs.Spec) (launchConfig, error) {
	return parseSpecIn(s, os.Getenv(GuestDirsEnv))
}

// parseSpecIn is parseSpec with the allowed guest file directories given.
func parseSpecIn(s *specs.Spec, guestDirs string) (launchConfig, error) {
	bad := func(key, format string, a ...any) (launchConfig, error) {
		return launchConfig{}, fmt.Errorf("%w: annotation %s: %s", errBadSpec, key, fmt.Sprintf(format, a...))
	}
	a := s.Annotations
	for k, v := range a {
		if strings.HasPrefix(k, "bulwark.dev/") && len(v) > maxAnnotation {
			return bad(k, "%d bytes, at most %d", len(v), maxAnnotation)
		}
	}
	var c launchConfig
	c.Policy = a[AnnotationPolicy]
	if c.Policy == "" {
		return bad(AnnotationPolicy, "missing: name the admin policy that judges this container's launch")
	}
	if !policy.ValidName(c.Policy) {
		return bad(AnnotationPolicy, "%q is not a policy name", trunc(c.Policy))
	}
	for _, p := range []struct {
		key string
		dst *string
	}{{AnnotationKernel, &c.Kernel}, {AnnotationInitrd, &c.Initrd}} {
		v, ok := a[p.key]
		if !ok {
			continue
		}
		if !filepath.IsAbs(v) || strings.IndexByte(v, 0) >= 0 {
			return bad(p.key, "%q: want an absolute path on the host", trunc(v))
		}
		real, err := inGuestDirs(filepath.Clean(v), guestDirs)
		if err != nil {
			return bad(p.key, "%v", err)
		}
		*p.dst = real
	}
	c.Template = a[AnnotationTemplate]
	if strings.ContainsAny(c.Template, "/\x00") {
		return bad(AnnotationTemplate, "%q: want a template name, or none", trunc(c.Template))
	}
	sig, hasSig := a[AnnotationSignature]
	payload, hasPayload := a[AnnotationSignaturePayload]
	switch {
	case hasSig != hasPayload:
		missing := AnnotationSignaturePayload
		if !hasSig {
			missing = AnnotationSignature
		}
		return bad(missing, "missing: an image signature needs both %s and %s", AnnotationSignature, AnnotationSignaturePayload)
	case hasSig:
		sig = strings.TrimSpace(sig)
		if _, err := base64.StdEncoding.DecodeString(sig); err != nil || sig == "" {
			return bad(AnnotationSignature, "not base64 (want the content of IMAGE.sig)")
		}
		p, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
		if err != nil || len(p) == 0 {
			return bad(AnnotationSignaturePayload, "not base64 (want base64 of IMAGE.payload.json)")
		}
		c.Signature, c.Payload = []byte(sig), p
	}
	if s.Process != nil {
		c.Args = append([]string(nil), s.Process.Args...)
	}
	// The host service checks it (form, a network namespace, not the
	// host's).
	c.NetNS = netNSPath(s)
	return c, nil
}

// netNSPath is the path of the network namespace spec s joins, or "".
func netNSPath(s *specs.Spec) string {
	if s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// podNetNS is the network namespace a CRI container's sandbox takes over.
// The CRI makes a container join its pod's namespaces through the pod's
// sandbox ("pause") task, /proc/PID/ns/net with that task's pid; but the
// shim runs no pause process (the pid it reports is its own, in the host's
// namespace): the pod's namespace is the one the pause container's spec
// named (pauseNetNS, made by the CRI and set up by its CNI). Any other
// path is taken as it is.
func podNetNS(path string, pausePID uint32, pauseNetNS string) string {
	if path != "" && path == fmt.Sprintf("/proc/%d/ns/net", pausePID) {
		return pauseNetNS
	}
	return path
}

// workloadArgs is what the launch passes as the workload's arguments: none
// when the spec runs the image's own entrypoint and cmd (so the launch is
// recorded exactly as 'launcher run' records it), the spec's otherwise.
func workloadArgs(specArgs, entrypoint, cmd []string) []string {
	def := append(append([]string{}, entrypoint...), cmd...)
	if len(specArgs) == len(def) {
		same := true
		for i := range def {
			if def[i] != specArgs[i] {
				same = false
				break
			}
		}
		if same {
			return nil
		}
	}
	return specArgs
}

// trunc shortens what is quoted back in errors.
func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
