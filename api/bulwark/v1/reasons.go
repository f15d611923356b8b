package bulwarkv1

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The google.rpc.ErrorInfo that attestd attaches to the refusals a client
// reacts to by changing its request (docs/api.md).
const (
	// ErrorDomain is the ErrorInfo domain of Bulwark's reasons.
	ErrorDomain = "bulwark.dev"
	// ReasonLaunchLogPrefixUnknown: attestd cannot replay launch_log from
	// launch_log_offset (it holds no verified prefix for the node, the
	// TPM reset or restarted since, or the offset is past the prefix). The
	// code is FAILED_PRECONDITION; the host sends its whole launch log,
	// quoted over a new nonce.
	ReasonLaunchLogPrefixUnknown = "LAUNCH_LOG_PREFIX_UNKNOWN"
)

// IsLaunchLogPrefixUnknown reports whether err is attestd's refusal of an
// incremental launch log (ReasonLaunchLogPrefixUnknown): send the whole
// log.
func IsLaunchLogPrefixUnknown(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return false
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetReason() == ReasonLaunchLogPrefixUnknown && ei.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}
