// Command containerd-shim-bulwark-v2 is containerd's runtime
// io.containerd.bulwark.v2: each container runs as a Bulwark sandbox
// launched through the host service. See docs/containerd.md.
package main

import (
	"github.com/bulwark-project/bulwark/internal/shim"
	containerdshim "github.com/containerd/containerd/runtime/v2/shim"
)

func main() {
	containerdshim.Run(shim.RuntimeName, shim.New)
}
