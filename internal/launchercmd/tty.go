package launchercmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
)

// The size of the workload's terminal when the launcher has none to copy
// (run -t with neither stdin nor stdout a terminal), as a VT100's.
const (
	defaultRows = 24
	defaultCols = 80
)

// terminal is the launcher's side of 'run -t': the local terminal whose
// size the workload's terminal follows (SIGWINCH → RESIZE), and, with -i,
// the one put in raw mode while the workload runs, so that every key
// (^C, ^D, ^Z, arrows) reaches the guest's terminal as typed, whose line
// discipline then acts on it.
type terminal struct {
	raw  *os.File // stdin forwarded with -i, a terminal; nil: none
	size *os.File // stdout or else stdin, if a terminal; nil: none
	warn io.Writer
}

// newTerminal finds the terminals among input (what -i forwards, nil
// without -i), stdin and stdout; warnings go to stderr.
func newTerminal(input io.Reader, stdin io.Reader, stdout, stderr io.Writer) *terminal {
	t := &terminal{raw: termFile(input), warn: stderr}
	if t.size = termFile(stdout); t.size == nil {
		t.size = termFile(stdin)
	}
	return t
}

// termFile is v as a file when it is a terminal, else nil.
func termFile(v any) *os.File {
	if f, ok := v.(*os.File); ok && f != nil && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}

// windowSize is the local terminal's size, each dimension clamped to
// 1..channel.MaxWindowSize, or 24x80 without one.
func (t *terminal) windowSize() kvm.WindowSize {
	ws := kvm.WindowSize{Rows: defaultRows, Cols: defaultCols}
	if t.size == nil {
		return ws
	}
	cols, rows, err := term.GetSize(int(t.size.Fd()))
	if err != nil || cols <= 0 || rows <= 0 {
		return ws
	}
	return kvm.WindowSize{Rows: uint16(min(rows, channel.MaxWindowSize)), Cols: uint16(min(cols, channel.MaxWindowSize))}
}

// run is launch.Run for a workload with a terminal: once the workload
// runs, the local terminal is in raw mode (with -i) and its size changes
// are forwarded, until the workload ends; the terminal is restored on
// every way out (an error, ctx ending on SIGINT or SIGTERM, a panic).
func (t *terminal) run(ctx context.Context, o launch.Options) (*launch.Result, error) {
	l, err := launch.Start(ctx, o)
	if err != nil {
		if l != nil {
			res := l.Result()
			return &res, err
		}
		return nil, err
	}
	defer l.Close()
	var res *launch.Result
	err = t.whileRunning(l.Sandbox(), *o.TTY, func() error {
		var werr error
		res, werr = l.Wait(ctx)
		return werr
	})
	return res, err
}

// resizer is what follows the local terminal's size: the sandbox.
type resizer interface {
	Resize(kvm.WindowSize) error
}

// whileRunning runs wait with the local terminal raw (with -i) and its
// size followed by sb (which has the size initial), and restores the
// terminal when wait returns or panics.
func (t *terminal) whileRunning(sb resizer, initial kvm.WindowSize, wait func() error) error {
	if t.raw != nil {
		fd := int(t.raw.Fd())
		if state, err := term.MakeRaw(fd); err != nil {
			fmt.Fprintf(t.warn, "launcher: warning: -t: the terminal stays as it is (raw mode: %v)\n", err)
		} else {
			defer term.Restore(fd, state)
		}
	}
	if t.size != nil {
		stop := t.followSize(sb, initial)
		defer stop()
	}
	return wait()
}

// followSize sends the local terminal's size to sb whenever it changes
// (SIGWINCH), starting with a check of the size now: it may have changed
// since the sandbox was configured with initial. The returned stop ends
// it.
func (t *terminal) followSize(sb resizer, initial kvm.WindowSize) (stop func()) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	winch <- syscall.SIGWINCH
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		last := initial
		for {
			select {
			case <-winch:
				if ws := t.windowSize(); ws != last {
					if err := sb.Resize(ws); err == nil {
						last = ws
					}
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(done)
		<-finished
	}
}
