package attestd

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/token"
)

// Checkpoints anchor the audit log: attestd signs the head of the hash
// chain (store.Checkpoint.SigningBytes) with its token key and appends the
// signed checkpoint to a file outside the store. Verifying the chain
// against these checkpoints detects what the chain alone cannot: records
// removed from its end, or the whole log rewritten from the start.
// Safe for concurrent use.
type Checkpoints struct {
	path   string
	signer *token.Signer
	now    func() time.Time
	mu     sync.Mutex
	wrote  bool      // a checkpoint was written by this process
	lostAt time.Time // when the file was found gone after that; zero if never
}

// ErrCheckpointsLost is returned by Record, and reported by Lost, once the
// checkpoint file this process wrote has disappeared: the records it
// anchored can no longer be vouched for. Record writes a new file (future
// records are anchored again), but the loss is remembered until restart.
var ErrCheckpointsLost = errors.New("the audit checkpoint file disappeared while attestd ran")

// Lost says when the checkpoint file was found gone after this process had
// written it (zero: never), and why that matters.
func (c *Checkpoints) Lost() (time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lostAt.IsZero() {
		return time.Time{}, nil
	}
	return c.lostAt, fmt.Errorf("%w (%s, found gone at %s): the records it anchored cannot be vouched for; "+
		"restore it from a copy and verify with 'attestd audit verify --checkpoints COPY', then restart attestd",
		ErrCheckpointsLost, c.path, c.lostAt.UTC().Format(time.RFC3339))
}

// CheckpointFile is the checkpoint file's name in the data directory.
const CheckpointFile = "audit-checkpoints.jsonl"

// maxCheckpointFile bounds the checkpoint file read back.
const maxCheckpointFile = 64 << 20

type checkpointLine struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"` // hex
	Time string `json:"time"`
	Kid  string `json:"kid"`
	Sig  string `json:"sig"` // hex ASN.1 ECDSA over SHA-256(SigningBytes)
}

// NewCheckpoints keeps signed checkpoints in path (created 0600).
func NewCheckpoints(path string, signer *token.Signer, now func() time.Time) *Checkpoints {
	if now == nil {
		now = time.Now
	}
	return &Checkpoints{path: path, signer: signer, now: now}
}

// Record signs the current head of a and appends it, unless the last
// checkpoint already names that record. An empty log is recorded as the
// checkpoint of Seq 0 (hash: 32 zero bytes), so that the file exists from
// attestd's first start: `attestd audit verify` reports a missing one.
// It returns the checkpoint.
func (c *Checkpoints) Record(ctx context.Context, a store.Audit) (store.Checkpoint, error) {
	cp := store.Checkpoint{Hash: make([]byte, sha256.Size)}
	head, err := a.AuditHead(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return store.Checkpoint{}, fmt.Errorf("audit head: %w", err)
	default:
		cp = store.Checkpoint{Seq: head.Seq, Hash: head.Hash}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var lost error
	if _, err := os.Stat(c.path); c.wrote && errors.Is(err, os.ErrNotExist) {
		if c.lostAt.IsZero() {
			c.lostAt = c.now()
		}
		lost = fmt.Errorf("%w: %s; writing a new one", ErrCheckpointsLost, c.path)
	}
	if last, err := c.readLocked(); err == nil && len(last) > 0 && last[len(last)-1].Seq == cp.Seq {
		return cp, nil
	}
	h := sha256.Sum256(cp.SigningBytes())
	sig, err := c.signer.Key().Sign(defaultRand, h[:], crypto.SHA256) // ECDSA: ASN.1
	if err != nil {
		return cp, fmt.Errorf("signing audit checkpoint: %w", err)
	}
	line, _ := json.Marshal(checkpointLine{Seq: cp.Seq, Hash: hex.EncodeToString(cp.Hash), Time: c.now().UTC().Format(time.RFC3339),
		Kid: c.signer.KeyID(), Sig: hex.EncodeToString(sig)})
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return cp, fmt.Errorf("audit checkpoints: %w", err)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return cp, fmt.Errorf("audit checkpoints: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return cp, fmt.Errorf("audit checkpoints: %w", err)
	}
	if err := f.Close(); err != nil {
		return cp, fmt.Errorf("audit checkpoints: %w", err)
	}
	c.wrote = true
	return cp, lost
}

// Prune drops the checkpoints before record seq (the seal retention
// purged the log through: what they named is gone), always keeping the
// last one, so that the file does not grow for ever either. It rewrites
// the file atomically (a new file renamed over it): it never goes missing.
func (c *Checkpoints) Prune(seq uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines, err := c.readLocked()
	if err != nil || len(lines) == 0 {
		return err
	}
	keep := lines[:0:0]
	for i, l := range lines {
		if l.Seq >= seq || i == len(lines)-1 {
			keep = append(keep, l)
		}
	}
	if len(keep) == len(lines) {
		return nil
	}
	var buf bytes.Buffer
	for _, l := range keep {
		b, _ := json.Marshal(l)
		buf.Write(append(b, '\n'))
	}
	tmp := c.path + ".tmp"
	if err := writeFileSync(tmp, buf.Bytes()); err != nil {
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("audit checkpoints: %w", err)
	}
	if d, err := os.Open(filepath.Dir(c.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Trusted reads the checkpoints back, verifying each signature with pub;
// a checkpoint that does not verify is an error (the file was edited).
// A missing file is no checkpoints.
func (c *Checkpoints) Trusted(pub *ecdsa.PublicKey) ([]store.Checkpoint, error) {
	c.mu.Lock()
	lines, err := c.readLocked()
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return verifyCheckpoints(lines, pub)
}

func (c *Checkpoints) readLocked() ([]checkpointLine, error) {
	return readCheckpointFile(c.path)
}

// ReadCheckpoints reads and verifies a checkpoint file with pub (for
// `attestd audit verify` offline).
func ReadCheckpoints(path string, pub *ecdsa.PublicKey) ([]store.Checkpoint, error) {
	lines, err := readCheckpointFile(path)
	if err != nil {
		return nil, err
	}
	return verifyCheckpoints(lines, pub)
}

func readCheckpointFile(path string) ([]checkpointLine, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit checkpoints: %w", err)
	}
	if len(b) > maxCheckpointFile {
		return nil, fmt.Errorf("audit checkpoints: %s is over %d bytes", path, maxCheckpointFile)
	}
	var out []checkpointLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l checkpointLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("audit checkpoints %s:%d: %v", path, n, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

func verifyCheckpoints(lines []checkpointLine, pub *ecdsa.PublicKey) ([]store.Checkpoint, error) {
	out := make([]store.Checkpoint, 0, len(lines))
	for i, l := range lines {
		hash, err1 := hex.DecodeString(l.Hash)
		sig, err2 := hex.DecodeString(l.Sig)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("audit checkpoint %d (seq %d): malformed", i+1, l.Seq)
		}
		cp := store.Checkpoint{Seq: l.Seq, Hash: hash}
		h := sha256.Sum256(cp.SigningBytes())
		if !ecdsa.VerifyASN1(pub, h[:], sig) {
			return nil, fmt.Errorf("audit checkpoint %d (seq %d): signature does not verify (checkpoint file edited, or another signing key)", i+1, l.Seq)
		}
		out = append(out, cp)
	}
	return out, nil
}
