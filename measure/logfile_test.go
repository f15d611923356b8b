package measure

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestAppendToLogFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "launch.cel")
	l, err := ReadLogFile(path)
	if err != nil || l.Len() != 0 {
		t.Fatalf("missing file: %v, %d records", err, l.Len())
	}
	// A software PCR stands in for the TPM here; TestReplayMatchesTPM
	// covers the real one. It checks that extends and appends stay in step.
	var mu sync.Mutex
	pcr := make([]byte, 32)
	ext := func(a Alg, _ int, d []byte) error {
		mu.Lock()
		defer mu.Unlock()
		pcr = extendByHand(a.Hash(), pcr, d)
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := AppendToLogFile(path, testEvent(fmt.Sprintf("sb-%d", i)), DefaultLaunchPCR, nil, ext)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vl, err := VerifyLog(b, DefaultLaunchPCR, SHA256, pcr)
	if err != nil {
		t.Fatal(err)
	}
	if len(vl.Records) != 8 {
		t.Fatalf("%d records", len(vl.Records))
	}
	// A corrupt file is refused, not overwritten.
	os.WriteFile(path, append(b, 1, 2, 3), 0o644)
	if _, err := AppendToLogFile(path, testEvent("x"), DefaultLaunchPCR, nil, nil); err == nil {
		t.Fatal("appended to a corrupt log")
	}
}
