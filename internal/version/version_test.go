package version

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
)

func TestFormat(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d"}}
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build info", nil, false, "devel"},
		{"module version", &debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}, Settings: rev}, true, "v0.3.0"},
		{"devel with a revision", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: rev}, true, "devel+1a2b3c4d5e6f"},
		{"modified tree", &debug.BuildInfo{Settings: append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"})}, true, "devel+1a2b3c4d5e6f-dirty"},
		{"no revision", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "devel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := format(tc.bi, tc.ok); got != tc.want {
				t.Fatalf("%q, want %q", got, tc.want)
			}
		})
	}
	if s := String("launcher"); !strings.HasPrefix(s, "launcher ") || !strings.HasSuffix(s, " ("+runtime.Version()+")") {
		t.Fatalf("String: %q", s)
	}
}

// Every binary answers --version (and "version") with its name, a version
// and the Go version, exit 0: built for real, from ./cmd (once per test
// process, whatever -count).
func TestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	dir, err := buildBinaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"launcher", "attestd", "bulwark-load", "bulwark-agent"} {
		for _, arg := range []string{"--version", "version"} {
			out, err := exec.Command(filepath.Join(dir, bin), arg).CombinedOutput()
			s := strings.TrimSpace(string(out))
			if err != nil || !strings.HasPrefix(s, bin+" ") || !strings.HasSuffix(s, "("+runtime.Version()+")") || strings.Contains(s, "\n") {
				t.Errorf("%s %s: %v: %q", bin, arg, err, s)
			}
		}
	}
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func buildBinaries() (string, error) {
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "bulwark-version-"); binErr != nil {
			return
		}
		build := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
		build.Dir = "../.."
		if out, err := build.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	return binDir, binErr
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
