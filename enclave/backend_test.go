package enclave

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/tpm"
)

// TestFileBackend: the file backend refuses to run unless allowed, and
// refuses a key file others can read. Its conformance run (and its loud
// warning) is TestFileBackendConformance.
func TestFileBackend(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	dir := t.TempDir()
	off := NewFileBackend(dir, false, log)
	if err := off.Init(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "development only") {
		t.Fatalf("Init without AllowInsecureFile: %v", err)
	}
	if _, err := off.Open(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open without AllowInsecureFile: %v", err)
	}
	on := NewFileBackend(dir, true, log)
	if err := on.Init(ctx); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, FileKeyName)
	os.Chmod(p, 0o644)
	if _, err := on.Open(ctx); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Open of a world-readable key file: %v", err)
	}
	os.Chmod(p, 0o600)
	os.WriteFile(p, []byte("short"), 0o600)
	if _, err := on.Open(ctx); err == nil {
		t.Fatal("Open of a truncated key file succeeded")
	}
}

// openSim opens the in-process reference TPM simulator (cgo): a freshly
// manufactured TPM with its own seeds each time.
func openSim(t *testing.T) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(context.Background(), "sim")
	if err != nil {
		t.Skipf("TPM simulator unavailable (needs cgo and libssl-dev: apt-get install libssl-dev gcc): %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// TestTPMBackend: sealed to PCRs, tamper-evident, unavailable without a
// TPM. Its conformance run is TestTPMBackendConformance.
func TestTPMBackend(t *testing.T) {
	tp := openSim(t)
	ctx := context.Background()
	dir := t.TempDir()
	b := NewTPMBackend(dir, tp, []int{7, 14})
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(ctx); err != nil {
		t.Fatal(err)
	}
	// A change of a sealed-to PCR locks the key away.
	d := sha256.Sum256([]byte("something else booted"))
	if err := tp.Extend(ctx, 14, d[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(ctx); err == nil || errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("Open after PCR 14 changed: %v, want an unseal failure", err)
	}
	// A tampered blob does not open.
	dir2 := t.TempDir()
	b2 := NewTPMBackend(dir2, tp, nil)
	if err := b2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir2, TPMKeyName)
	blob, _ := os.ReadFile(p)
	blob[len(blob)-5] ^= 1
	os.WriteFile(p, blob, 0o600)
	if _, err := b2.Open(ctx); err == nil {
		t.Fatal("tampered sealed blob opened")
	}
	if _, err := NewTPMBackend(dir, nil, nil).Open(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("backend without TPM: %v", err)
	}
}

// TestTPMBackendOtherTPM seals with one TPM and fails to unseal with another.
func TestTPMBackendOtherTPM(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tp1 := openSim(t)
	if err := NewTPMBackend(dir, tp1, nil).Init(ctx); err != nil {
		t.Fatal(err)
	}
	tp1.Close() // the simulator is one per process: close it to make another
	tp2 := openSim(t)
	defer tp2.Close()
	_, err := NewTPMBackend(dir, tp2, nil).Open(ctx)
	if err == nil || errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("another TPM opened the vault key: %v", err)
	}
	if !strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("error does not explain: %v", err)
	}
}

