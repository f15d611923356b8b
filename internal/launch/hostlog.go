package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm"
)

// pcrTPM is what the host log needs of the TPM: read and extend one PCR.
type pcrTPM interface {
	ReadPCRs(ctx context.Context, pcrs ...int) (map[int][]byte, error)
	Extend(ctx context.Context, pcr int, digest []byte) error
}

// HostLog is this host's launch event log: a CEL file in the state directory
// that always replays to the TPM's launch PCR. Every launch appends one
// event to it and extends that event's digest into the PCR, under an
// exclusive file lock so that concurrent launchers stay in order.
//
// A TPM reset (reboot, or a restarted managed swtpm) zeroes the PCR: the log
// is then archived and started afresh. Any other mismatch means something
// else extended the launch PCR, and the launch is refused with advice.
type HostLog struct {
	path string
	pcr  int
	now  func() time.Time // names archives; time.Now
}

// NewHostLog returns the log kept at dir/launch.cel for the given PCR.
func NewHostLog(dir string, pcr int) *HostLog {
	return &HostLog{path: filepath.Join(dir, "launch.cel"), pcr: pcr, now: time.Now}
}

// Path is where the log lives.
func (h *HostLog) Path() string { return h.path }

// Append records ev: it checks the log against the PCR, extends the PCR by the
// event digest and writes the new log. It returns the whole encoded log as it
// stands after this append (attestd is sent the log as of its quote:
// QuoteWithLog).
func (h *HostLog) Append(ctx context.Context, t pcrTPM, ev *measure.LaunchEvent) ([]byte, error) {
	if err := os.MkdirAll(filepath.Dir(h.path), 0o700); err != nil {
		return nil, fmt.Errorf("launch log: %w", err)
	}
	unlock, err := fsutil.Lock(ctx, h.path+".lock")
	if err != nil {
		return nil, fmt.Errorf("launch log lock: %w", err)
	}
	defer unlock()

	lg, err := h.loadInSync(ctx, t)
	if err != nil {
		return nil, err
	}
	// Extend first, then write: if the write failed after the extend, the
	// next launch would see the mismatch and refuse, never lie.
	if _, err := lg.Append(ev, h.pcr, []measure.Alg{measure.SHA256}, func(a measure.Alg, pcr int, d []byte) error {
		if a != measure.SHA256 {
			return nil
		}
		return t.Extend(ctx, pcr, d)
	}); err != nil {
		return nil, fmt.Errorf("recording the launch event: %w", err)
	}
	data := lg.Encode()
	if err := fsutil.WriteFileAtomic(h.path, data, 0o644); err != nil {
		return nil, fmt.Errorf("%w (PCR %d was extended: the next launch will report the log out of sync)", err, h.pcr)
	}
	return data, nil
}

// End records that sandboxes ids ended (reason, a measure.End* constant):
// for each that this log launched and that has not ended yet, it extends
// the PCR by an END record's digest and writes the log, as Append does.
// Others are passed over: a sandbox of an earlier boot cycle (the TPM reset
// started a new log) or one whose END is recorded already. It returns how
// many END records it appended.
func (h *HostLog) End(ctx context.Context, t pcrTPM, reason string, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o700); err != nil {
		return 0, fmt.Errorf("launch log: %w", err)
	}
	unlock, err := fsutil.Lock(ctx, h.path+".lock")
	if err != nil {
		return 0, fmt.Errorf("launch log lock: %w", err)
	}
	defer unlock()
	lg, err := h.loadInSync(ctx, t)
	if err != nil {
		return 0, err
	}
	n := 0
	var appendErr error
	for _, id := range ids {
		if lg.CanEnd(id) != nil {
			continue
		}
		ev := &measure.EndEvent{SandboxID: id, Reason: reason, Time: h.now().UTC().Truncate(time.Second)}
		if _, appendErr = lg.AppendEnd(ev, h.pcr, []measure.Alg{measure.SHA256}, func(a measure.Alg, pcr int, d []byte) error {
			if a != measure.SHA256 {
				return nil
			}
			return t.Extend(ctx, pcr, d)
		}); appendErr != nil {
			appendErr = fmt.Errorf("recording the end of sandbox %s: %w", id, appendErr)
			break
		}
		n++
	}
	if n > 0 { // what was extended is written, whatever failed after it
		if err := fsutil.WriteFileAtomic(h.path, lg.Encode(), 0o644); err != nil {
			return 0, fmt.Errorf("%w (PCR %d was extended: the next launch will report the log out of sync)", err, h.pcr)
		}
	}
	return n, appendErr
}

// quoteTPM is what QuoteWithLog needs of the TPM.
type quoteTPM interface {
	pcrTPM
	Quote(ctx context.Context, pcrs []int, nonce []byte) (*tpm.Quote, error)
}

// QuoteWithLog quotes pcrs (the launch PCR among them) over nonce while
// holding the log's lock, and returns the log exactly as it stood for that
// quote. Launches on the same host append concurrently: a log read at one
// moment and a quote taken at another would disagree, and attestd would
// refuse the pair as edited or incomplete.
func (h *HostLog) QuoteWithLog(ctx context.Context, t quoteTPM, pcrs []int, nonce []byte) ([]byte, *tpm.Quote, error) {
	q, err := h.QuoteWithLogAfter(ctx, t, pcrs, nonce, nil, "")
	if err != nil {
		return nil, nil, err
	}
	return q.Log, q.Quote, nil
}

