package launchercmd

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

// sentSignals is the client side of ExecInteractive as far as
// forwardSignals uses it: the signals it sends, or an error for each.
type sentSignals struct {
	bulwarkv1.Host_ExecInteractiveClient
	mu   sync.Mutex
	sent []uint32
	fail bool
}

func (s *sentSignals) Send(m *bulwarkv1.ExecInput) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("the call ended")
	}
	s.sent = append(s.sent, m.GetSignal())
	return nil
}

// forwardSignals sends each signal to the command; the third SIGINT or
// SIGTERM (other signals do not count) stops waiting instead, saying so;
// a signal that cannot be sent stops waiting too.
func TestForwardSignals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []os.Signal
		fail   bool
		sent   []uint32
		gaveUp bool
	}{
		{"forwarded", []os.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGINT}, false, []uint32{15, 1, 3, 2}, false},
		{"the third interrupt gives up", []os.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT}, false, []uint32{2, 1, 15}, true},
		{"a call that ended", []os.Signal{syscall.SIGTERM}, true, nil, false},
	} {
		stream := &sentSignals{fail: tc.fail}
		var stderr bytes.Buffer
		sigs := make(chan os.Signal)
		ended := make(chan struct{})
		cancelled := make(chan struct{})
		returned := make(chan struct{})
		go func() {
			defer close(returned)
			forwardSignals(&cli.Env{Stderr: &stderr}, &execSender{stream: stream}, sigs, func() { close(cancelled) }, ended)
		}()
		for _, s := range tc.in {
			sigs <- s
		}
		if !tc.gaveUp && !tc.fail {
			close(ended) // the command ended
		}
		<-returned
		select {
		case <-cancelled:
			if !tc.gaveUp && !tc.fail {
				t.Errorf("%s: the wait was cancelled", tc.name)
			}
		default:
			if tc.gaveUp || tc.fail {
				t.Errorf("%s: the wait was not cancelled", tc.name)
			}
		}
		if len(stream.sent) != len(tc.sent) || len(tc.sent) > 0 && !equalU32(stream.sent, tc.sent) {
			t.Errorf("%s: sent %v, want %v", tc.name, stream.sent, tc.sent)
		}
		if got := strings.Contains(stderr.String(), "no longer waiting"); got != tc.gaveUp {
			t.Errorf("%s: stderr %q", tc.name, stderr.String())
		}
	}
}

func equalU32(a, b []uint32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}
