package attestd

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The integration tests run the real attestd binary, built once per test
// binary into a temporary directory (removed by TestMain).
var (
	binDir   string
	binOnce  sync.Once
	binPath  string
	binError error
)

func cleanupBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// attestdBinary builds cmd/attestd (once) and returns its path.
func attestdBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binError = os.MkdirTemp("", "attestd-bin-")
		if binError != nil {
			return
		}
		binPath = filepath.Join(binDir, "attestd")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/bulwark-project/bulwark/cmd/attestd")
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			binError = err
			binPath = string(out)
		}
	})
	if binError != nil {
		t.Fatalf("building attestd: %v\n%s", binError, binPath)
	}
	return binPath
}

// daemon is a running attestd process.
type daemon struct {
	cmd     *exec.Cmd
	addr    string
	metrics string
	mu      sync.Mutex
	stderr  bytes.Buffer
	exited  chan error
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// startDaemon runs `attestd serve ARGS...` and waits until it serves.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	bin := attestdBinary(t)
	d := &daemon{exited: make(chan error, 1)}
	d.cmd = exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, args...)...)
	pr, pw := io.Pipe()
	d.cmd.Stderr = pw
	d.cmd.Stdout = pw
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.stderr.WriteString(line + "\n")
			d.mu.Unlock()
			if a, ok := strings.CutPrefix(line, "attestd: serving on "); ok {
				d.addr = a
			}
			if a, ok := strings.CutPrefix(line, "attestd: metrics on "); ok {
				d.metrics = a
				close(ready)
			}
		}
	}()
	go func() { d.exited <- d.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	select {
	case <-ready:
	case err := <-d.exited:
		t.Fatalf("attestd exited before serving: %v\n%s", err, d.output())
	case <-time.After(60 * time.Second):
		t.Fatalf("attestd did not start serving in 60s:\n%s", d.output())
	}
	return d
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("attestd exit: %v\n%s", err, d.output())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("attestd did not stop on SIGTERM:\n%s", d.output())
	}
}

// run runs an attestd subcommand and returns its stdout, stderr and exit code.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, attestdBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}
