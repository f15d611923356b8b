package launchercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/hostd"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The host service's clients: ps, logs, stop, inspect, rm (and run -d in
// run.go). Each finds the daemon's socket as the daemon does.

var psCommand = &cli.Command{
	Name:    "ps",
	Summary: "list the sandboxes of this host's launcher daemon",
	Usage:   "[-a] [-q | --json] [--socket PATH]",
	Run:     runPs,
}

var logsCommand = &cli.Command{
	Name:    "logs",
	Summary: "print a sandbox's workload output (stdout and stderr)",
	Usage:   "[-f] [--socket PATH] ID",
	Run:     runLogs,
}

var stopCommand = &cli.Command{
	Name:    "stop",
	Summary: "stop a sandbox's workload: SIGTERM, then SIGKILL after --time",
	Usage:   "[--time 10s] [--socket PATH] ID...",
	Run:     runStop,
}

var inspectCommand = &cli.Command{
	Name:    "inspect",
	Summary: "describe a sandbox as JSON: image, policy, attestation, status, exit code",
	Usage:   "[--socket PATH] ID",
	Run:     runInspect,
}

var execCommand = &cli.Command{
	Name:    "exec",
	Summary: "run a command in a running sandbox, beside its workload (its root, user and environment); -i: with stdin, -t: on a terminal; Ctrl-C, SIGTERM, SIGHUP and SIGQUIT go to the command",
	Usage:   "[-i] [-t] [--socket PATH] ID [--] CMD [ARG...]",
	Run:     runExec,
}

var rmCommand = &cli.Command{
	Name:    "rm",
	Summary: "forget ended sandboxes and delete their logs",
	Usage:   "[-f] [--socket PATH] ID...",
	Run:     runRm,
}

// socketFlag is --socket, shared by the daemon's clients.
func socketFlag(fs *flag.FlagSet, env *cli.Env) *string {
	return fs.String("socket", env.Getenv("BULWARK_SOCKET"), "the launcher daemon's socket (env BULWARK_SOCKET; default launcher.sock in the state directory)")
}

// dialDaemon connects to the daemon at socket (default: the state
// directory's).
func dialDaemon(env *cli.Env, socket string) (*hostd.Client, error) {
	if socket == "" {
		dir, err := statedir.Dir(env.Getenv)
		if err != nil {
			return nil, err
		}
		socket = hostd.DefaultSocket(dir)
	}
	return hostd.Dial(socket)
}

// daemonError turns a gRPC error into its message (the daemon's messages
// say what to do).
func daemonError(err error) error {
	if st, ok := status.FromError(err); ok {
		return errors.New(st.Message())
	}
	return err
}

