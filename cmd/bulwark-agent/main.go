// Command bulwark-agent is the guest agent: /init inside a Bulwark sandbox
// VM. Build it static: CGO_ENABLED=0 go build -o bin/bulwark-agent ./cmd/bulwark-agent
package main

import "github.com/bulwark-project/bulwark/kvm/agent"

func main() { agent.Main() }
