package shim

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestParseSpec(t *testing.T) {
	payload := base64.StdEncoding.EncodeToString([]byte(`{"critical":{}}`))
	// The guest files live in an allowed directory; a file outside it, or
	// a link from inside to outside, is refused.
	guest, outside := t.TempDir(), t.TempDir()
	for _, f := range []string{filepath.Join(guest, "vmlinux"), filepath.Join(guest, "base.cpio"), filepath.Join(outside, "secret")} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(guest, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		want    launchConfig
		wantErr string
	}{
		{name: "policy only", ann: map[string]string{AnnotationPolicy: "app"}, want: launchConfig{Policy: "app"}},
		{name: "everything", ann: map[string]string{AnnotationPolicy: "app", AnnotationKernel: guest + "/vmlinux", AnnotationInitrd: guest + "//base.cpio",
			AnnotationTemplate: "none", AnnotationSignature: "c2ln\n", AnnotationSignaturePayload: payload},
			want: launchConfig{Policy: "app", Kernel: guest + "/vmlinux", Initrd: guest + "/base.cpio", Template: "none", Signature: []byte("c2ln"), Payload: []byte(`{"critical":{}}`)}},
		{name: "a kernel outside the guest dirs", ann: map[string]string{AnnotationPolicy: "app", AnnotationKernel: outside + "/secret"}, wantErr: "outside the directories BULWARK_GUEST_DIRS allows"},
		{name: "a link out of the guest dirs", ann: map[string]string{AnnotationPolicy: "app", AnnotationInitrd: guest + "/link"}, wantErr: "outside the directories"},
		{name: "a dot-dot out of the guest dirs", ann: map[string]string{AnnotationPolicy: "app", AnnotationKernel: guest + "/../" + filepath.Base(outside) + "/secret"}, wantErr: "outside the directories"},
		{name: "no policy", ann: map[string]string{}, wantErr: "annotation bulwark.dev/policy: missing"},
		{name: "a bad policy name", ann: map[string]string{AnnotationPolicy: "../x"}, wantErr: "bulwark.dev/policy: \"../x\" is not a policy name"},
		{name: "a relative kernel", ann: map[string]string{AnnotationPolicy: "app", AnnotationKernel: "vmlinux"}, wantErr: "bulwark.dev/kernel: \"vmlinux\": want an absolute path"},
		{name: "a relative initrd", ann: map[string]string{AnnotationPolicy: "app", AnnotationInitrd: "a/b"}, wantErr: "bulwark.dev/initrd"},
		{name: "a template path", ann: map[string]string{AnnotationPolicy: "app", AnnotationTemplate: "a/b"}, wantErr: "bulwark.dev/template"},
		{name: "a signature without payload", ann: map[string]string{AnnotationPolicy: "app", AnnotationSignature: "c2ln"}, wantErr: "bulwark.dev/image-signature-payload: missing"},
		{name: "a payload without signature", ann: map[string]string{AnnotationPolicy: "app", AnnotationSignaturePayload: payload}, wantErr: "bulwark.dev/image-signature: missing"},
		{name: "a signature not base64", ann: map[string]string{AnnotationPolicy: "app", AnnotationSignature: "!!", AnnotationSignaturePayload: payload}, wantErr: "bulwark.dev/image-signature: not base64"},
		{name: "a payload not base64", ann: map[string]string{AnnotationPolicy: "app", AnnotationSignature: "c2ln", AnnotationSignaturePayload: "{}"}, wantErr: "bulwark.dev/image-signature-payload: not base64"},
		{name: "a huge annotation", ann: map[string]string{AnnotationPolicy: "app", "bulwark.dev/x": strings.Repeat("a", maxAnnotation+1)}, wantErr: "bulwark.dev/x: 65537 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSpecIn(&specs.Spec{Annotations: tc.ann, Process: &specs.Process{Args: []string{"/bin/sh"}}}, guest)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseSpec: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Args = []string{"/bin/sh"}
			if got.Policy != tc.want.Policy || got.Kernel != tc.want.Kernel || got.Initrd != tc.want.Initrd || got.Template != tc.want.Template ||
				string(got.Signature) != string(tc.want.Signature) || string(got.Payload) != string(tc.want.Payload) || !slices.Equal(got.Args, tc.want.Args) {
				t.Errorf("parseSpec = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A spec that joins a network namespace (a CRI pod's own) asks for a tap
// network in it; one with the host's network, or a new empty namespace,
// for none.
func TestParseSpecNetworkNamespace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		linux *specs.Linux
		want  string
	}{
		{"no linux section", nil, ""},
		{"host network", &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}}}, ""},
		{"a new namespace", &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}, ""},
		{"the pod's namespace", &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"},
			{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1234"}}}, "/var/run/netns/cni-1234"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSpecIn(&specs.Spec{Annotations: map[string]string{AnnotationPolicy: "app"}, Linux: tc.linux}, "")
			if err != nil || got.NetNS != tc.want {
				t.Fatalf("parseSpec: NetNS %q, %v; want %q", got.NetNS, err, tc.want)
			}
		})
	}
}