func runPs(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	all := fs.Bool("a", false, "ended sandboxes too")
	asJSON := fs.Bool("json", false, "print the sandboxes as a JSON array")
	quiet := fs.Bool("q", false, "print only the full sandbox ids, one per line (e.g. launcher stop $(launcher ps -q))")
	socket := socketFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("ps takes no arguments")
	}
	c, err := dialDaemon(env, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.ListSandboxes(ctx, &bulwarkv1.ListSandboxesRequest{All: *all})
	if err != nil {
		return daemonError(err)
	}
	if *quiet {
		for _, sb := range resp.GetSandboxes() {
			fmt.Fprintln(env.Stdout, sb.GetId())
		}
		return nil
	}
	if *asJSON {
		out := make([]sandboxJSON, 0, len(resp.GetSandboxes()))
		for _, sb := range resp.GetSandboxes() {
			out = append(out, toJSON(sb))
		}
		return printJSON(env, out)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SANDBOX\tSTATUS\tIMAGE\tPOLICY\tCREATED\tSTART\tTEMPLATE\tATTESTED\tPORTS")
	for _, sb := range resp.GetSandboxes() {
		st := sb.GetStatus()
		if st == hostd.StatusExited {
			st = fmt.Sprintf("exited (%d)", sb.GetExitCode())
		}
		start := "-"
		if sb.GetStartMs() > 0 {
			start = fmt.Sprintf("%d ms", sb.GetStartMs())
		}
		tpl := sb.GetTemplate()
		if tpl == "" {
			tpl = "-"
		}
		ports := strings.Join(sb.GetPorts(), ",")
		if ports == "" {
			ports = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%s\t%s\t%s\t%s\n", sb.GetId()[:12], st, shortPath(sb.GetImage()), sb.GetPolicy(),
			time.Since(time.UnixMilli(sb.GetCreatedUnixMs())).Round(time.Second), start, tpl, attested(sb), ports)
	}
	return tw.Flush()
}

// sandboxJSON is how ps --json and inspect print a sandbox. Field names
// are stable.
type sandboxJSON struct {
	ID             string   `json:"id"`
	Status         string   `json:"status"`
	Image          string   `json:"image"`
	ImageDigest    string   `json:"image_digest,omitempty"`
	Policy         string   `json:"policy"`
	Args           []string `json:"args"`
	Accelerator    string   `json:"accelerator,omitempty"`
	Template       string   `json:"template,omitempty"`
	AttestationID  string   `json:"attestation_id,omitempty"`
	Secrets        []string `json:"secrets"`
	Created        string   `json:"created"`
	Started        string   `json:"started,omitempty"`
	Ended          string   `json:"ended,omitempty"`
	ExitCode       int32    `json:"exit_code"`
	Error          string   `json:"error,omitempty"`
	StartMillis    int64    `json:"start_ms,omitempty"`
	QEMUPID        int32    `json:"qemu_pid,omitempty"`
	QEMUPeakRSSMiB float64  `json:"qemu_peak_rss_mib,omitempty"`
	Network        string   `json:"network,omitempty"`
	Ports          []string `json:"ports,omitempty"`
	LastVerdict    string   `json:"last_verdict,omitempty"`
	LastVerdictAt  string   `json:"last_verdict_at,omitempty"`
	Revoked        string   `json:"revoked,omitempty"`
}

func toJSON(sb *bulwarkv1.Sandbox) sandboxJSON {
	ts := func(ms int64) string {
		if ms == 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
	}
	j := sandboxJSON{
		ID: sb.GetId(), Status: sb.GetStatus(), Image: sb.GetImage(), ImageDigest: sb.GetImageDigest(), Policy: sb.GetPolicy(),
		Args: sb.GetArgs(), Accelerator: sb.GetAccel(), Template: sb.GetTemplate(), AttestationID: sb.GetAttestationId(),
		Secrets: sb.GetSecrets(), Created: ts(sb.GetCreatedUnixMs()), Started: ts(sb.GetStartedUnixMs()), Ended: ts(sb.GetEndedUnixMs()),
		ExitCode: sb.GetExitCode(), Error: sb.GetError(), StartMillis: sb.GetStartMs(), QEMUPID: sb.GetQemuPid(),
		QEMUPeakRSSMiB: mib(sb.GetQemuPeakRssKib()), Network: sb.GetNetwork(), Ports: sb.GetPorts(),
		LastVerdict: sb.GetLastVerdict(), LastVerdictAt: ts(sb.GetLastVerdictUnixMs()),
		Revoked: sb.GetRevoked(),
	}
	if j.Args == nil {
		j.Args = []string{}
	}
	if j.Secrets == nil {
		j.Secrets = []string{}
	}
	return j
}

// attested says what the daemon last heard from attestd about a sandbox:
// "revoked", or its latest re-attestation's verdict and age ("-": none).
func attested(sb *bulwarkv1.Sandbox) string {
	switch {
	case sb.GetRevoked() != "":
		return "revoked"
	case sb.GetLastVerdictUnixMs() == 0:
		return "-"
	}
	return fmt.Sprintf("%s %s ago", sb.GetLastVerdict(), time.Since(time.UnixMilli(sb.GetLastVerdictUnixMs())).Round(time.Second))
}

// shortPath keeps the end of a long path for a table.
func shortPath(p string) string {
	if len(p) <= 40 {
		return p
	}
	return "..." + p[len(p)-37:]
}

// oneSandbox parses a command's flags that takes one sandbox id and
// connects to the daemon.
func oneSandbox(env *cli.Env, fs *flag.FlagSet, args []string, cmd string, socket *string) (*hostd.Client, string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	if fs.NArg() != 1 {
		return nil, "", cli.Usagef("%s takes one sandbox id (from 'launcher ps'), got %d arguments", cmd, fs.NArg())
	}
	c, err := dialDaemon(env, *socket)
	return c, fs.Arg(0), err
}

func runLogs(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	follow := fs.Bool("f", false, "follow: keep printing output until the sandbox ends")
	c, id, err := oneSandbox(env, fs, args, "logs", socketFlag(fs, env))
	if err != nil {
		return err
	}
	defer c.Close()
	stream, err := c.Logs(ctx, &bulwarkv1.LogsRequest{Id: id, Follow: *follow})
	if err != nil {
		return daemonError(err)
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil { // Ctrl-C while following
				return &cli.ExitError{Code: ExitInterrupted}
			}
			return daemonError(err)
		}
		w := env.Stdout
		if chunk.GetStream() == bulwarkv1.LogChunk_STREAM_STDERR {
			w = env.Stderr
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return err
		}
	}
}

