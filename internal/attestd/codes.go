package attestd

import (
	"context"
	"errors"
	"log/slog"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/evidence"
	"github.com/bulwark-project/bulwark/internal/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// storeStatus turns a store, vault or evidence error into a gRPC status.
// It is the only place where those error classes become codes. what names the
// object for the message; unexpected errors are logged and answered with
// a generic Internal error so nothing internal leaks.
func (s *Server) storeStatus(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var missing *enclave.MissingSecretError
	var refused *evidence.Error
	switch {
	case errors.As(err, &refused):
		return evidenceStatus(refused)
	case errors.As(err, &missing):
		return status.Errorf(codes.NotFound, "%s: secret %q is not in attestd's vault: an admin must add it (attestd ctl secret put %s --from-file FILE), then launch again", what, missing.Name, missing.Name)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: not found", what)
	case errors.Is(err, store.ErrConflict):
		return status.Errorf(codes.Aborted, "%s: changed concurrently or exists already; retry", what)
	case errors.Is(err, store.ErrInvalid), errors.Is(err, enclave.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	case errors.Is(err, store.ErrNonceUnknown):
		return status.Error(codes.PermissionDenied, "nonce: not issued to this node (call Challenge)")
	case errors.Is(err, store.ErrNonceUsed):
		return status.Error(codes.PermissionDenied, "nonce: already used (replay refused)")
	case errors.Is(err, store.ErrNonceExpired):
		return status.Error(codes.PermissionDenied, "nonce: expired (call Challenge again)")
	case errors.Is(err, store.ErrReleaseDenied):
		return status.Error(codes.PermissionDenied, "release: the attestation grants no secrets (deny verdict or none granted)")
	case errors.Is(err, store.ErrReleaseUsed):
		return status.Error(codes.FailedPrecondition, "release: already done for this attestation (attest again)")
	case errors.Is(err, store.ErrReleaseExpired):
		return status.Error(codes.FailedPrecondition, "release: the attestation's release window has closed (attest again)")
	case errors.Is(err, store.ErrChallengeExpired):
		return status.Error(codes.PermissionDenied, "secret: the credential challenge expired (enroll again)")
	case errors.Is(err, store.ErrChallenge):
		return status.Error(codes.PermissionDenied, "secret: does not match the credential challenge")
	case errors.Is(err, store.ErrClosed), errors.Is(err, store.ErrUnavailable), errors.Is(err, enclave.ErrUnavailable), errors.Is(err, enclave.ErrNoMasterKey):
		s.log.ErrorContext(ctx, "unavailable", "what", what, "error", err)
		return status.Errorf(codes.Unavailable, "%s: service unavailable", what)
	default:
		s.log.LogAttrs(ctx, slog.LevelError, "internal error", slog.String("what", what), slog.String("error", err.Error()))
		return status.Errorf(codes.Internal, "%s: internal error", what)
	}
}

// evidenceStatus turns a refusal of evidence.Verify into a gRPC status,
// its message the refusal's ("field: ..."): InvalidArgument for an input
// that is malformed or missing; FailedPrecondition with reason
// LAUNCH_LOG_PREFIX_UNKNOWN for an incremental log attestd cannot replay
// (the host sends its whole log); PermissionDenied for evidence that does
// not verify. An error that is not an *evidence.Error is returned as is.
func evidenceStatus(err error) error {
	var e *evidence.Error
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case e.PrefixUnknown():
		st := status.New(codes.FailedPrecondition, e.Error())
		if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: bulwarkv1.ReasonLaunchLogPrefixUnknown, Domain: bulwarkv1.ErrorDomain}); err == nil {
			st = d
		}
		return st.Err()
	case e.Invalid:
		return status.Error(codes.InvalidArgument, e.Error())
	default:
		return status.Error(codes.PermissionDenied, e.Error())
	}
}

// audited says whether a refused Attest is written to the audit chain,
// by the refusal's type: only a failed evidence check after the quote
// verified, when the caller holds the node's AK. A nonce from Challenge
// needs only the public node id, so a junk quote, a replayed or stale
// nonce, or a revoked node's id, costs an attacker nothing: those are
// counted and logged (sampled, by the interceptor), not written to the
// serialized audit chain. Nor is an incremental log attestd cannot replay
// (a host's first attestation after a reboot): the host sends its whole
// log next, as the protocol says.
func audited(err error) bool {
	var e *evidence.Error
	return errors.As(err, &e) && e.Quoted() && !e.PrefixUnknown()
}
