//go:build cgo

package tpm

import (
	"context"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator starts the in-process reference TPM simulator: a freshly
// manufactured TPM. Only one may be open in a process at a time; opening a
// second waits (while ctx allows) until the first is closed.
func openSimulator(ctx context.Context) (transport.TPMCloser, error) {
	type result struct {
		s   *simulator.Simulator
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := simulator.Get()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		return transport.FromReadWriteCloser(r.s), nil
	case <-ctx.Done():
		// Close the simulator once the pending Get returns, so it is not
		// held forever.
		go func() {
			if r := <-ch; r.err == nil {
				r.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

const simulatorAvailable = true
