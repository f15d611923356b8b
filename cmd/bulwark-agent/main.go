// Command bulwark-agent is the guest agent: /init inside a Bulwark sandbox
// VM. Build it static: CGO_ENABLED=0 go build -o bin/bulwark-agent ./cmd/bulwark-agent
package main

import (
	"fmt"
	"os"

	"github.com/bulwark-project/bulwark/internal/version"
	"github.com/bulwark-project/bulwark/kvm/agent"
)

func main() {
	// Outside a VM (not PID 1), '--version' says which build this is; as
	// /init it takes no arguments (the kernel may pass some).
	if os.Getpid() != 1 && len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version" || os.Args[1] == "version") {
		fmt.Println(version.String("bulwark-agent"))
		return
	}
	agent.Main()
}