func runStop(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	grace := fs.Duration("time", 10*time.Second, "how long the workload has to exit after SIGTERM before it is killed")
	socket := socketFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("stop takes one or more sandbox ids (from 'launcher ps')")
	}
	if *grace <= 0 || *grace > hostd.MaxStopGraceSeconds*time.Second {
		return cli.Usagef("--time %v: want a positive duration up to %ds, e.g. 10s", *grace, hostd.MaxStopGraceSeconds)
	}
	c, err := dialDaemon(env, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	var failed []string
	for _, id := range fs.Args() {
		sb, err := c.StopSandbox(ctx, &bulwarkv1.StopSandboxRequest{Id: id, GraceSeconds: uint32((*grace + time.Second - 1) / time.Second)})
		if err != nil {
			fmt.Fprintf(env.Stderr, "launcher: stop %s: %v\n", id, daemonError(err))
			failed = append(failed, id)
			continue
		}
		fmt.Fprintf(env.Stdout, "%s %s (exit code %d)\n", sb.GetId(), sb.GetStatus(), sb.GetExitCode())
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not stop %s", strings.Join(failed, ", "))
	}
	return nil
}

func runInspect(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	c, id, err := oneSandbox(env, fs, args, "inspect", socketFlag(fs, env))
	if err != nil {
		return err
	}
	defer c.Close()
	sb, err := c.InspectSandbox(ctx, &bulwarkv1.InspectSandboxRequest{Id: id})
	if err != nil {
		return daemonError(err)
	}
	return printJSON(env, toJSON(sb))
}

func runRm(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	force := fs.Bool("f", false, "kill and remove running sandboxes too")
	socket := socketFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("rm takes one or more sandbox ids (from 'launcher ps -a')")
	}
	c, err := dialDaemon(env, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	var failed []string
	for _, id := range fs.Args() {
		resp, err := c.RemoveSandbox(ctx, &bulwarkv1.RemoveSandboxRequest{Id: id, Force: *force})
		if err != nil {
			fmt.Fprintf(env.Stderr, "launcher: rm %s: %v\n", id, daemonError(err))
			failed = append(failed, id)
			continue
		}
		fmt.Fprintln(env.Stdout, resp.GetId())
	}
	if len(failed) > 0 {
		return fmt.Errorf("could not remove %s", strings.Join(failed, ", "))
	}
	return nil
}

func runExec(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	interactive := fs.Bool("i", false, "forward stdin to the command (until its end)")
	tty := fs.Bool("t", false, "run the command on a terminal of the local terminal's size (with -i, stdin must be a terminal, put in raw mode while it runs)")
	socket := socketFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return cli.Usagef("exec takes a sandbox id and a command: launcher exec ID [--] CMD [ARG...]")
	}
	cmd := fs.Args()[1:]
	if cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		return cli.Usagef("exec: no command after --")
	}
	// As for run: what is typed goes to the guest's terminal, which
	// echoes it and has no end of input; a pipe is input for -i alone.
	if *tty && *interactive && termFile(env.Stdin) == nil {
		return cli.Usagef("-t with -i: stdin is not a terminal (drop -t to pipe input into the command)")
	}
	c, err := dialDaemon(env, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	req := &bulwarkv1.ExecRequest{Id: fs.Arg(0), Args: cmd}
	return execInteractive(ctx, env, c, req, *interactive, *tty)
}