// TestSGXRefusesOutsideEnclave runs the real ego calls: outside an SGX
// enclave (here: no SGX at all) the backend must refuse, not seal with ego's
// all-zero key.
func TestSGXRefusesOutsideEnclave(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := NewSGXBackend(dir)
	for name, f := range map[string]func() error{
		"Init": func() error { return b.Init(ctx) },
		"Open": func() error { _, err := b.Open(ctx); return err },
	} {
		err := f()
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s outside an enclave: %v, want ErrUnavailable", name, err)
		}
		if !strings.Contains(err.Error(), "not running inside an SGX enclave") && !strings.Contains(err.Error(), "without cgo") {
			t.Fatalf("%s: unclear refusal: %v", name, err)
		}
		if !strings.Contains(err.Error(), "docs/vault.md") {
			t.Fatalf("%s: refusal does not say where to read on: %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("refused backend wrote %d files", len(ents))
	}
	st, err := embedded.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := New(ctx, b, st, true, Options{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("vault over sgx outside an enclave: %v", err)
	}
}

// fakeEnclave stands in for SGX hardware, which this machine does not have,
// to test the backend's own logic: blob format, the all-zero key check and
// the debug-enclave refusal. It is never used outside tests.
type fakeEnclave struct {
	inEnclave, debugMode bool
	root                 []byte // "CPU" secret; nil: zero keys like ego outside an enclave
}

func (f *fakeEnclave) remoteReport(data []byte) ([]byte, error) {
	if !f.inEnclave {
		return nil, errors.New("OE_UNSUPPORTED")
	}
	return append([]byte("report:"), data...), nil
}
func (f *fakeEnclave) debug() (bool, error) { return f.debugMode, nil }
func (f *fakeEnclave) newSealKey() ([]byte, []byte, error) {
	info := make([]byte, 32)
	rand.Read(info)
	k, err := f.sealKey(info)
	return k, info, err
}
func (f *fakeEnclave) sealKey(info []byte) ([]byte, error) {
	if f.root == nil {
		return make([]byte, 16), nil
	}
	h := sha256.Sum256(append(append([]byte{}, f.root...), info...))
	return h[:16], nil
}

// TestSGXBackendLogic tests the sgx backend's own logic over a simulated
// enclave. Its conformance run is TestSGXBackendConformance.
func TestSGXBackendLogic(t *testing.T) {
	root := make([]byte, 32)
	rand.Read(root)
	ctx := context.Background()
	t.Run("zero seal key refused", func(t *testing.T) {
		b := &SGXBackend{Dir: t.TempDir(), platform: &fakeEnclave{inEnclave: true}}
		if err := b.Init(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "all zeros") {
			t.Fatalf("Init with an all-zero seal key: %v", err)
		}
	})
	t.Run("debug enclave refused", func(t *testing.T) {
		b := &SGXBackend{Dir: t.TempDir(), platform: &fakeEnclave{inEnclave: true, debugMode: true, root: root}}
		if err := b.Init(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "debug enclave") {
			t.Fatalf("Init in a debug enclave: %v", err)
		}
		b.AllowDebugEnclave = true
		if err := b.Init(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("other CPU", func(t *testing.T) {
		dir := t.TempDir()
		if err := (&SGXBackend{Dir: dir, platform: &fakeEnclave{inEnclave: true, root: root}}).Init(ctx); err != nil {
			t.Fatal(err)
		}
		other := make([]byte, 32)
		rand.Read(other)
		_, err := (&SGXBackend{Dir: dir, platform: &fakeEnclave{inEnclave: true, root: other}}).Open(ctx)
		if err == nil || errors.Is(err, ErrNoMasterKey) {
			t.Fatalf("another CPU opened the key: %v", err)
		}
	})
	t.Run("malformed blobs", func(t *testing.T) {
		dir := t.TempDir()
		b := &SGXBackend{Dir: dir, platform: &fakeEnclave{inEnclave: true, root: root}}
		for _, blob := range [][]byte{{}, {0, 0, 0}, {0, 0, 0, 0, 1}, {0xff, 0xff, 0xff, 0xff, 1}, {0, 0, 0, 1, 9}} {
			os.WriteFile(filepath.Join(dir, SGXKeyName), blob, 0o600)
			if _, err := b.Open(ctx); err == nil {
				t.Fatalf("malformed blob %x opened", blob)
			}
		}
	})
}

// TestTPMBackendSwtpm runs the tpm backend on real swtpm processes: the key
// survives a "reboot" of the TPM (daemon restarted, PCRs reset to the same
// boot state) and does not open on another swtpm.
func TestTPMBackendSwtpm(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts swtpm processes")
	}
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed: apt-get install swtpm swtpm-tools")
	}
	ctx := context.Background()
	open := func(dir string) *tpm.TPM {
		t.Helper()
		tp, err := tpm.Open(ctx, "swtpm:"+dir)
		if err != nil {
			t.Fatalf("starting swtpm in %s: %v", dir, err)
		}
		return tp
	}
	d1, d2, vault := t.TempDir(), t.TempDir(), t.TempDir()
	t.Cleanup(func() { tpm.StopManaged(d1); tpm.StopManaged(d2) })
	tp1 := open(d1)
	if err := NewTPMBackend(vault, tp1, nil).Init(ctx); err != nil {
		t.Fatal(err)
	}
	k1, err := NewTPMBackend(vault, tp1, nil).Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tp1.Close()
	if err := tpm.StopManaged(d1); err != nil {
		t.Fatal(err)
	}
	tp1 = open(d1) // rebooted: same TPM, PCRs reset
	defer tp1.Close()
	k2, err := NewTPMBackend(vault, tp1, nil).Open(ctx)
	if err != nil {
		t.Fatalf("after a TPM restart: %v", err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("another key after a TPM restart")
	}
	tp2 := open(d2)
	defer tp2.Close()
	if _, err := NewTPMBackend(vault, tp2, nil).Open(ctx); err == nil || errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("another swtpm opened the vault key: %v", err)
	}
}
