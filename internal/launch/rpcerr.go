package launch

import (
	"fmt"

	"google.golang.org/grpc/status"
)

// callError is a failed call to attestd, worded for the launcher's user:
// "attestd STEP: MESSAGE (CODE)" rather than gRPC's "rpc error: code =
// CODE desc = MESSAGE". It unwraps to the call's error (status.Code and
// errors.Is still see it).
type callError struct {
	step string
	err  error
}

func (e *callError) Error() string {
	if st, ok := status.FromError(e.err); ok {
		return fmt.Sprintf("attestd %s: %s (%s)", e.step, st.Message(), st.Code())
	}
	return fmt.Sprintf("attestd %s: %v", e.step, e.err)
}

func (e *callError) Unwrap() error { return e.err }

// attestdError wraps err from the attestd call step.
func attestdError(step string, err error) error { return &callError{step: step, err: err} }
