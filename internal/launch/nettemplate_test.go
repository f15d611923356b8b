package launch

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm"
)

// TestFindTemplateNetwork: a launch with a network (user, or tap: a pod
// with its own network namespace) clones only a template with a network
// device, a launch without one only a template without (a workload that
// asked for no network never gets a NIC), and a pod with its own
// namespace a pod template with one. A named template that does not fit
// is refused before attestd is asked, naming the recipe field and the
// template to make; with no fitting template an automatic launch boots
// cold and says which template would serve it.
func TestFindTemplateNetwork(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (the recipe names its version): apt-get install qemu-system-x86")
	}
	if os.Geteuid() != 0 {
		t.Skip("tap launches need a network namespace of the test's own: run as root")
	}
	state := t.TempDir()
	root := TemplatesDir(state)
	ns := podNS(t)
	config := func(network string, pod bool) kvm.Config {
		c := kvm.Config{KernelPath: "vmlinux", InitrdPath: "base.cpio", KernelDigest: "sha256:" + strings.Repeat("1", 64),
			InitrdDigest: "sha256:" + strings.Repeat("2", 64), Accel: kvm.AccelTCG, MemoryMiB: 256, Pod: pod}
		switch network {
		case NetworkUser:
			c.Network = kvm.NetworkUser
		case NetworkTap:
			c.Network, c.NetNS = kvm.NetworkTap, ns
		}
		return c
	}
	// Templates on disk (their description: findTemplate reads no more).
	makeTemplate := func(name string, cfg kvm.Config) string {
		t.Helper()
		r, err := cfg.Recipe()
		if err != nil {
			t.Fatal(err)
		}
		dir := kvm.TemplateDir(root, r)
		info := kvm.TemplateInfo{Name: name, Recipe: r, RecipeDigest: r.Digest(),
			RAM: kvm.Blob{Digest: "sha256:" + strings.Repeat("3", 64), Size: int64(r.MemoryMiB) << 20}, State: kvm.Blob{Digest: "sha256:" + strings.Repeat("4", 64), Size: 1}}
		b, _ := json.Marshal(info)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "template.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	withNet := func(c kvm.Config) kvm.Config { c.TemplateNet = true; return c }
	plain := makeTemplate("plain", config(NetworkNone, false))
	net := makeTemplate("net", withNet(config(NetworkNone, false)))
	podNet := makeTemplate("pods-net", withNet(config(NetworkNone, true)))
	for _, tc := range []struct {
		name     string
		network  string
		pod      bool
		template string
		wantDir  string // "" : a cold boot
		wantErr  string
		progress string
	}{
		{"no network: the plain template", NetworkNone, false, TemplateAuto, plain, "", ""},
		{"user network: the network template", NetworkUser, false, TemplateAuto, net, "", ""},
		{"tap network: the network template", NetworkTap, false, TemplateAuto, net, "", ""},
		{"a pod with its own namespace: the pod's network template", NetworkTap, true, TemplateAuto, podNet, "", ""},
		{"a pod without: no template, cold", NetworkNone, true, TemplateAuto, "", "", "booting cold (launcher template create --pod makes one)"},
		{"none boots cold", NetworkUser, false, TemplateNone, "", "", ""},
		{"named network template", NetworkUser, false, "net", net, "", ""},
		{"named network template, no network", NetworkNone, false, "net", "", `network device: the template has one (made with --net), this launch has no network; make a template for this one (launcher template create)`, ""},
		{"named plain template, user network", NetworkUser, false, "plain", "", "network device: the template has none (made without --net), this launch has a network; make a template for this one (launcher template create --net)", ""},
		{"named plain template, tap", NetworkTap, false, "plain", "", "network device: the template has none (made without --net), this launch has a network", ""},
		{"named network template, a pod", NetworkTap, true, "net", "", "pod image slots: the template has none (made without --pod), this launch is a pod's (15 slots); make a template for this one (launcher template create --pod --net)", ""}, // only what differs
		{"named pod network template, a pod without namespace", NetworkNone, true, "pods-net", "", "network device: the template has one (made with --net), this launch has no network; make a template for this one (launcher template create --pod)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var progress bytes.Buffer
			o := &Options{StateDir: state, Template: tc.template, Network: tc.network, Progress: &progress}
			dir, info, err := o.findTemplate(config(tc.network, tc.pod))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v (%s), want an error containing %q", err, dir, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if dir != tc.wantDir {
				t.Fatalf("template %q (%s), want %s", info.Name, dir, tc.wantDir)
			}
			if !strings.Contains(progress.String(), tc.progress) {
				t.Errorf("progress %q, want %q", progress.String(), tc.progress)
			}
		})
	}
	// No network template: a networked launch boots cold, and says which
	// template would make it a clone.
	if err := os.RemoveAll(net); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	o := &Options{StateDir: state, Network: NetworkUser, Progress: &progress}
	if dir, _, err := o.findTemplate(config(NetworkUser, false)); err != nil || dir != "" {
		t.Fatalf("without a network template: %q, %v; want a cold boot", dir, err)
	}
	if want := "no template for this recipe: booting cold (launcher template create --net makes one)"; !strings.Contains(progress.String(), want) {
		t.Errorf("progress %q, want %q", progress.String(), want)
	}
}
