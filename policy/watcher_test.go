package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

func TestWatcherKeepsLastGoodSet(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := NewWatcher(dir, WatcherOptions{Logger: logger, Now: func() time.Time { return now }})
	if w.Set().Len() != 0 {
		t.Fatal("set before first load is not empty")
	}
	if v := w.Evaluate(context.Background(), Evidence{Event: measure.LaunchEvent{Policy: "t"}}); v.Allow {
		t.Fatal("allowed before any policy loaded")
	}
	writeFile(t, filepath.Join(dir, "t.yaml"), []byte(minimal))
	if !w.Check() {
		t.Fatal("first check did not load")
	}
	if w.Check() {
		t.Fatal("reloaded without a change")
	}
	st := w.Status()
	if st.LastError != "" || strings.Join(st.Policies, ",") != "t" || st.Reloads != 1 || !st.LoadedAt.Equal(now) {
		t.Fatalf("status %+v", st)
	}
	first := w.Set()

	// A broken new file: the old set stays, the status says why.
	now = now.Add(time.Minute)
	writeFile(t, filepath.Join(dir, "u.yaml"), []byte(strings.Replace(minimal, "name: t", "name: u\nbogus: 1", 1)))
	if !w.Check() {
		t.Fatal("new file not noticed")
	}
	if w.Set() != first {
		t.Fatal("set replaced by a failed load")
	}
	st = w.Status()
	if st.Failures != 1 || st.ErrorCount != 1 || !strings.Contains(st.LastError, `u.yaml:3:1: policy: unknown field "bogus"`) || !st.LastErrorAt.Equal(now) || strings.Join(st.Policies, ",") != "t" {
		t.Fatalf("status %+v", st)
	}
	mu.Lock()
	if !strings.Contains(logs.String(), "policy reload failed") {
		t.Fatalf("failure not logged: %s", logs.String())
	}
	mu.Unlock()
	if err := w.Reload(); err == nil {
		t.Fatal("explicit Reload of a broken dir succeeded")
	}

	// Fixing it swaps in the new set.
	now = now.Add(time.Minute)
	writeFile(t, filepath.Join(dir, "u.yaml"), []byte(strings.Replace(minimal, "name: t", "name: u", 1)))
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	st = w.Status()
	if st.LastError != "" || strings.Join(st.Policies, ",") != "t,u" || st.Reloads != 2 || st.Failures != 2 {
		t.Fatalf("status %+v", st)
	}

	// A key file change is noticed too.
	k := newTestKey(t)
	writeFile(t, filepath.Join(dir, "keys", "k.pub"), []byte(k.pem))
	writeFile(t, filepath.Join(dir, "u.yaml"), []byte(strings.Replace(minimal, "name: t", "name: u\nsigners:\n  k: {public_key_file: keys/k.pub}", 1)))
	if !w.Check() || w.Status().LastError != "" {
		t.Fatalf("status %+v", w.Status())
	}
	writeFile(t, filepath.Join(dir, "keys", "k.pub"), []byte("garbage"))
	if !w.Check() || !strings.Contains(w.Status().LastError, "no PEM block") {
		t.Fatalf("key file change not noticed: %+v", w.Status())
	}
}

func TestWatcherRun(t *testing.T) {
	dir := t.TempDir()
	w := NewWatcher(dir, WatcherOptions{Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	writeFile(t, filepath.Join(dir, "t.yaml"), []byte(minimal))
	deadline := time.Now().Add(5 * time.Second)
	for w.Set().Get("t") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("policy not picked up: %+v", w.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.Remove(filepath.Join(dir, "t.yaml")); err != nil {
		t.Fatal(err)
	}
	for w.Set().Get("t") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("removal not picked up: %+v", w.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestWatcherConcurrentEvaluate evaluates from several goroutines while the
// set is reloaded: every verdict comes from one whole set (run with -race).
func TestWatcherConcurrentEvaluate(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "t.yaml"), []byte(minimal))
	w := NewWatcher(dir, WatcherOptions{})
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	ev := Evidence{Event: measure.LaunchEvent{Policy: "t", Kernel: dA, Cmdline: "console=ttyS0"}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v := w.Evaluate(context.Background(), ev); !v.Allow {
					t.Errorf("denied during reload: %q", v.Reasons)
					return
				}
			}
		}()
	}
	for i := range 20 {
		// Write and rename, as docs/policy.md advises, so no load sees half a file.
		writeFile(t, filepath.Join(dir, ".t.yaml.tmp"), []byte(minimal+"description: \"v"+string(rune('a'+i))+"\"\n"))
		if err := os.Rename(filepath.Join(dir, ".t.yaml.tmp"), filepath.Join(dir, "t.yaml")); err != nil {
			t.Fatal(err)
		}
		if err := w.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

// TestWatcherSameSizeSameMtimeEdit: an edit that keeps the file's size and
// its modification time (two saves within one timestamp tick) is reloaded.
func TestWatcherSameSizeSameMtimeEdit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.yaml")
	writeFile(t, path, []byte(minimal))
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	w := NewWatcher(dir, WatcherOptions{})
	if !w.Check() || w.Status().LastError != "" {
		t.Fatalf("first load: %+v", w.Status())
	}
	edited := strings.Replace(minimal, "console=ttyS0", "console=ttyS1", 1)
	if len(edited) != len(minimal) {
		t.Fatal("the edit changed the size")
	}
	writeFile(t, path, []byte(edited))
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st2, err := os.Stat(path); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("stat after the edit: %v %v", st2, err)
	}
	if !w.Check() {
		t.Fatal("a same-size edit with the same mtime was not reloaded")
	}
	if got := w.Set().Get("t").Cmdline.Exact; len(got) != 1 || got[0] != "console=ttyS1" {
		t.Fatalf("policy in force after the edit: %v", got)
	}
	if w.Check() {
		t.Fatal("reloaded without a change")
	}
}
