package launch

import "github.com/bulwark-project/bulwark/kvm"

// A pod container's own stdin and terminal (ContainerOptions.Stdin, TTY):
// input and resizes for its running process.

// ErrContainerExited is wrapped by the input methods once the container
// exited.
var ErrContainerExited = kvm.ErrContainerExited

// ErrInputEnded is wrapped by Stdin after CloseStdin.
var ErrInputEnded = kvm.ErrInputEnded

// HasStdin reports whether the container's process has a stdin
// (ContainerOptions.Stdin).
func (c *Container) HasStdin() bool { return c.c.HasStdin() }

// HasTTY reports whether the container's process runs on a terminal
// (ContainerOptions.TTY).
func (c *Container) HasTTY() bool { return c.c.HasTTY() }

// Stdin sends input to the container's process.
func (c *Container) Stdin(data []byte) error { return c.sb.ContainerStdin(c.Index, data) }

// CloseStdin ends the container's input (a second call does nothing).
func (c *Container) CloseStdin() error { return c.sb.CloseContainerStdin(c.Index) }

// Resize gives the container's terminal a new size.
func (c *Container) Resize(ws kvm.WindowSize) error { return c.sb.ResizeContainer(c.Index, ws) }
