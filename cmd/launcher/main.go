// Command launcher is a thin entry point: everything lives in internal/launchercmd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launchercmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := launchercmd.Program.Main(ctx, &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin}, os.Args[1:])
	stop()
	os.Exit(code)
}
