// Command attestd is a thin entry point: everything lives in internal/attestdcmd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulwark-project/bulwark/internal/attestdcmd"
	"github.com/bulwark-project/bulwark/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := attestdcmd.Program.Main(ctx, &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin}, os.Args[1:])
	stop()
	os.Exit(code)
}
