package launchercmd

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
)

// maxEnvFile bounds one --env-file.
const maxEnvFile = 1 << 20

// workloadFlags are run's docker-like workload inputs.
type workloadFlags struct {
	env, envFiles, ports cli.Strings
	volumes, tmpfs       cli.Strings
	scratch              cli.Strings
	workdir, user, net   *string
	interactive, tty     *bool
}

func addWorkloadFlags(fs *flag.FlagSet) *workloadFlags {
	w := &workloadFlags{}
	for _, n := range []string{"e", "env"} {
		fs.Var(&w.env, n, "set an environment variable over the image's: KEY=VALUE, or KEY to pass the launcher's own value (repeatable; -e and --env are the same)")
	}
	fs.Var(&w.envFiles, "env-file", "read environment variables from `FILE`: KEY=VALUE lines, # comments (repeatable; -e wins over it)")
	w.workdir = fs.String("w", "", "working directory inside the sandbox, replacing the image's (absolute; made when missing)")
	fs.StringVar(w.workdir, "workdir", "", "same as -w")
	w.user = fs.String("user", "", "user to run the workload as, replacing the image's: UID[:GID] or NAME[:GROUP] from the image's /etc/passwd and /etc/group")
	fs.StringVar(w.user, "u", "", "same as --user")
	w.net = fs.String("net", launch.NetworkNone, "guest network: none (no network device) or user (QEMU user-mode networking, with -p)")
	for _, n := range []string{"p", "publish"} {
		fs.Var(&w.ports, n, "forward a host TCP port with --net user: [[HOSTIP:]HOSTPORT:]GUESTPORT[/tcp]; HOSTIP defaults to 0.0.0.0, HOSTPORT 0 or left out picks a free one (repeatable)")
	}
	// docker's -v: here -v is run's verbose switch, so --volume only.
	fs.Var(&w.volumes, "volume", "mount a host directory read-only: HOSTDIR:PATH:ro (docker's -v); its erofs image is measured into the launch event by digest (repeatable, at most 8)")
	w.interactive = fs.Bool("i", false, "forward the launcher's stdin to the workload until its end (docker run -i); without it the workload's stdin is /dev/null")
	w.tty = fs.Bool("t", false, "give the workload a terminal (docker run -t): its stdin, stdout and stderr are a pseudo-terminal in the guest, stderr merged into stdout, sized as the launcher's terminal and resized with it; with -i, stdin must be a terminal, put in raw mode while the workload runs")
	fs.Var(&w.tmpfs, "tmpfs", "mount writable scratch (tmpfs, guest memory): PATH[:size=N] with k, m, g suffixes (repeatable, at most 8)")
	fs.Var(&w.scratch, "scratch", "mount a writable scratch disk (ext4 on a sparse host file, empty at start, deleted with the sandbox): PATH[:size=N], N 16m..1024g with k, m, g, t suffixes, default 1g (repeatable, at most 4)")
	return w
}

// apply puts the flags into o and validates them (launch.Options.ValidateWorkload):
// a bad value is a usage error, before anything is opened or booted.
func (w *workloadFlags) apply(o *launch.Options, stdin io.Reader, getenv func(string) string) error {
	if *w.interactive {
		if stdin == nil {
			stdin = os.Stdin
		}
		o.Stdin = stdin
	}
	if *w.tty {
		// What is typed goes to the guest's terminal, which echoes it and
		// has no end of input: a pipe or file is input for -i alone.
		if *w.interactive && termFile(stdin) == nil {
			return cli.Usagef("-t with -i: stdin is not a terminal (drop -t to pipe input into the workload)")
		}
		o.TTY = &kvm.WindowSize{Rows: defaultRows, Cols: defaultCols} // run sets the terminal's own
	}
	var env []string
	for _, f := range w.envFiles {
		entries, err := readEnvFile(f, getenv)
		if err != nil {
			return cli.Usagef("--env-file %s", err)
		}
		env = append(env, entries...)
	}
	for _, e := range w.env {
		if kv, ok := envEntry(e, getenv); ok {
			env = append(env, kv)
		}
	}
	o.Env, o.WorkingDir, o.User, o.Network, o.Ports = env, *w.workdir, *w.user, *w.net, append([]string(nil), w.ports...)
	o.Volumes, o.Tmpfs = append([]string(nil), w.volumes...), append([]string(nil), w.tmpfs...)
	o.Scratch = append([]string(nil), w.scratch...)
	if err := o.ValidateWorkload(); err != nil {
		return cli.Usagef("%v", err)
	}
	return nil
}

// envEntry turns "KEY=VALUE" into itself and "KEY" into KEY=its value in
// the launcher's environment; an unset (or empty) KEY is left out, as
// docker run leaves it out.
func envEntry(e string, getenv func(string) string) (string, bool) {
	if strings.Contains(e, "=") {
		return e, true
	}
	v := getenv(e)
	if v == "" {
		return "", false
	}
	return e + "=" + v, true
}

// readEnvFile reads a docker-style env file: one KEY=VALUE (or KEY, taken
// from the launcher's environment) per line, values verbatim (no quotes
// removed), blank lines and lines starting with # ignored. Errors name
// PATH:LINE.
func readEnvFile(path string, getenv func(string) string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEnvFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxEnvFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxEnvFile)
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), maxEnvFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if !utf8.ValidString(line) || strings.IndexByte(line, 0) >= 0 {
			return nil, fmt.Errorf("%s:%d: not UTF-8 text without NUL bytes", path, n)
		}
		if t := strings.TrimLeft(line, " \t"); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, _, _ := strings.Cut(line, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE, got %q", path, n, trunc(line, 64))
		}
		if kv, ok := envEntry(line, getenv); ok {
			env = append(env, kv)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return env, nil
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
