// Command bulwark-load is Bulwark's fleet load generator: it enrolls N
// simulated hosts with a running attestd and drives attestations against
// it. Everything lives in internal/load; see docs/load.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulwark-project/bulwark/internal/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := load.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
