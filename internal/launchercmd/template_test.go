package launchercmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm"
)

// TestTemplateCommands: ls/inspect/rm against a template directory, and
// the usage errors of each command (exit 2) and a missing template (exit 1
// with what to do). Making a template boots a guest: e2e and kvm test it.
func TestTemplateCommands(t *testing.T) {
	state := t.TempDir()
	env := map[string]string{"BULWARK_STATE": state}
	out, _, code := runLauncher(t, env, "template", "ls")
	if code != 0 || !strings.Contains(out, "no templates (launcher template create makes one)") {
		t.Fatalf("ls of nothing: %d %q", code, out)
	}
	out, _, code = runLauncher(t, env, "template", "ls", "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls --json of nothing: %d %q", code, out)
	}
	// A template directory as kvm.CreateTemplate leaves it.
	r := kvm.Recipe{Kernel: "sha256:" + strings.Repeat("1", 64), Initrd: "sha256:" + strings.Repeat("2", 64), Cmdline: "console=ttyS0",
		CPUs: 1, MemoryMiB: 128, Accel: "tcg", QEMU: "QEMU emulator version 7.2.0", Machine: "sha256:" + strings.Repeat("3", 64), Protocol: 3}
	dir := kvm.TemplateDir(filepath.Join(state, "templates"), r)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	info := kvm.TemplateInfo{Name: "web", Recipe: r, RecipeDigest: r.Digest(),
		RAM:   kvm.Blob{Digest: "sha256:" + strings.Repeat("4", 64), Size: 128 << 20},
		State: kvm.Blob{Digest: "sha256:" + strings.Repeat("5", 64), Size: 100}}
	j, _ := json.Marshal(info)
	os.WriteFile(filepath.Join(dir, "template.json"), j, 0o600)
	out, _, code = runLauncher(t, env, "template", "ls")
	if code != 0 || !strings.Contains(out, "web") || !strings.Contains(out, filepath.Base(dir)) || !strings.Contains(out, "128 MiB") {
		t.Fatalf("ls: %d\n%s", code, out)
	}
	out, _, code = runLauncher(t, env, "template", "inspect", "web")
	var got templateRow
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.RecipeDigest != r.Digest() || got.Dir != dir {
		t.Fatalf("inspect: %d\n%s", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"template", "inspect"}, 2, "give one template NAME"},
		{[]string{"template", "rm"}, 2, "give the NAME of each template"},
		{[]string{"template", "ls", "extra"}, 2, "unexpected arguments"},
		{[]string{"template", "create", "extra"}, 2, "unexpected arguments"},
		{[]string{"template", "create", "--memory", "1"}, 2, "--memory 1"},
		{[]string{"template", "create", "--accel", "fast"}, 2, "--accel"},
		{[]string{"template", "inspect", "nope"}, 1, `no template "nope"`},
		{[]string{"template", "rm", "nope"}, 1, "launcher template ls lists them"},
	} {
		_, stderr, code := runLauncher(t, env, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	out, _, code = runLauncher(t, env, "template", "rm", "web")
	if code != 0 || !strings.Contains(out, "removed template web") {
		t.Fatalf("rm: %d %q", code, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the template directory is still there: %v", err)
	}
}
