// A container's output: the host service's logs followed into
// containerd's fifos.

package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
)

// follow copies the sandbox's output (with name: that of its container
// name, of a pod VM) to the task's stdout and stderr until it ends, then
// records its exit status. Start opens stdout and stderr (openOutputs)
// before it answers, while the caller holds the fifos' read ends.
func (s *service) follow(t *proc, id, name string, stdout, stderr io.WriteCloser) {
	ctx := s.ctx
	defer stdout.Close()
	defer stderr.Close()
	var skip int64 // bytes already copied, when the log is followed again
	code := uint32(255)
	for attempt := 0; ; attempt++ {
		n, err := copyLogs(ctx, id, name, skip, stdout, stderr)
		skip += n
		st, ec, msg, ierr := inspect(ctx, id, name)
		if ierr == nil && st != "running" && st != "created" {
			if ec >= 0 {
				code = uint32(ec)
			}
			if msg != "" {
				// The CRI has no field for why a task ended: its
				// output (crictl logs) says it last.
				log.G(ctx).Warnf("bulwark shim: sandbox %s %s: %s", id, name, msg)
				fmt.Fprintf(stderr, "bulwark: %s\n", msg)
			}
			break
		}
		if ctx.Err() != nil {
			break
		}
		// The stream broke while the sandbox runs (the host service
		// restarted): follow it again, skipping what was copied.
		log.G(ctx).WithError(errors.Join(err, ierr)).Warnf("bulwark shim: following sandbox %s again", id)
		time.Sleep(min(time.Duration(attempt+1)*200*time.Millisecond, 5*time.Second))
	}
	s.mu.Lock()
	first := t.exit(code)
	s.mu.Unlock()
	if first {
		s.send(&eventstypes.TaskExit{ContainerID: t.id, ID: t.id, Pid: t.pid, ExitStatus: t.exitStatus, ExitedAt: protobuf.ToTimestamp(t.exitedAt)})
	}
}

// copyLogs follows the sandbox's output (with name: its container's),
// dropping its first skip bytes, and returns how many bytes it read.
func copyLogs(ctx context.Context, id, name string, skip int64, stdout, stderr io.Writer) (int64, error) {
	c, err := dialHost()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var stream interface {
		Recv() (*bulwarkv1.LogChunk, error)
	}
	if name != "" {
		stream, err = c.ContainerLogs(ctx, &bulwarkv1.ContainerLogsRequest{Id: id, Name: name, Follow: true})
	} else {
		stream, err = c.Logs(ctx, &bulwarkv1.LogsRequest{Id: id, Follow: true})
	}
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		chunk, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		data := chunk.GetData()
		n += int64(len(data))
		if skip > 0 {
			d := min(skip, int64(len(data)))
			data, skip = data[d:], skip-d
		}
		w := stdout
		if chunk.GetStream() == bulwarkv1.LogChunk_STREAM_STDERR {
			w = stderr
		}
		w.Write(data) // a reader that went away loses the output, not the sandbox
	}
}

// fifoOpenTimeout bounds the wait for a reader of a task's output fifo.
const fifoOpenTimeout = 10 * time.Second

// openOutputs opens a task's stdout and stderr fifos for writing, waiting
// (at most fifoOpenTimeout) for their readers. Start calls it before it
// answers: the caller (ctr run -d, the CRI) holds the read ends until
// then, and a fifo opened for writing only after its reader went away
// would block for good, and the task would never be seen to exit.
func openOutputs(ctx context.Context, stdout, stderr string) (io.WriteCloser, io.WriteCloser) {
	ctx, cancel := context.WithTimeout(ctx, fifoOpenTimeout)
	defer cancel()
	return openOutput(ctx, stdout), openOutput(ctx, stderr)
}

// openOutput opens a container's stdout or stderr fifo for writing (empty:
// discard).
func openOutput(ctx context.Context, path string) io.WriteCloser {
	if path == "" {
		return nopCloser{io.Discard}
	}
	f, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		log.G(ctx).WithError(err).Warnf("bulwark shim: opening %s", path)
		return nopCloser{io.Discard}
	}
	return f
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