// QuotedLog is a quote and the part of the host log that goes with it.
type QuotedLog struct {
	Quote *tpm.Quote
	// Log holds the records from Offset on (all of them for Offset 0).
	Log    []byte
	Offset uint64
	// SandboxRecord is the requested sandbox's record when it lies before
	// Offset (attestd keeps only its digest), else nil.
	SandboxRecord []byte
}

// QuoteWithLogAfter is QuoteWithLog that sends only the records after
// prefix, the part of this log attestd has verified (Challenge), when the
// log starts with it: its first prefix.Events records replay to
// prefix.PcrValue. Otherwise (no prefix, or a new log since: the host
// rebooted) it returns the whole log. One request carries at most
// measure.MaxLogSize bytes of records: past that it fails saying what to do.
func (h *HostLog) QuoteWithLogAfter(ctx context.Context, t quoteTPM, pcrs []int, nonce []byte, prefix *bulwarkv1.LaunchLogPrefix, sandboxID string) (*QuotedLog, error) {
	unlock, err := fsutil.Lock(ctx, h.path+".lock")
	if err != nil {
		return nil, fmt.Errorf("launch log lock: %w", err)
	}
	defer unlock()
	lg, err := h.loadInSync(ctx, t)
	if err != nil {
		return nil, err
	}
	q, err := t.Quote(ctx, pcrs, nonce)
	if err != nil {
		return nil, fmt.Errorf("TPM quote: %w", err)
	}
	out := &QuotedLog{Quote: q, Offset: verifiedPrefix(lg, prefix)}
	out.Log = lg.EncodeFrom(int(out.Offset))
	if out.Offset > 0 && sandboxID != "" {
		recs := lg.Records()
		for i := range recs[:out.Offset] {
			if recs[i].Event != nil && recs[i].Event.SandboxID == sandboxID { // its launch, not its END
				out.SandboxRecord = measure.EncodeRecord(&recs[i])
			}
		}
	}
	if len(out.Log) > measure.MaxLogSize {
		return nil, fmt.Errorf("launch log %s: the %d records attestd has not verified (from record %d) take %d bytes, more than the %d one attestation may carry: "+
			"attestd holds no verified prefix of this log reaching them (a new attestd store, or many launches that never attested); "+
			"reboot the host to start a new launch log (the TPM reset archives this one)",
			h.path, lg.Len()-int(out.Offset), out.Offset, len(out.Log), measure.MaxLogSize)
	}
	return out, nil
}

// verifiedPrefix is how many records of lg attestd's prefix covers: its
// events when lg's first records replay to its PCR value, else 0.
func verifiedPrefix(lg *measure.Log, prefix *bulwarkv1.LaunchLogPrefix) uint64 {
	n := prefix.GetEvents()
	if n == 0 || n > uint64(lg.Len()) {
		return 0
	}
	steps, err := measure.ReplaySteps(lg.Records()[:n], measure.SHA256, nil)
	if err != nil || !bytes.Equal(steps[n-1], prefix.GetPcrValue()) {
		return 0
	}
	return n
}

// loadInSync reads the log and checks that it replays to the PCR.
func (h *HostLog) loadInSync(ctx context.Context, t pcrTPM) (*measure.Log, error) {
	vals, err := t.ReadPCRs(ctx, h.pcr)
	if err != nil {
		return nil, fmt.Errorf("reading launch PCR %d: %w", h.pcr, err)
	}
	cur := vals[h.pcr]
	lg, err := measure.ReadLogFile(h.path)
	if err != nil {
		return nil, fmt.Errorf("launch log is damaged: %w (move it away to start a new log after a reboot)", err)
	}
	if lg.Len() > 0 {
		replayed, err := measure.Replay(lg, h.pcr, measure.SHA256)
		if err != nil {
			return nil, fmt.Errorf("launch log %s: %w", h.path, err)
		}
		if bytes.Equal(replayed, cur) {
			return lg, nil
		}
		if !isZero(cur) {
			return nil, fmt.Errorf("launch log %s does not replay to PCR %d (PCR %x, log %x): something else extended the launch PCR; "+
				"choose another PCR with --pcr or reboot the host", h.path, h.pcr, cur, replayed)
		}
		// The TPM was reset since the last launch: keep the old log for the record.
		if _, err := h.archive(); err != nil {
			return nil, fmt.Errorf("archiving launch log after a TPM reset: %w", err)
		}
	} else if !isZero(cur) {
		return nil, fmt.Errorf("launch PCR %d is not zero (%x) but there is no launch log at %s: something else extended it; "+
			"choose another PCR with --pcr or reboot the host", h.pcr, cur, h.path)
	}
	return measure.ParseLog(nil)
}

// archive moves the log aside as PATH.TIME (PATH.TIME.N when that name is
// taken: two resets within one second) and returns the new name. It never
// replaces an existing archive: the name is claimed with a hard link, which
// fails if it exists, and only then is the log itself removed.
func (h *HostLog) archive() (string, error) {
	base := fmt.Sprintf("%s.%s", h.path, h.now().UTC().Format("20060102T150405Z"))
	for i := range maxArchivesPerSecond {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s.%d", base, i)
		}
		err := os.Link(h.path, name)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		return name, os.Remove(h.path)
	}
	return "", fmt.Errorf("%d archives named %s.* exist already: move old launch logs away", maxArchivesPerSecond, base)
}

// maxArchivesPerSecond bounds the search for a free archive name.
const maxArchivesPerSecond = 1000

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
