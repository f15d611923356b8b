package launchercmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/tpm"
)

func TestTPMInfoManaged(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no external processes (swtpm)")
	}
	for _, tool := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: apt-get install swtpm swtpm-tools", tool)
		}
	}
	state := t.TempDir()
	env := map[string]string{"BULWARK_STATE": state}
	t.Cleanup(func() { _ = tpm.StopManaged(filepath.Join(state, "swtpm")) })
	out, errs, code := runLauncher(t, env, "tpm", "info", "--json")
	if code != 0 {
		t.Fatalf("tpm info: exit %d: %s", code, errs)
	}
	var info tpmInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Kind != "swtpm" || info.ManagedPID == 0 || !strings.HasPrefix(info.EKFingerprint, "sha256:") ||
		info.EKCertificate == nil || !strings.HasPrefix(info.EKCertificate.Verified, "chains") ||
		info.AK != nil || info.LaunchPCR != 13 || len(info.LaunchPCRValue) != 64 {
		t.Fatalf("tpm info: %+v", info)
	}
	// The node id is SHA-256 of the EK's TPMT_PUBLIC, computed here from
	// the TPM directly, and is not the EK fingerprint (SPKI).
	tp, err := tpm.Open(context.Background(), info.Spec)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EKPublic(context.Background())
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(ek); info.NodeID != "sha256:"+hex.EncodeToString(sum[:]) || info.NodeID == info.EKFingerprint {
		t.Fatalf("node id %s, want sha256 of the EK's TPMT_PUBLIC %x (EK fingerprint %s)", info.NodeID, sum, info.EKFingerprint)
	}
	if out, _, _ := runLauncher(t, env, "tpm", "info"); !strings.Contains(out, "Node id:      "+info.NodeID) {
		t.Fatalf("tpm info text lacks the node id:\n%s", out)
	}
	out, _, code = runLauncher(t, env, "tpm", "info", "--pcr", "16")
	if code != 0 || !strings.Contains(out, "Launch PCR:   16 = ") || !strings.Contains(out, "not created yet") {
		t.Fatalf("tpm info text: exit %d:\n%s", code, out)
	}
	out, _, code = runLauncher(t, env, "tpm", "stop")
	if code != 0 || !strings.Contains(out, "stopped (pid ") {
		t.Fatalf("tpm stop: exit %d: %s", code, out)
	}
	if _, ok := tpm.ManagedPID(filepath.Join(state, "swtpm")); ok {
		t.Fatal("daemon still running after tpm stop")
	}
	out, _, code = runLauncher(t, env, "tpm", "stop")
	if code != 0 || !strings.Contains(out, "not running") {
		t.Fatalf("second tpm stop: exit %d: %s", code, out)
	}
}

func TestTPMInfoErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"tpm", "info", "--tpm", "bogus"}, 1, "not understood"},
		// --pcr names the launch PCR and takes what 'launcher run --pcr' and
		// attestd's --launch-pcr take (limits.CheckLaunchPCR); it once took
		// PCR 0 too. The check comes before any TPM is opened.
		{[]string{"tpm", "info", "--pcr", "24"}, 2, "--pcr 24: want 1..23"},
		{[]string{"tpm", "info", "--pcr", "0"}, 2, "--pcr 0: want 1..23"},
		{[]string{"tpm", "info", "--pcr", "-1"}, 2, "--pcr -1: want 1..23"},
		{[]string{"tpm", "info", "extra"}, 2, "unexpected arguments"},
		{[]string{"tpm", "stop", "--tpm", "sim"}, 2, "not a managed swtpm"},
	} {
		_, errs, code := runLauncher(t, map[string]string{"BULWARK_STATE": t.TempDir()}, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.msg)
		}
	}
}
