package attestdcmd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ctl parses the action's flags and arguments before it dials: --help and
// usage mistakes need no --ca (they used to fail with "no CA certificate:
// give --ca"). --addr must be HOST:PORT (a bare host silently dialled
// port 443), and --timeout positive.
func TestCtlParsesBeforeDialling(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		want string // in stdout+stderr
	}{
		{"action --help", []string{"secret", "put", "--help"}, 0, "Usage: attestd ctl [--addr ... --ca ... --cert ... --key ...] secret put NAME"},
		{"action -h", []string{"nodes", "rm", "-h"}, 0, "nodes rm NODE_ID"},
		{"action flags in help", []string{"audit", "--help"}, 0, "-limit"},
		{"missing NAME", []string{"secret", "put"}, 2, "missing NAME"},
		{"missing NAME with a flag", []string{"secret", "put", "--from-file", "x"}, 2, "missing NAME"},
		{"missing NODE_ID", []string{"nodes", "revoke"}, 2, "missing NODE_ID"},
		{"extra argument", []string{"nodes", "x"}, 2, `unexpected argument "x"`},
		{"bad action flag value", []string{"audit", "--limit", "0"}, 2, "--limit 0: want 1..1000"},
		{"unknown action flag", []string{"audit", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"unknown action", []string{"bogus"}, 2, `unknown action "bogus"`},
		// ctl's own flags after the action used to be "flag provided but
		// not defined: -addr".
		{"ctl flag after the action", []string{"nodes", "--addr", "h:1"}, 2,
			`--addr is a flag of attestd ctl, not of its action "nodes": put it before the action: attestd ctl --addr h:1 nodes`},
		{"ctl flag= after a two-word action", []string{"nodes", "rm", "--ca=x.crt", "sha256:ab"}, 2,
			"put it before the action: attestd ctl --ca=x.crt nodes rm sha256:ab"},
		{"ctl flag after an action flag", []string{"audit", "--limit", "5", "--cert", "a.crt"}, 2,
			"attestd ctl --cert a.crt audit --limit 5"},
		{"addr without a port", []string{"--addr", "127.0.0.1", "nodes"}, 2, `--addr "127.0.0.1": want HOST:PORT`},
		{"addr without a host", []string{"--addr", ":8443", "nodes"}, 2, `--addr ":8443": want HOST:PORT`},
		{"addr with an empty port", []string{"--addr", "localhost:", "nodes"}, 2, "--addr"},
		{"zero timeout", []string{"--timeout", "0s", "nodes"}, 2, "--timeout 0s: want a positive duration"},
		{"negative timeout", []string{"--timeout", "-1s", "nodes"}, 2, "--timeout -1s"},
		// A well-formed command still needs its CA, after parsing.
		{"no --ca", []string{"--addr", "127.0.0.1:1", "nodes"}, 1, "no CA certificate: give --ca"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runAttestd(t, "", append([]string{"ctl"}, c.args...)...)
			if code != c.code || !strings.Contains(out+errs, c.want) {
				t.Fatalf("exit %d, want %d with %q:\nstdout: %s\nstderr: %s", code, c.code, c.want, out, errs)
			}
			if c.code != 1 && strings.Contains(out+errs, "no CA certificate") {
				t.Fatalf("dialled before parsing the action:\n%s", errs)
			}
		})
	}
}

// fakeAudit serves ReadAudit pages of one record each. Each call takes
// delay on the fake clock (no real waiting): it checks that its deadline is
// --timeout from the clock's time at the call, and answers DeadlineExceeded
// when delay would pass that deadline, as a server slower than --timeout
// would be cut off.
type fakeAudit struct {
	bulwarkv1.AdminClient // other methods: not called (nil: they would panic)
	pages                 uint64
	delay                 time.Duration
	now                   time.Time
	left                  []time.Duration
}

func (f *fakeAudit) clock() time.Time { return f.now }

func (f *fakeAudit) ReadAudit(ctx context.Context, in *bulwarkv1.ReadAuditRequest, _ ...grpc.CallOption) (*bulwarkv1.ReadAuditResponse, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		return nil, errors.New("call without a deadline")
	}
	f.left = append(f.left, dl.Sub(f.now))
	if f.now.Add(f.delay).After(dl) {
		f.now = dl
		return nil, status.Error(codes.DeadlineExceeded, "context deadline exceeded")
	}
	f.now = f.now.Add(f.delay)
	seq := in.GetAfter() + 1
	resp := &bulwarkv1.ReadAuditResponse{Records: []*bulwarkv1.AuditRecord{{Seq: seq, Kind: "enroll"}}}
	if seq < f.pages {
		resp.Next = seq
	}
	return resp, nil
}

// --timeout is per call: 'audit --all' may take longer than --timeout in
// all, as long as each page comes within it (it used to be one deadline
// for the whole command, which killed long listings mid-stream).
func TestCtlTimeoutPerCall(t *testing.T) {
	// Durations are on the fake clock: nothing waits. The real deadline is
	// the fake one too, so --timeout is an hour: far beyond the test's run.
	cases := []struct {
		name     string
		pages    uint64
		delay    time.Duration
		timeout  time.Duration
		wantCode codes.Code // OK: succeeds
	}{
		{"pages longer than the timeout in all", 6, 20 * time.Minute, time.Hour, codes.OK},
		{"one page slower than the timeout", 3, 2 * time.Hour, time.Hour, codes.DeadlineExceeded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			env := &cli.Env{Stdout: &out, Stderr: &out}
			fs := flag.NewFlagSet("audit", flag.ContinueOnError)
			act, err := ctlAudit(env, fs, []string{"--all", "--limit", "1"})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			f := &fakeAudit{pages: c.pages, delay: c.delay, now: start}
			err = act(context.Background(), &ctlConn{admin: f, timeout: c.timeout, now: f.clock})
			for i, l := range f.left {
				if l != c.timeout {
					t.Errorf("call %d had %v left of its deadline, want --timeout %v", i+1, l, c.timeout)
				}
			}
			if c.wantCode != codes.OK {
				if status.Code(err) != c.wantCode {
					t.Fatalf("%v, want %v", err, c.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(out.String(), "\tenroll\t"); uint64(got) != c.pages || uint64(len(f.left)) != c.pages {
				t.Fatalf("%d records in %d calls, want %d:\n%s", got, len(f.left), c.pages, out.String())
			}
			if took := f.now.Sub(start); took <= c.timeout {
				t.Fatalf("took %v: the case must outlast --timeout %v in all", took, c.timeout)
			}
		})
	}
}
