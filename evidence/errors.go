package evidence

import "fmt"

// Check names one of Verify's checks, in the order Verify runs them. An
// *Error says which check refused.
type Check int

// Verify's checks, in order.
const (
	// CheckInput: the inputs are what Verify needs (an AK, the launch PCR
	// in range and among the PCR values, a launch log offset below its
	// limit).
	CheckInput Check = iota + 1
	// CheckQuote: the quote is signed by the AK, over the nonce and the
	// PCR values (tpm/verify.VerifyQuote).
	CheckQuote
	// CheckPrefix: an incremental launch log starts where the caller's
	// verified prefix of the node's log reaches, in the quote's TPM boot
	// cycle.
	CheckPrefix
	// CheckLaunchLog: the launch log parses strictly and replays to the
	// quoted launch PCR, through the held prefix's value.
	CheckLaunchLog
	// CheckEnds: every END record ends a sandbox the log launched before
	// it, once.
	CheckEnds
	// CheckSandbox: the log launches the requested sandbox exactly once
	// and has not ended it.
	CheckSandbox
	// CheckFirmwareLog: the firmware event log replays to the quoted host
	// PCRs, and the data its digests cover hashes to them.
	CheckFirmwareLog
)

var checkNames = map[Check]string{
	CheckInput: "input", CheckQuote: "quote", CheckPrefix: "prefix", CheckLaunchLog: "launch log",
	CheckEnds: "END records", CheckSandbox: "sandbox", CheckFirmwareLog: "firmware log",
}

func (c Check) String() string {
	if n, ok := checkNames[c]; ok {
		return n
	}
	return fmt.Sprintf("Check(%d)", int(c))
}

// Error is a refusal by Verify or VerifyQuote: which check failed, about
// which input, and why. Callers branch on its fields, never on its
// message.
type Error struct {
	// Check is the check that refused.
	Check Check
	// Field names the input refused as Bulwark's AttestRequest names it
	// (pcrs, quote, launch_log_offset, launch_log, sandbox_id,
	// sandbox_record, firmware_event_log); the message starts with it.
	Field string
	// Invalid is set when the input is malformed or missing (it does not
	// parse, or is absent where needed) rather than a proof that failed.
	Invalid bool
	// Err is the cause.
	Err error
}

func (e *Error) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Quoted reports whether the quote had verified when this check refused:
// the inputs then came from the holder of the node's AK, over a fresh
// nonce, which a stranger cannot forge.
func (e *Error) Quoted() bool { return e.Check > CheckQuote }

// PrefixUnknown reports whether the refusal is only that the caller's
// held prefix does not reach the launch log offset (or is of another
// TPM boot cycle): the host sends its whole log instead.
func (e *Error) PrefixUnknown() bool { return e.Check == CheckPrefix }

func refuse(c Check, field string, err error) *Error {
	return &Error{Check: c, Field: field, Err: err}
}

func refusef(c Check, field, format string, a ...any) *Error {
	return &Error{Check: c, Field: field, Err: fmt.Errorf(format, a...)}
}

func invalidf(c Check, field, format string, a ...any) *Error {
	return &Error{Check: c, Field: field, Invalid: true, Err: fmt.Errorf(format, a...)}
}
