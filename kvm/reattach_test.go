package kvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

func TestSkipToMarker(t *testing.T) {
	marker := channel.Reattach{Nonce: strings.Repeat("ab", 16)}.Marker()
	other := channel.Reattach{Nonce: strings.Repeat("cd", 16)}.Marker()
	for _, tc := range []struct {
		name    string
		in      []byte
		skipped int
		err     error
	}{
		{"at once", marker, 0, nil},
		{"after a cut frame", append([]byte{0, 0, 1, 0, 5, 'x'}, marker...), 6, nil},
		{"after another host's marker", append(append([]byte{}, other...), marker...), len(other), nil},
		{"a prefix of it, then it", append(append([]byte{}, marker[:10]...), marker...), 10, nil},
		{"never", []byte("nothing here"), 0, io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(append(tc.in, "rest"...)))
			n, err := skipTo(r, marker, 1<<20)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			rest, _ := io.ReadAll(r)
			if n != tc.skipped || string(rest) != "rest" {
				t.Fatalf("skipped %d (want %d), then %q", n, tc.skipped, rest)
			}
		})
	}
	r := bufio.NewReader(bytes.NewReader(bytes.Repeat([]byte{1}, 1000)))
	if _, err := skipTo(r, marker, 100); err == nil || !strings.Contains(err.Error(), "more than 100 bytes") {
		t.Fatalf("a stream without the marker past the limit: %v", err)
	}
}

// Reattach refuses a pid that is not the recorded QEMU (wrong start time,
// gone) without touching it.
func TestReattachRefusesAnotherProcess(t *testing.T) {
	self, err := processStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "x", RunDir: t.TempDir(), Stdout: io.Discard, Stderr: io.Discard}
	for _, p := range []Persisted{
		{PID: os.Getpid(), StartTime: self + 1},
		{PID: 0},
		{PID: 1 << 30, StartTime: 1},
	} {
		if _, err := Reattach(context.Background(), cfg, p); !errors.Is(err, ErrGone) {
			t.Errorf("Reattach(%+v): %v, want ErrGone", p, err)
		}
	}
	if !sameProcess(os.Getpid(), self) {
		t.Error("sameProcess does not know this process")
	}
}

// A run directory too deep for a unix socket address still works: the
// sockets are named through a descriptor of the directory.
func TestSocketDirDeepPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < maxSocketPath {
		dir = filepath.Join(dir, "a-rather-long-directory-name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	short, done, err := socketDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if len(filepath.Join(short, channelSocket)) > maxSocketPath {
		t.Fatalf("socket path still %d bytes: %s", len(short), short)
	}
	l, conn, err := listenAndDial(filepath.Join(short, channelSocket), true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer conn.Close()
	if _, err := os.Stat(filepath.Join(dir, channelSocket)); err != nil {
		t.Fatalf("the kept socket is not in the deep directory: %v", err)
	}
}
