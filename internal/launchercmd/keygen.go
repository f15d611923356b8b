package launchercmd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/signing"
	"golang.org/x/term"
)

var keygenCommand = &cli.Command{
	Name:    "keygen",
	Summary: "create a cosign-compatible signing key pair (cosign.key, cosign.pub), or export a TPM signing key's public half",
	Usage:   "[--output-key-prefix PREFIX] [--force] [--key tpm:[SPEC]]",
	Run:     runKeygen,
}

// passwordEnv is cosign's variable for the private key password.
const passwordEnv = "COSIGN_PASSWORD"

func runKeygen(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	prefix := fs.String("output-key-prefix", "cosign", "write PREFIX.key and PREFIX.pub")
	force := fs.Bool("force", false, "overwrite existing key files")
	keyRef := fs.String("key", "", "tpm:[SPEC]: do not make a key file; write PREFIX.pub for the signing key held in that TPM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %q", fs.Args())
	}
	if *prefix == "" {
		return cli.Usagef("--output-key-prefix must not be empty")
	}
	privPath, pubPath := *prefix+".key", *prefix+".pub"

	if *keyRef != "" {
		if !strings.HasPrefix(*keyRef, "tpm:") {
			return cli.Usagef("--key for keygen must be tpm:[SPEC] (a key file is made without --key)")
		}
		s, err := loadSigner(ctx, *keyRef, nil)
		if err != nil {
			return fmt.Errorf("opening TPM signing key: %w", err)
		}
		defer s.Close()
		pubPEM, err := signing.MarshalPublicKey(s.Public())
		if err != nil {
			return err
		}
		if err := writeNew(pubPath, pubPEM, 0o644, *force); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "Public key of TPM signing key written to %s\nKey ID: %s\n", pubPath, s.KeyID())
		return nil
	}

	if !*force {
		for _, p := range []string{privPath, pubPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists: refusing to overwrite it (use --force, or --output-key-prefix)", p)
			}
		}
	}
	pw, err := readPassword(env, true)
	if err != nil {
		return err
	}
	if len(pw) == 0 {
		fmt.Fprintf(env.Stderr, "warning: the private key is encrypted with an EMPTY password: anyone who can read %s can sign as you\n", privPath)
	}
	privPEM, pubPEM, err := signing.GenerateKeyPair(pw)
	clear(pw)
	if err != nil {
		return err
	}
	if err := writeNew(privPath, privPEM, 0o600, *force); err != nil {
		return err
	}
	if err := writeNew(pubPath, pubPEM, 0o644, *force); err != nil {
		os.Remove(privPath) // do not leave half a key pair
		return err
	}
	pub, err := signing.LoadVerifier(pubPEM)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Private key written to %s\nPublic key written to %s\nKey ID: %s\n", privPath, pubPath, signing.KeyID(pub))
	return nil
}

// writeNew writes a file atomically with mode; it refuses to replace an
// existing file unless force.
func writeNew(path string, b []byte, mode os.FileMode, force bool) error {
	if force {
		return fsutil.WriteFileAtomic(path, b, mode)
	}
	err := fsutil.WriteFileNew(path, b, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists: refusing to overwrite it (use --force)", path)
	}
	return err
}

// readPassword returns the private key password, as cosign finds it: the
// COSIGN_PASSWORD environment variable when set (an empty value means an
// empty password), else a prompt on the terminal (twice when confirm).
// Without either it fails rather than guess.
func readPassword(env *cli.Env, confirm bool) ([]byte, error) {
	if v := env.Getenv(passwordEnv); v != "" {
		return []byte(v), nil
	}
	// Set but empty: cli.Env has no LookupEnv, so ask the process.
	if _, set := os.LookupEnv(passwordEnv); set {
		return []byte{}, nil
	}
	f, ok := env.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, fmt.Errorf("no password for the private key: set %s (it may be empty) or run on a terminal", passwordEnv)
	}
	fmt.Fprint(env.Stderr, "Enter password for private key: ")
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(env.Stderr)
	if err != nil {
		return nil, fmt.Errorf("reading password: %w", err)
	}
	if confirm {
		fmt.Fprint(env.Stderr, "Enter password for private key again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return nil, fmt.Errorf("reading password: %w", err)
		}
		same := bytes.Equal(pw, again)
		clear(again)
		if !same {
			clear(pw)
			return nil, errors.New("the passwords do not match")
		}
	}
	return pw, nil
}

// passFunc adapts readPassword to signing.LoadSigner.
func passFunc(env *cli.Env) func() ([]byte, error) {
	return func() ([]byte, error) { return readPassword(env, false) }
}
