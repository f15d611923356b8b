package launchercmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/signing"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runDetached is 'launcher run -d': the launch happens in the launcher
// daemon, which keeps the sandbox; its progress is printed here and the
// sandbox id last, on stdout, once the workload runs.
func runDetached(ctx context.Context, env *cli.Env, req *bulwarkv1.RunRequest, signers []string, socket, state, pullRef string, pf pullFlags) error {
	// The daemon does not share our working directory.
	paths := []*string{&req.Kernel, &req.Initrd}
	if pullRef == "" {
		paths = append(paths, &req.Image)
	}
	for _, p := range paths {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
		}
	}
	for _, path := range signers {
		b, err := signing.ReadLimited(path, signing.MaxKeyFileSize)
		if err != nil {
			return fmt.Errorf("--signer: %w", err)
		}
		req.Signers = append(req.Signers, b)
	}
	c, err := dialDaemon(env, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if pullRef != "" {
		// Pulled here, kept until the daemon has built the image's disk
		// (the stream's end).
		keys, err := launch.LoadSigners(signers)
		if err != nil {
			return fmt.Errorf("--signer: %w", err)
		}
		fmt.Fprintf(env.Stderr, "launcher: pulling %s with its cosign signature\n", pullRef)
		dir, cleanup, err := pullForRun(ctx, env, state, pullRef, pf, keys)
		if err != nil {
			return &cli.ExitError{Code: ExitLaunchFailed, Err: fmt.Errorf("image %s: %w", pullRef, err)}
		}
		defer cleanup()
		req.Image = dir
	}
	stream, err := c.Run(ctx, req)
	if err != nil {
		return detachedError(ctx, err)
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return &cli.ExitError{Code: ExitLaunchFailed, Err: errors.New("the launcher daemon ended the launch without a sandbox (see its log)")}
		}
		if err != nil {
			return detachedError(ctx, err)
		}
		switch e := ev.GetEvent().(type) {
		case *bulwarkv1.RunEvent_Progress:
			if isTerminal(env.Stderr) {
				fmt.Fprintf(env.Stderr, "launcher: %s\n", e.Progress)
			}
		case *bulwarkv1.RunEvent_Warning:
			fmt.Fprintf(env.Stderr, "launcher: %s\n", e.Warning)
		case *bulwarkv1.RunEvent_Started:
			fmt.Fprintln(env.Stdout, e.Started.GetId())
			return nil
		}
	}
}

// detachedError is a failed detached launch: 125 as for 'launcher run',
// 130 when interrupted; a bad request is a usage error.
func detachedError(ctx context.Context, err error) error {
	st, _ := status.FromError(err)
	switch {
	case ctx.Err() != nil:
		return &cli.ExitError{Code: ExitInterrupted, Err: errors.New(st.Message())}
	case st.Code() == codes.InvalidArgument:
		return cli.Usagef("%s", st.Message())
	case st.Code() == codes.Unavailable:
		return &cli.ExitError{Code: ExitLaunchFailed, Err: fmt.Errorf("the launcher daemon is not answering (%s): is it running?", st.Message())}
	}
	return &cli.ExitError{Code: ExitLaunchFailed, Err: errors.New(st.Message())}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
