package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/cli"
)

var ctlSecretPutAction = &ctlCommand{name: "secret put", usage: "NAME [--from-file FILE|-] [--description TEXT]",
	summary: "store a secret in the vault (value from a file or stdin, never from the command line)", parse: ctlSecretPut}

var ctlSecretListAction = &ctlCommand{name: "secret list", usage: "[--json]", summary: "list secret names and metadata (never values)", parse: ctlSecretList}

var ctlSecretRmAction = &ctlCommand{name: "secret rm", usage: "NAME", summary: "delete a secret", parse: ctlSecretRm}

func ctlSecretPut(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	from := fs.String("from-file", "-", "read the value from `FILE` (\"-\": standard input)")
	desc := fs.String("description", "", "a description kept with the secret")
	name, _, err := oneArg(fs, args, "NAME")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		var r io.Reader = env.Stdin
		if *from != "-" {
			f, err := os.Open(*from)
			if err != nil {
				return fmt.Errorf("--from-file: %w", err)
			}
			defer f.Close()
			r = f
		}
		val, err := readSecret(r, enclave.MaxSecretSize)
		if err != nil {
			return err
		}
		defer clear(val)
		if len(val) == 0 {
			return fmt.Errorf("the secret value is empty (give --from-file FILE or pipe it on stdin)")
		}
		req := &bulwarkv1.PutSecretRequest{Name: name, Value: val}
		if *desc != "" {
			req.Metadata = map[string]string{"description": *desc}
		}
		resp, err := call(ctx, c, c.admin.PutSecret, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "stored secret %s (version %d, %d bytes)\n", name, resp.GetVersion(), len(val))
		return nil
	}, nil
}

func ctlSecretList(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	asJSON := jsonFlag(fs)
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ListSecrets, &bulwarkv1.ListSecretsRequest{})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, resp)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tSIZE\tUPDATED\tDESCRIPTION")
		for _, s := range resp.GetSecrets() {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.GetName(), s.GetVersion(), s.GetSize(), s.GetUpdatedAt().AsTime().Format("2006-01-02T15:04:05Z"), s.GetMetadata()["description"])
		}
		return tw.Flush()
	}, nil
}

func ctlSecretRm(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	name, _, err := oneArg(fs, args, "NAME")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		if _, err := call(ctx, c, c.admin.DeleteSecret, &bulwarkv1.DeleteSecretRequest{Name: name}); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "deleted secret %s\n", name)
		return nil
	}, nil
}

// oneArg parses flags around exactly one positional argument.
func oneArg(fs *flag.FlagSet, args []string, what string) (string, []string, error) {
	// Allow the positional argument before or after the flags.
	var pos string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		pos, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", nil, err
	}
	rest := fs.Args()
	if pos == "" && len(rest) > 0 {
		pos, rest = rest[0], rest[1:]
	}
	if pos == "" {
		return "", nil, cli.Usagef("missing %s", what)
	}
	if len(rest) > 0 {
		return "", nil, cli.Usagef("unexpected argument %q", rest[0])
	}
	return pos, rest, nil
}

func noArgs(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
