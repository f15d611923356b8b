package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// maxResponse bounds a TPM response read from a socket (TPMs answer at most
// a few KiB).
const maxResponse = 64 << 10

// streamTPM speaks to a TPM over a stream socket. raw framing sends TPM
// command bytes as they are and reads a response by its header's size
// (swtpm's --server, unix or TCP); mssim framing wraps them in the TCG
// reference simulator's TPM_SEND_COMMAND protocol (the simulator, and swtpm,
// on TCP). Not safe for concurrent use: TPM serializes.
type streamTPM struct {
	conn  net.Conn
	mssim bool
}

const mssimSendCommand = 8

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	if s.mssim {
		hdr := make([]byte, 9, 9+len(cmd))
		binary.BigEndian.PutUint32(hdr, mssimSendCommand)
		hdr[4] = 0 // locality
		binary.BigEndian.PutUint32(hdr[5:], uint32(len(cmd)))
		if _, err := s.conn.Write(append(hdr, cmd...)); err != nil {
			return nil, fmt.Errorf("sending TPM command: %w", err)
		}
		var n [4]byte
		if _, err := io.ReadFull(s.conn, n[:]); err != nil {
			return nil, fmt.Errorf("reading TPM response: %w", err)
		}
		size := binary.BigEndian.Uint32(n[:])
		if size == 0 {
			return nil, errors.New("TPM returned an empty response (is the simulator powered on?)")
		}
		if size > maxResponse {
			return nil, fmt.Errorf("TPM response of %d bytes exceeds limit %d", size, maxResponse)
		}
		rsp := make([]byte, size+4) // response, then the simulator's own status
		if _, err := io.ReadFull(s.conn, rsp); err != nil {
			return nil, fmt.Errorf("reading TPM response: %w", err)
		}
		if st := binary.BigEndian.Uint32(rsp[size:]); st != 0 {
			return nil, fmt.Errorf("TPM simulator returned status %d", st)
		}
		return rsp[:size], nil
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("sending TPM command: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, fmt.Errorf("reading TPM response: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("TPM response header claims %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[10:]); err != nil {
		return nil, fmt.Errorf("reading TPM response: %w", err)
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return s.conn.Close() }

// dialStream connects to a TPM socket, honouring ctx for the dial and, while
// the returned stop function has not been called, for every command (a
// cancelled ctx closes the connection's deadline).
func dialStream(ctx context.Context, network, addr string, mssim bool) (*streamTPM, func(), error) {
	var conn net.Conn
	var err error
	if network == "unix" {
		conn, err = dialUnix(ctx, addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return &streamTPM{conn: conn, mssim: mssim}, func() { stop() }, nil
}

// Response codes the TPM may answer when it wants the same command again.
const (
	rcRetry   = 0x922 // TPM_RC_RETRY
	rcYielded = 0x908 // TPM_RC_YIELDED
	rcTesting = 0x90A // TPM_RC_TESTING
)

// retryTPM resends a command the TPM answered with TPM_RC_RETRY, YIELDED or
// TESTING (swtpm's first ECDSA quote can answer RETRY). Such a response
// means the TPM did not execute the command, so sessions are unaffected and
// the identical bytes may be sent again.
type retryTPM struct {
	t   transport.TPM
	ctx context.Context
}

func (r *retryTPM) Send(cmd []byte) ([]byte, error) {
	delay := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if err := r.ctx.Err(); err != nil {
			return nil, err
		}
		rsp, err := r.t.Send(cmd)
		if err != nil || len(rsp) < 10 || attempt >= 20 {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
		default:
			return rsp, nil
		}
		select {
		case <-time.After(delay):
		case <-r.ctx.Done():
			return nil, r.ctx.Err()
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}
