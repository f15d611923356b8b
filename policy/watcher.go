package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WatcherOptions configures a Watcher. The zero value is usable.
type WatcherOptions struct {
	Load     LoadOptions
	Interval time.Duration    // how often Run checks for changes; default 2s
	Logger   *slog.Logger     // default: discard
	Now      func() time.Time // default time.Now
	// OnLoad, when set, is called after each successful load (by Reload,
	// Check or Run), with the watcher's lock released: attestd judges its
	// running sandboxes again by the new set. It must not block for long.
	OnLoad func()
}

// Status describes the policy set in force and the last load attempt, for
// metrics and the admin API.
type Status struct {
	Dir         string
	Policies    []string  // names in force, sorted
	LoadedAt    time.Time // when the set in force was loaded; zero if none ever loaded
	LastAttempt time.Time
	// LastError is the full problem list of the last attempt if it failed
	// (the previous set stays in force), "" if it succeeded.
	LastError   string
	LastErrorAt time.Time // time of the most recent failed attempt
	ErrorCount  int       // problems in LastError
	Reloads     uint64    // successful loads
	Failures    uint64    // failed loads
}

// Watcher keeps a directory's policies loaded. Each (re)load builds a whole
// new Set and swaps it in atomically; a load that fails for any file leaves
// the previous set in force. Before the first successful load the set is
// empty and every launch is denied. Safe for concurrent use.
type Watcher struct {
	dir  string
	opts WatcherOptions
	cur  atomic.Pointer[Set]

	mu     sync.Mutex // serialises reloads and guards st, lastFP
	st     Status
	lastFP string
}

// NewWatcher returns a watcher of dir. It loads nothing until Reload or Run.
func NewWatcher(dir string, opts WatcherOptions) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	w := &Watcher{dir: dir, opts: opts}
	w.st.Dir = dir
	empty, _ := NewSet()
	w.cur.Store(empty)
	return w
}

// Set returns the policy set in force (never nil).
func (w *Watcher) Set() *Set { return w.cur.Load() }

// Evaluate judges ev against the set in force.
func (w *Watcher) Evaluate(ctx context.Context, ev Evidence) Verdict {
	return w.Set().Evaluate(ctx, ev)
}

// Preflight is Set.Preflight with the set in force.
func (w *Watcher) Preflight(ctx context.Context, ev Evidence) Verdict {
	return w.Set().Preflight(ctx, ev)
}

// Status returns the state of the set in force and of the last load.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.st
	st.Policies = slices.Clone(st.Policies)
	return st
}

// Reload loads the directory now (for SIGHUP and the admin API). On
// failure the previous set stays in force and the error lists every problem.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	err := w.reloadLocked(w.fingerprint(w.cur.Load()))
	w.mu.Unlock()
	if err == nil && w.opts.OnLoad != nil {
		w.opts.OnLoad()
	}
	return err
}

func (w *Watcher) reloadLocked(fp string) error {
	now := w.opts.Now()
	w.st.LastAttempt = now
	w.lastFP = fp
	set, err := LoadDir(w.dir, w.opts.Load)
	if err != nil {
		w.st.Failures++
		w.st.LastError = err.Error()
		w.st.LastErrorAt = now
		w.st.ErrorCount = len(Errors(err))
		w.opts.Logger.Warn("policy reload failed; the previous policies stay in force",
			"dir", w.dir, "problems", w.st.ErrorCount, "error", err.Error(), "in_force", len(w.st.Policies))
		return err
	}
	// Remember the state the new set was read from, before anyone sees
	// the set: a file changed by someone who acts on the new set (removed
	// the moment it is in force) must count as a change. newFP is taken
	// first, then the old state checked: if anything changed since fp,
	// while loading or since, force another load at the next check.
	old := w.cur.Load()
	newFP := w.fingerprint(set)
	if w.fingerprint(old) == fp {
		w.lastFP = newFP
	} else {
		w.lastFP = ""
	}
	w.cur.Store(set)
	w.st.Reloads++
	w.st.LastError = ""
	w.st.ErrorCount = 0
	w.st.LoadedAt = now
	w.st.Policies = set.Names()
	w.opts.Logger.Info("policies loaded", "dir", w.dir, "policies", strings.Join(set.Names(), ","))
	return nil
}

// Run checks the directory every Interval and reloads when a policy file,
// a signature or a signer key file changed (name, mode or content). It loads once at start, and returns when ctx is done.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	w.Check()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			w.Check()
		}
	}
}

// Check reloads if the directory changed since the last attempt; it
// reports whether a reload was attempted.
func (w *Watcher) Check() bool {
	w.mu.Lock()
	fp := w.fingerprint(w.cur.Load())
	if fp == w.lastFP && !w.st.LastAttempt.IsZero() {
		w.mu.Unlock()
		return false
	}
	err := w.reloadLocked(fp)
	w.mu.Unlock()
	if err == nil && w.opts.OnLoad != nil {
		w.opts.OnLoad()
	}
	return true
}

// fingerprint summarises every file a load would read by its content, not
// its stat data: an edit that keeps the size and lands within one mtime tick
// (a coarse-timestamp filesystem, two saves in one second) must still be
// reloaded. Each file is read up to one byte past the largest file a load
// accepts; a larger file fails to load anyway, so its size and mtime stand in
// for the rest.
func (w *Watcher) fingerprint(set *Set) string {
	h := sha256.New()
	files := set.Files()
	if ents, err := os.ReadDir(w.dir); err != nil {
		fmt.Fprintf(h, "dir error %v\n", err)
	} else {
		for _, e := range ents {
			files = append(files, filepath.Join(w.dir, e.Name()))
		}
	}
	slices.Sort(files)
	files = slices.Compact(files)
	for _, f := range files {
		fmt.Fprintf(h, "%s %s\n", f, fileDigest(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileDigest names path's state for fingerprint: its mode and the SHA-256 of
// at most fingerprintLimit bytes of its content, plus size and mtime when it
// is larger; "missing" or the error when it cannot be read.
func fileDigest(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	if !st.Mode().IsRegular() {
		return fmt.Sprintf("%v", st.Mode())
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("unreadable %v", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, fingerprintLimit))
	if err != nil {
		return fmt.Sprintf("read error %v", err)
	}
	d := fmt.Sprintf("%v %x", st.Mode(), h.Sum(nil))
	if n == fingerprintLimit {
		d += fmt.Sprintf(" %d %d", st.Size(), st.ModTime().UnixNano())
	}
	return d
}

// fingerprintLimit is one byte past the largest file a load reads.
const fingerprintLimit = max(MaxPolicySize, MaxKeySize) + 1
