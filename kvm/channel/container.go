package channel

import (
	"errors"
	"fmt"
	"strings"
)

// Pod sandboxes (Start.Pod): one VM, several containers, each a process
// group the agent runs chrooted in a root of its own (docs/containerd.md,
// "One VM per pod"). Frame types 30 and up.
const (
	TypeContainerStart   Type = 30 // host: JSON ContainerStart, run a container of the pod
	TypeContainerStarted Type = 31 // guest: JSON ContainerStarted, its process exists (or why not)
	TypeContainerOut     Type = 32 // guest: ContainerOutput, raw output of a container (ContainerOutput.Encode)
	TypeContainerExit    Type = 33 // guest: JSON ContainerExit, a container's process exited
	TypeContainerKill    Type = 34 // host: JSON ContainerKill, signal a container's process group
	TypeContainerRemove  Type = 35 // host: JSON ContainerRemove, forget an ended container and free its slot
	TypeContainerRemoved Type = 36 // guest: JSON ContainerRemoved, the answer (or why not)
)

// Bounds of a pod's containers.
const (
	// MaxContainers bounds the containers of one pod over its life: the
	// launch's own image (slot 0) and one per pre-attached image slot.
	MaxContainers = 16
	// MaxContainerArgs and MaxContainerArgsBytes bound a container's
	// command line.
	MaxContainerArgs      = 256
	MaxContainerArgsBytes = 64 << 10
)

// ContainerSlotSerial is the virtio serial of the image slot a container
// of index (1..) reads its image from; index 0 is the launch's own image
// disk (vda).
func ContainerSlotSerial(index int) string { return fmt.Sprintf("bulwark-ctr-%d", index) }