// execInteractive runs an exec through ExecInteractive, whatever its
// flags: -i forwards stdin until its end; -t runs the command on a
// terminal that follows the local one's size, the local terminal raw
// (-i -t) until the exec ends, however it ends. The signals the launcher
// gets (forwardSignals) go to the command, whose exit code is then the
// launcher's: an interrupt does not leave the command running unseen.
func execInteractive(ctx context.Context, env *cli.Env, c *hostd.Client, req *bulwarkv1.ExecRequest, interactive, tty bool) error {
	// The command's signals are taken before the call starts, and the
	// call is not ended by the interrupt that ends ctx: it is forwarded.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, execSignals...)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stream, err := c.ExecInteractive(ctx)
	if err != nil {
		return daemonError(err)
	}
	out := &execSender{stream: stream}
	ended := make(chan struct{})
	defer close(ended)
	go forwardSignals(env, out, sigs, cancel, ended)
	start := &bulwarkv1.ExecStart{Exec: req, Stdin: interactive}
	var local *terminal
	if tty {
		var input io.Reader
		if interactive {
			input = env.Stdin
		}
		local = newTerminal(input, env.Stdin, env.Stdout, env.Stderr)
		ws := local.windowSize()
		start.Tty = &bulwarkv1.TerminalSize{Rows: uint32(ws.Rows), Cols: uint32(ws.Cols)}
	}
	if err := out.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Start{Start: start}}); err != nil {
		return daemonError(err)
	}
	if interactive {
		go func() {
			buf := make([]byte, channel.MaxStdinChunk)
			for {
				n, err := env.Stdin.Read(buf)
				if n > 0 && out.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
					return
				}
				if err != nil {
					_ = out.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_StdinClose{StdinClose: true}})
					return
				}
			}
		}()
	}
	if local == nil {
		return printExec(ctx, env, stream)
	}
	initial := kvm.WindowSize{Rows: uint16(start.Tty.Rows), Cols: uint16(start.Tty.Cols)}
	return local.whileRunning(out, initial, func() error { return printExec(ctx, env, stream) })
}

// execSender sends an interactive exec's input, one message at a time
// (stdin and resizes come from two goroutines).
type execSender struct {
	mu     sync.Mutex
	stream bulwarkv1.Host_ExecInteractiveClient
}

func (s *execSender) send(m *bulwarkv1.ExecInput) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// Resize sends the local terminal's new size (terminal.followSize).
func (s *execSender) Resize(ws kvm.WindowSize) error {
	return s.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Resize{Resize: &bulwarkv1.TerminalSize{Rows: uint32(ws.Rows), Cols: uint32(ws.Cols)}}})
}

// printExec writes an exec's output to stdout and stderr and returns its
// exit code as the launcher's.
func printExec(ctx context.Context, env *cli.Env, stream interface {
	Recv() (*bulwarkv1.ExecEvent, error)
}) error {
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the launcher daemon ended the exec without an exit code")
		}
		if err != nil {
			if ctx.Err() != nil {
				return &cli.ExitError{Code: ExitInterrupted}
			}
			if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
				return cli.Usagef("%s", st.Message())
			}
			return daemonError(err)
		}
		switch e := ev.GetEvent().(type) {
		case *bulwarkv1.ExecEvent_Output:
			w := env.Stdout
			if e.Output.GetStream() == bulwarkv1.LogChunk_STREAM_STDERR {
				w = env.Stderr
			}
			if _, err := w.Write(e.Output.GetData()); err != nil {
				return err
			}
		case *bulwarkv1.ExecEvent_ExitCode:
			if e.ExitCode != 0 {
				return &cli.ExitError{Code: int(e.ExitCode)}
			}
			return nil
		}
	}
}
