package enclave_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/enclave/backendtest"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/tpm"
)

// Every backend of this package passes the suite in enclave/backendtest, over
// the embedded store.

func newStore(t *testing.T) enclave.SecretStore {
	t.Helper()
	st, err := embedded.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestFileBackendConformance(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	backendtest.Run(t, func(t *testing.T, dir string) enclave.Backend { return enclave.NewFileBackend(dir, true, log) }, newStore)
	if !strings.Contains(logs.String(), "INSECURE VAULT") || !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("file backend did not warn loudly; logs:\n%s", logs.String())
	}
}

func TestTPMBackendConformance(t *testing.T) {
	tp, err := tpm.Open(context.Background(), "sim")
	if err != nil {
		t.Skipf("TPM simulator unavailable (needs cgo and libssl-dev: apt-get install libssl-dev gcc): %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	backendtest.Run(t, func(t *testing.T, dir string) enclave.Backend { return enclave.NewTPMBackend(dir, tp, nil) }, newStore)
}

func TestSGXBackendConformance(t *testing.T) {
	root := make([]byte, 32)
	rand.Read(root)
	backendtest.Run(t, func(t *testing.T, dir string) enclave.Backend { return enclave.NewFakeSGXBackend(dir, root) }, newStore)
}