// ContainerStart runs a container in a pod sandbox. Its image is the
// erofs disk in slot Index (0: the launch's image disk; else the disk
// whose serial is ContainerSlotSerial(Index)), whose first DiskSize bytes
// must hash to DiskDigest: the agent checks that before mounting it. Args
// replace the image's entrypoint+cmd when not empty; Env, WorkingDir and
// User are set over the image's as Start's are.
type ContainerStart struct {
	Index      int      `json:"index"`
	Name       string   `json:"name"`
	DiskDigest string   `json:"disk_digest"`
	DiskSize   int64    `json:"disk_size"`
	Args       []string `json:"args,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Stdin gives the container's process a pipe as stdin (with TTY: its
	// terminal's input), fed by CONTAINER_STDIN frames until an empty one;
	// else stdin is /dev/null. TTY, when set, runs it on a new terminal of
	// this size, its controlling terminal in a session of its own (CRI
	// tty: true): its output, stdout and stderr merged, comes as
	// CONTAINER_OUT stream 1; CONTAINER_RESIZE frames change its size
	// (containertty.go).
	Stdin bool        `json:"stdin,omitempty"`
	TTY   *WindowSize `json:"tty,omitempty"`
}

// Validate checks a ContainerStart: an index of 0..MaxContainers-1, a
// name of 1..128 of [A-Za-z0-9._-], a sha256 disk digest and a disk size
// of 1..DiskSlotBytes in whole 512-byte sectors, bounded arguments without
// NUL bytes, and the environment, working directory, user and terminal
// size as Start's.
func (c *ContainerStart) Validate() error {
	if c.Index < 0 || c.Index >= MaxContainers {
		return fmt.Errorf("channel: container index %d, want 0..%d", c.Index, MaxContainers-1)
	}
	if !safeName(c.Name) {
		return fmt.Errorf("channel: container name %q: want 1..128 characters from [A-Za-z0-9._-]", c.Name)
	}
	hex, ok := strings.CutPrefix(c.DiskDigest, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return errors.New("channel: container disk digest: want sha256: and 64 lowercase hex digits")
	}
	if c.DiskSize <= 0 || c.DiskSize > DiskSlotBytes || c.DiskSize%512 != 0 {
		return fmt.Errorf("channel: container disk size %d: want 1..%d bytes in 512-byte sectors", c.DiskSize, int64(DiskSlotBytes))
	}
	if len(c.Args) > MaxContainerArgs {
		return fmt.Errorf("channel: container: %d arguments, the limit is %d", len(c.Args), MaxContainerArgs)
	}
	total := 0
	for i, a := range c.Args {
		total += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("channel: container: argument %d contains a NUL byte", i)
		}
	}
	if total > MaxContainerArgsBytes {
		return fmt.Errorf("channel: container: arguments of %d bytes, the limit is %d", total, MaxContainerArgsBytes)
	}
	w := Start{SandboxID: "x", Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, TTY: c.TTY}
	if err := w.validateWorkload(); err != nil {
		return fmt.Errorf("container: %w", err)
	}
	return nil
}

// DiskSlotBytes is the size of every disk slot as the guest sees it
// (kvm.DiskSlotSize): an image disk is at most that.
const DiskSlotBytes = 2 << 30

// ContainerStarted answers a ContainerStart: the container's process id
// in the guest, or Error when it did not start (nothing of it runs).
type ContainerStarted struct {
	Index int    `json:"index"`
	PID   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// ContainerExit reports that a container's process exited, with its exit
// code (0..255; 128+N for signal N). Its output was sent before.
type ContainerExit struct {
	Index int `json:"index"`
	Code  int `json:"code"`
}

// ContainerKill sends Signal (1..64) to a container's process group;
// the container's exit comes back as CONTAINER_EXIT.
type ContainerKill struct {
	Index  int `json:"index"`
	Signal int `json:"signal"`
}

// Validate checks the index and signal.
func (k *ContainerKill) Validate() error {
	if k.Index < 0 || k.Index >= MaxContainers {
		return fmt.Errorf("channel: container index %d, want 0..%d", k.Index, MaxContainers-1)
	}
	if k.Signal < 1 || k.Signal > 64 {
		return fmt.Errorf("channel: signal %d, want 1..64", k.Signal)
	}
	return nil
}

// ContainerRemove has the agent forget a container that ended (or never
// started): it ends every process still running in the container's root
// (execs, processes that left its process group), unmounts the root and
// the image disk in its slot, and forgets its index, so that the host can
// put another image in the slot and start another container at the same
// index. A container still running is not removed.
type ContainerRemove struct {
	Index int `json:"index"`
}

// Validate checks the index.
func (r *ContainerRemove) Validate() error {
	if r.Index < 0 || r.Index >= MaxContainers {
		return fmt.Errorf("channel: container index %d, want 0..%d", r.Index, MaxContainers-1)
	}
	return nil
}

// ContainerRemoved answers a ContainerRemove: the container is forgotten
// and nothing in the guest reads its slot any more, or Error says why not
// (nothing was forgotten).
type ContainerRemoved struct {
	Index int    `json:"index"`
	Error string `json:"error,omitempty"`
}

// ContainerOutput is a piece of a container's output: on the wire the
// index (1 byte), the stream (1 stdout, 2 stderr) and the bytes.
type ContainerOutput struct {
	Index  int
	Stream byte
	Data   []byte
}

// Encode is the frame body of o.
func (o ContainerOutput) Encode() []byte {
	b := make([]byte, 2+len(o.Data))
	b[0], b[1] = byte(o.Index), o.Stream
	copy(b[2:], o.Data)
	return b
}

// DecodeContainerOutput parses a CONTAINER_OUT frame body.
func DecodeContainerOutput(body []byte) (ContainerOutput, error) {
	if len(body) < 2 {
		return ContainerOutput{}, fmt.Errorf("%w: CONTAINER_OUT body of %d bytes", ErrBadFrame, len(body))
	}
	o := ContainerOutput{Index: int(body[0]), Stream: body[1], Data: body[2:]}
	if o.Index >= MaxContainers {
		return ContainerOutput{}, fmt.Errorf("%w: CONTAINER_OUT index %d", ErrBadFrame, o.Index)
	}
	if o.Stream != 1 && o.Stream != 2 {
		return ContainerOutput{}, fmt.Errorf("%w: CONTAINER_OUT stream %d", ErrBadFrame, o.Stream)
	}
	return o, nil
}
