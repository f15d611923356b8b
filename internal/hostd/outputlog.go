package hostd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// A sandbox's workload output is kept in one file of records, so that
// stdout and stderr keep their order: a stream byte (1 stdout, 2 stderr),
// a 4-byte big-endian length and that many bytes of output.
const (
	streamStdout = 1
	streamStderr = 2
	recordHeader = 5
	// maxRecord bounds one record; longer writes become several records.
	maxRecord = 32 << 10
)

// DefaultLogLimit is how much output a sandbox keeps by default; past it
// the rest is dropped, with a note in the log saying so.
const DefaultLogLimit = 64 << 20

// outputLog is a sandbox's output file: written by the sandbox, read (and
// followed) by Logs.
type outputLog struct {
	path  string
	limit int64

	mu      sync.Mutex
	f       *os.File // nil once closed
	size    int64
	full    bool
	changed chan struct{} // closed and replaced on every write; closed for good at the end
	ended   bool
}

func createOutputLog(path string, limit int64) (*outputLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &outputLog{path: path, limit: limit, f: f, size: st.Size(), changed: make(chan struct{})}, nil
}

// endedOutputLog is the log of a sandbox that no longer runs.
func endedOutputLog(path string) *outputLog {
	ch := make(chan struct{})
	close(ch)
	return &outputLog{path: path, changed: ch, ended: true}
}

// writer is an io.Writer appending records of one stream.
func (l *outputLog) writer(stream byte) io.Writer {
	return writerFunc(func(p []byte) (int, error) { return l.write(stream, p) })
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (l *outputLog) write(stream byte, p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil || l.full {
		return len(p), nil // output after the end or past the limit is dropped
	}
	n := len(p)
	for len(p) > 0 {
		chunk := p
		if len(chunk) > maxRecord {
			chunk = chunk[:maxRecord]
		}
		if l.size+recordHeader+int64(len(chunk)) > l.limit {
			l.full = true
			note := fmt.Sprintf("\n[bulwark: this sandbox's log reached its limit of %d bytes; further output is dropped]\n", l.limit)
			l.append(streamStderr, []byte(note))
			break
		}
		if err := l.append(stream, chunk); err != nil {
			return 0, err
		}
		p = p[len(chunk):]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return n, nil
}

// append writes one record. l.mu is held.
func (l *outputLog) append(stream byte, p []byte) error {
	rec := make([]byte, recordHeader+len(p))
	rec[0] = stream
	binary.BigEndian.PutUint32(rec[1:], uint32(len(p)))
	copy(rec[recordHeader:], p)
	n, err := l.f.Write(rec)
	l.size += int64(n)
	return err
}

// end closes the file: the sandbox has ended and writes no more.
func (l *outputLog) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	close(l.changed)
}

// state returns the channel closed on the next write (or at the end) and
// whether the log has ended.
func (l *outputLog) state() (<-chan struct{}, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed, l.ended
}

// follow sends the log's records from the start to send; with follow it
// goes on until the log ends or ctx does.
func (l *outputLog) follow(ctx context.Context, follow bool, send func(stream byte, data []byte) error) error {
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing was ever written
	}
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	hdr := make([]byte, recordHeader)
	for {
		// What the log looked like before this read: a record that lands
		// after our EOF closes this channel.
		changed, ended := l.state()
		for {
			stream, data, err := readRecord(r, hdr)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", l.path, err)
			}
			if err := send(stream, data); err != nil {
				return err
			}
		}
		if !follow || ended {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readRecord reads one record; io.EOF when there is no complete record
// (yet): the reader is then left where the incomplete record starts. The
// reader's buffer holds a whole record (maxRecord).
func readRecord(r *bufio.Reader, hdr []byte) (byte, []byte, error) {
	peek, err := r.Peek(recordHeader)
	if err != nil {
		return 0, nil, io.EOF
	}
	copy(hdr, peek)
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if (hdr[0] != streamStdout && hdr[0] != streamStderr) || n > maxRecord {
		return 0, nil, fmt.Errorf("corrupt record (stream %d, length %d)", hdr[0], n)
	}
	rec, err := r.Peek(recordHeader + n)
	if err != nil {
		return 0, nil, io.EOF
	}
	data := append([]byte(nil), rec[recordHeader:]...)
	_, err = r.Discard(recordHeader + n)
	return hdr[0], data, err
}
