package attestdcmd

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/cli"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// ctlCommand is one "attestd ctl" action (files ctl_*.go register them).
type ctlCommand struct {
	name    string // "secret put"
	usage   string
	summary string
	// parse defines and parses the action's flags and arguments and
	// returns what to run. It runs before anything is dialled, so --help
	// and usage mistakes need neither a server nor certificates.
	parse func(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error)
}

// ctlAction runs a parsed action against attestd.
type ctlAction func(ctx context.Context, c *ctlConn) error

// ctlConn is the admin connection and ctl's per-call --timeout.
type ctlConn struct {
	admin   bulwarkv1.AdminClient
	timeout time.Duration
	now     func() time.Time // the clock deadlines count from; nil: time.Now
}

// call makes one RPC with its own deadline: --timeout applies to each
// call (each page of 'audit --all'), not to the whole command.
func call[Req, Resp any](ctx context.Context, c *ctlConn, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	cctx, cancel := context.WithDeadline(ctx, now().Add(c.timeout))
	defer cancel()
	return rpc(cctx, req)
}

// ctlActions is attestd ctl's action table, in the order --help lists them.
var ctlActions = []*ctlCommand{
	ctlSecretPutAction, ctlSecretListAction, ctlSecretRmAction,
	ctlNodesAction, ctlNodesRmAction, ctlNodesRevokeAction,
	ctlSandboxesAction,
	ctlAuditAction, ctlAuditVerifyAction,
	ctlPoliciesAction, ctlPoliciesReloadAction,
	ctlReplicaAction, ctlReplicaApproveAction, ctlReplicaDenyAction,
}

// ctlCommands indexes ctlActions by name ("secret put").
var ctlCommands = func() map[string]*ctlCommand {
	m := make(map[string]*ctlCommand, len(ctlActions))
	for _, c := range ctlActions {
		if _, dup := m[c.name]; dup {
			panic("attestd ctl: duplicate action " + c.name)
		}
		m[c.name] = c
	}
	return m
}()

var ctlRootCommand = &cli.Command{
	Name:    "ctl",
	Summary: "admin client: secrets, nodes, audit log, policies (needs an admin certificate)",
	Usage:   "--addr HOST:PORT --ca CA --cert CERT --key KEY ACTION [args]   (ACTION: " + ctlActionList() + ")",
	Run:     runCtl,
}

// ctlActionList is the actions in short, grouped by their first word:
// "secret put|list|rm, nodes [rm|revoke], ...".
func ctlActionList() string {
	var groups []string
	subs := map[string][]string{}
	plain := map[string]bool{}
	for _, c := range ctlActions {
		first, sub, _ := strings.Cut(c.name, " ")
		if _, seen := subs[first]; !seen {
			groups = append(groups, first)
			subs[first] = nil
		}
		if sub == "" {
			plain[first] = true
		} else {
			subs[first] = append(subs[first], sub)
		}
	}
	out := make([]string, len(groups))
	for i, g := range groups {
		switch {
		case len(subs[g]) == 0:
			out[i] = g
		case plain[g]:
			out[i] = g + " [" + strings.Join(subs[g], "|") + "]"
		default:
			out[i] = g + " " + strings.Join(subs[g], "|")
		}
	}
	return strings.Join(out, ", ")
}

