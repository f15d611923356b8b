// Command containerd-shim-bulwark-v2 is containerd's runtime
// io.containerd.bulwark.v2: each container runs as a Bulwark sandbox
// launched through the host service. See docs/containerd.md.
package main

import (
	"fmt"
	"os"

	"github.com/bulwark-project/bulwark/internal/shim"
	containerdshim "github.com/containerd/containerd/runtime/v2/shim"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-info" {
		if err := shim.WriteInfo(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	containerdshim.Run(shim.RuntimeName, shim.New)
}
