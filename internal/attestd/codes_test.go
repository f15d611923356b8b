package attestd

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/evidence"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestEvidenceRefusals: each check of evidence.Verify becomes its gRPC
// code in one place (evidenceStatus, through storeStatus), the message
// kept ("field: ..."), and is audited by its type alone: a check after
// the quote is audited whatever its message says, the prefix-unknown
// refusal and everything up to the quote are not, and neither is a gRPC
// status that merely reads like one.
func TestEvidenceRefusals(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		check   evidence.Check
		field   string
		invalid bool
		code    codes.Code
		audited bool
	}{
		{evidence.CheckInput, "pcrs", true, codes.InvalidArgument, false},
		{evidence.CheckQuote, "quote", false, codes.PermissionDenied, false},
		{evidence.CheckPrefix, "launch_log_offset", false, codes.FailedPrecondition, false},
		{evidence.CheckLaunchLog, "launch_log", true, codes.InvalidArgument, true},
		{evidence.CheckLaunchLog, "launch_log", false, codes.PermissionDenied, true},
		{evidence.CheckEnds, "launch_log", false, codes.PermissionDenied, true},
		{evidence.CheckSandbox, "sandbox_id", false, codes.PermissionDenied, true},
		{evidence.CheckSandbox, "sandbox_record", true, codes.InvalidArgument, true},
		{evidence.CheckFirmwareLog, "firmware_event_log", false, codes.PermissionDenied, true},
		{evidence.CheckFirmwareLog, "firmware_event_log", true, codes.InvalidArgument, true},
	} {
		for _, msg := range []string{"the usual words", "nonce: reworded to look like an unaudited refusal"} {
			name := fmt.Sprintf("%v/%s/invalid=%v/%s", tc.check, tc.field, tc.invalid, msg)
			t.Run(name, func(t *testing.T) {
				var err error = &evidence.Error{Check: tc.check, Field: tc.field, Invalid: tc.invalid, Err: errors.New(msg)}
				err = fmt.Errorf("wrapped: %w", err)
				if got := audited(err); got != tc.audited {
					t.Fatalf("audited = %v, want %v", got, tc.audited)
				}
				st := status.Convert(s.storeStatus(t.Context(), "attest", err))
				if st.Code() != tc.code || st.Message() != tc.field+": "+msg {
					t.Fatalf("status %v %q, want %v %q", st.Code(), st.Message(), tc.code, tc.field+": "+msg)
				}
				if got := bulwarkv1.IsLaunchLogPrefixUnknown(st.Err()); got != (tc.check == evidence.CheckPrefix) {
					t.Fatalf("IsLaunchLogPrefixUnknown = %v", got)
				}
			})
		}
	}
	// What the old code audited by: a status after the quote. A status is
	// not a refusal of the evidence, whatever it says.
	for _, err := range []error{
		status.Error(codes.PermissionDenied, "launch_log: replay of 2 events gives ..."),
		status.Error(codes.PermissionDenied, "nonce: already used (replay refused)"),
		errors.New("store: unavailable"),
		nil,
	} {
		if audited(err) {
			t.Errorf("audited(%v) = true", err)
		}
	}
	if !strings.HasPrefix(status.Convert(evidenceStatus(errors.New("x"))).Message(), "x") {
		t.Error("evidenceStatus changed an error that is not an *evidence.Error")
	}
}