func runCtl(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	// Each connection flag defaults to its environment variable, so a
	// shell (or a profile) sets them once: export ATTESTD_ADDR=... and so on.
	envOr := func(name, def string) string {
		if v := env.Getenv(name); v != "" {
			return v
		}
		return def
	}
	addr := fs.String("addr", envOr("ATTESTD_ADDR", "localhost:8443"), "attestd `HOST:PORT` (env ATTESTD_ADDR)")
	ca := fs.String("ca", envOr("ATTESTD_CA", ""), "attestd's CA certificate `FILE` (ca.crt; env ATTESTD_CA)")
	cert := fs.String("cert", envOr("ATTESTD_CERT", ""), "admin client certificate `FILE` (attestd admin-cert; env ATTESTD_CERT)")
	key := fs.String("key", envOr("ATTESTD_KEY", ""), "admin client key `FILE` (env ATTESTD_KEY)")
	serverName := fs.String("server-name", "", "name to verify in the server certificate (default: the host of --addr)")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout of each call to attestd (each page of 'audit --all')")
	baseUsage := fs.Usage
	fs.Usage = func() {
		baseUsage()
		w := fs.Output()
		fmt.Fprintln(w, "\nActions:")
		names := make([]string, 0, len(ctlCommands))
		for n := range ctlCommands {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "  %-16s %s\n      attestd ctl [flags] %s %s\n", n, ctlCommands[n].summary, n, ctlCommands[n].usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if host, port, err := net.SplitHostPort(*addr); err != nil || host == "" || port == "" {
		return cli.Usagef("--addr %q: want HOST:PORT, e.g. attestd.example.com:8443 or 127.0.0.1:8443", *addr)
	}
	if *timeout <= 0 {
		return cli.Usagef("--timeout %v: want a positive duration, e.g. --timeout 30s", *timeout)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return cli.Usagef("no action given")
	}
	var cmd *ctlCommand
	if len(rest) >= 2 {
		cmd = ctlCommands[rest[0]+" "+rest[1]]
		if cmd != nil {
			rest = rest[2:]
		}
	}
	if cmd == nil {
		cmd = ctlCommands[rest[0]]
		if cmd == nil {
			return cli.Usagef("unknown action %q (actions: %s)", strings.Join(rest[:min(2, len(rest))], " "), ctlActionList())
		}
		rest = rest[1:]
	}
	sub := flag.NewFlagSet("attestd ctl "+cmd.name, flag.ContinueOnError)
	// The flag package's output is held until we know whether the mistake
	// is a ctl flag after the action; then it goes where attestd's CLI
	// puts its own flag output: help that was asked for to standard
	// output, usage after a mistake to standard error.
	var subOut bytes.Buffer
	sub.SetOutput(&subOut)
	defer func() { fs.Output().Write(subOut.Bytes()) }()
	sub.Usage = func() {
		fmt.Fprintf(sub.Output(), "Usage: attestd ctl [--addr ... --ca ... --cert ... --key ...] %s %s\n\n%s\n", cmd.name, cmd.usage, cmd.summary)
		sub.PrintDefaults()
	}
	// The action's flags and arguments first: --help and usage mistakes
	// need no connection (and no --ca).
	act, err := cmd.parse(env, sub, rest)
	if err != nil {
		if hint := ctlFlagAfterAction(fs, cmd.name, rest, err); hint != "" {
			subOut.Reset()
			return &cli.UsageError{Msg: hint, Fix: true}
		}
		return err // a refused flag is told apart by cli.Program.Main
	}
	c, err := attestclient.Dial(attestclient.Options{Addr: *addr, CAFile: *ca, CertFile: *cert, KeyFile: *key, ServerName: *serverName})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := act(ctx, &ctlConn{admin: c.Admin, timeout: *timeout}); err != nil {
		if st, ok := status.FromError(err); ok {
			return fmt.Errorf("%s: %s", st.Code(), st.Message())
		}
		return err
	}
	return nil
}

// ctlFlagAfterAction explains an action's refusal of a flag that is one of
// ctl's own (--addr, --ca, ...), given after the action where the action's
// flag set does not know it, and shows the command with it moved before
// the action. It returns "" for any other error.
func ctlFlagAfterAction(fs *flag.FlagSet, action string, rest []string, err error) string {
	const undefined = "flag provided but not defined: -"
	msg := err.Error()
	if !strings.HasPrefix(msg, undefined) {
		return ""
	}
	name := strings.TrimPrefix(msg, undefined)
	f := fs.Lookup(name)
	if f == nil {
		return ""
	}
	var moved, kept []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			kept = append(kept, rest[i:]...)
			break
		}
		n, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && n == name {
			moved = append(moved, a)
			if !hasValue && i+1 < len(rest) {
				moved = append(moved, rest[i+1])
				i++
			}
			continue
		}
		kept = append(kept, a)
	}
	return fmt.Sprintf("--%s is a flag of attestd ctl, not of its action %q: put it before the action: attestd ctl %s %s",
		name, action, strings.Join(moved, " "), strings.Join(append(strings.Fields(action), kept...), " "))
}

// jsonFlag is the --json flag of the list actions.
func jsonFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("json", false, "print attestd's answer as JSON (the API's field names, docs/api.md) instead of a table")
}

// printJSON writes m as JSON with the proto field names, and a newline.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// readSecret reads a secret value from a file ("-": stdin), with a limit.
func readSecret(r io.Reader, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("secret is larger than %d bytes", limit)
	}
	return b, nil
}
