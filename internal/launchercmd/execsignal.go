package launchercmd

import (
	"fmt"
	"os"
	"syscall"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

// execSignals are the signals launcher exec forwards to its command:
// Ctrl-C (SIGINT), SIGTERM, a closed terminal (SIGHUP) and Ctrl-\
// (SIGQUIT). With -i -t the local terminal is raw: Ctrl-C is typed into
// the command's terminal instead, whose line discipline makes it the
// signal there.
var execSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// execGiveUp is how many SIGINT or SIGTERM make launcher exec stop
// waiting for a command that does not end on them (it runs on).
const execGiveUp = 3

// forwardSignals sends each signal sigs delivers to the exec'd command
// (ExecInput.signal) until ended is closed. The execGiveUp-th SIGINT or
// SIGTERM, or a signal that cannot be sent, ends the wait instead
// (cancel): the launcher then exits 130 and the command runs on in the
// sandbox.
func forwardSignals(env *cli.Env, out *execSender, sigs <-chan os.Signal, cancel func(), ended <-chan struct{}) {
	interrupts := 0
	for {
		select {
		case <-ended:
			return
		case sig := <-sigs:
			n, ok := sig.(syscall.Signal)
			if !ok {
				continue
			}
			if n == syscall.SIGINT || n == syscall.SIGTERM {
				interrupts++
			}
			if interrupts >= execGiveUp {
				fmt.Fprintf(env.Stderr, "launcher: exec: %s again: no longer waiting for the command (it runs on in the sandbox)\n", sig)
				cancel()
				return
			}
			if err := out.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Signal{Signal: uint32(n)}}); err != nil {
				cancel()
				return
			}
		}
	}
}
