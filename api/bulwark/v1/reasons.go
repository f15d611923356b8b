package bulwarkv1

// The google.rpc.ErrorInfo that attestd attaches to the refusals a client
// reacts to by changing its request (docs/api.md "Errors").
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
