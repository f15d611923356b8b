package channel

import (
	"errors"
	"fmt"
)

// A pod container's own stdin and terminal (ContainerStart.Stdin and
// .TTY), protocol version 7: the host feeds the container's stdin with
// CONTAINER_STDIN frames and resizes its terminal with CONTAINER_RESIZE.
// With a terminal, the container's stdout and stderr are one stream (the
// terminal's), CONTAINER_OUT stream 1, as runc gives a container with a
// terminal one console.
const (
	TypeContainerStdin  Type = 37 // host: ContainerInput, input for a container (ContainerInput.Encode); no data: end of input
	TypeContainerResize Type = 38 // host: JSON ContainerResize, a container's terminal has a new size
)

// ContainerInput is input for a container that asked for stdin: on the
// wire the container's index (1 byte) and at most MaxStdinChunk bytes; no
// bytes mark the end of its input (a terminal's input has no end: the
// terminal stays open).
type ContainerInput struct {
	Index int
	Data  []byte
}

// Encode is the frame body of in.
func (in ContainerInput) Encode() []byte {
	b := make([]byte, 1+len(in.Data))
	b[0] = byte(in.Index)
	copy(b[1:], in.Data)
	return b
}

// DecodeContainerInput parses a CONTAINER_STDIN frame body: an index of
// 0..MaxContainers-1 and at most MaxStdinChunk bytes of input.
func DecodeContainerInput(body []byte) (ContainerInput, error) {
	if len(body) < 1 {
		return ContainerInput{}, fmt.Errorf("%w: CONTAINER_STDIN without a container index", ErrBadFrame)
	}
	in := ContainerInput{Index: int(body[0]), Data: body[1:]}
	if in.Index >= MaxContainers {
		return ContainerInput{}, fmt.Errorf("%w: CONTAINER_STDIN for container %d, want 0..%d", ErrBadFrame, in.Index, MaxContainers-1)
	}
	if len(in.Data) > MaxStdinChunk {
		return ContainerInput{}, fmt.Errorf("%w: CONTAINER_STDIN of %d bytes, the limit is %d", ErrBadFrame, len(in.Data), MaxStdinChunk)
	}
	return in, nil
}

// ContainerResize is the new size of a container's terminal
// (ContainerStart.TTY).
type ContainerResize struct {
	Index int    `json:"index"`
	Rows  uint16 `json:"rows"`
	Cols  uint16 `json:"cols"`
}

// Size is the new window size.
func (r *ContainerResize) Size() WindowSize { return WindowSize{Rows: r.Rows, Cols: r.Cols} }

// Validate checks a ContainerResize: an index of 0..MaxContainers-1 and a
// valid size.
func (r *ContainerResize) Validate() error {
	if r.Index < 0 || r.Index >= MaxContainers {
		return fmt.Errorf("channel: CONTAINER_RESIZE for container %d, want 0..%d", r.Index, MaxContainers-1)
	}
	ws := r.Size()
	if err := ws.Validate(); err != nil {
		return errors.Join(errors.New("channel: CONTAINER_RESIZE"), err)
	}
	return nil
}