// A CRI container joins its pod's network through the pause task's pid,
// which is the shim's own: its sandbox takes the pause spec's namespace
// over instead, never the shim's (the host's).
func TestPodNetNS(t *testing.T) {
	for _, tc := range []struct {
		name, path, pause, want string
	}{
		{"through the pause task", "/proc/4242/ns/net", "/var/run/netns/cni-1", "/var/run/netns/cni-1"},
		{"through the pause task of a host-network pod", "/proc/4242/ns/net", "", ""},
		{"another process's namespace", "/proc/4243/ns/net", "/var/run/netns/cni-1", "/proc/4243/ns/net"},
		{"a named namespace", "/var/run/netns/cni-2", "/var/run/netns/cni-1", "/var/run/netns/cni-2"},
		{"no namespace", "", "/var/run/netns/cni-1", ""},
	} {
		if got := podNetNS(tc.path, 4242, tc.pause); got != tc.want {
			t.Errorf("%s: podNetNS(%q) = %q, want %q", tc.name, tc.path, got, tc.want)
		}
	}
}

// Without BULWARK_GUEST_DIRS no container chooses the guest's files.
func TestParseSpecGuestFilesNeedAnAdminList(t *testing.T) {
	_, err := parseSpecIn(&specs.Spec{Annotations: map[string]string{AnnotationPolicy: "app", AnnotationKernel: "/boot/vmlinuz"}}, "")
	if err == nil || !strings.Contains(err.Error(), "BULWARK_GUEST_DIRS is not set") {
		t.Fatalf("err = %v", err)
	}
}

func TestWorkloadArgs(t *testing.T) {
	for _, tc := range []struct {
		spec, entrypoint, cmd, want []string
	}{
		{spec: []string{"/bin/sh", "-c", "echo"}, entrypoint: []string{"/bin/sh"}, cmd: []string{"-c", "echo"}, want: nil},
		{spec: []string{"/bin/sh", "-c", "other"}, entrypoint: []string{"/bin/sh"}, cmd: []string{"-c", "echo"}, want: []string{"/bin/sh", "-c", "other"}},
		{spec: []string{"/bin/sh"}, entrypoint: []string{"/bin/sh"}, cmd: []string{"-c", "echo"}, want: []string{"/bin/sh"}},
		{spec: []string{"ls"}, want: []string{"ls"}},
	} {
		if got := workloadArgs(tc.spec, tc.entrypoint, tc.cmd); !slices.Equal(got, tc.want) {
			t.Errorf("workloadArgs(%q, %q, %q) = %q, want %q", tc.spec, tc.entrypoint, tc.cmd, got, tc.want)
		}
	}
}

// A CRI pod's containers share one VM unless its annotation says false;
// anything else is refused, naming the annotation.
func TestPodVMMode(t *testing.T) {
	for _, tc := range []struct {
		val     string
		set     bool
		want    bool
		wantErr bool
	}{
		{set: false, want: true},
		{val: "true", set: true, want: true},
		{val: "false", set: true, want: false},
		{val: "", set: true, want: true},
		{val: "yes", set: true, wantErr: true},
		{val: "False", set: true, wantErr: true},
		{val: "1", set: true, wantErr: true},
	} {
		a := map[string]string{AnnotationPolicy: "app"}
		if tc.set {
			a[AnnotationPodVM] = tc.val
		}
		got, err := podVMMode(a)
		switch {
		case tc.wantErr:
			if err == nil || !strings.Contains(err.Error(), "annotation "+AnnotationPodVM) {
				t.Errorf("%q: %v, %v; want an error naming the annotation", tc.val, got, err)
			}
		case err != nil || got != tc.want:
			t.Errorf("%q (set %v): %v, %v; want %v", tc.val, tc.set, got, err, tc.want)
		}
	}
}
