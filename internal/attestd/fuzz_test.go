package attestd

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/google/go-attestation/attest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// fuzzValidator unmarshals data as a request of type T and validates it:
// nothing may panic, and every refusal is InvalidArgument naming the field
// ("field: ...").
func fuzzValidator[T any, PT interface {
	*T
	proto.Message
}](t *testing.T, data []byte, validate func(PT) error) {
	t.Helper()
	req := PT(new(T))
	if err := proto.Unmarshal(data, req); err != nil {
		return
	}
	err := validate(req)
	if err == nil {
		return
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("refusal is not InvalidArgument: %v", err)
	}
	if field, _, ok := strings.Cut(st.Message(), ": "); !ok || field == "" || strings.ContainsAny(field, " \n") {
		t.Fatalf("refusal does not start with the field's name: %q", st.Message())
	}
}

func marshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

const fuzzNode = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// FuzzEnrollRequest: Enroll's validation of any encoded request.
func FuzzEnrollRequest(f *testing.F) {
	f.Add(marshal(f, &bulwarkv1.EnrollRequest{EkPublic: []byte{1, 2}, AkPublic: []byte{3}, EkCertificate: []byte{4}}))
	f.Add(marshal(f, &bulwarkv1.EnrollRequest{EkPublic: make([]byte, MaxEKPublic+1)}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) { fuzzValidator(t, data, validateEnroll) })
}

// FuzzActivateCredentialRequest: ActivateCredential's validation.
func FuzzActivateCredentialRequest(f *testing.F) {
	f.Add(marshal(f, &bulwarkv1.ActivateCredentialRequest{NodeId: fuzzNode, Secret: make([]byte, 32)}))
	f.Add(marshal(f, &bulwarkv1.ActivateCredentialRequest{NodeId: "sha256:XYZ", Secret: make([]byte, 65)}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) { fuzzValidator(t, data, validateActivate) })
}

// FuzzChallengeRequest: Challenge's validation (the node id).
func FuzzChallengeRequest(f *testing.F) {
	f.Add(marshal(f, &bulwarkv1.ChallengeRequest{NodeId: fuzzNode}))
	f.Add(marshal(f, &bulwarkv1.ChallengeRequest{NodeId: "sha256:" + strings.Repeat("G", 64)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzValidator(t, data, func(r *bulwarkv1.ChallengeRequest) error { return validateNodeID("node_id", r.GetNodeId()) })
	})
}

// FuzzReleaseSecretsRequest: ReleaseSecrets' validation (attestation id or
// token reference).
func FuzzReleaseSecretsRequest(f *testing.F) {
	f.Add(marshal(f, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: "att-" + strings.Repeat("0", 32)}}))
	f.Add(marshal(f, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_Token{Token: "a.b.c"}}))
	f.Add(marshal(f, &bulwarkv1.ReleaseSecretsRequest{}))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzValidator(t, data, validateRelease) })
}

// FuzzAdminRequest: the validation of every Admin request that carries
// client fields (kind selects the request type).
func FuzzAdminRequest(f *testing.F) {
	f.Add(uint8(0), marshal(f, &bulwarkv1.PutSecretRequest{Name: "db-password", Value: []byte("v"), Metadata: map[string]string{"description": "d"}}))
	f.Add(uint8(0), marshal(f, &bulwarkv1.PutSecretRequest{Name: "-x", Metadata: map[string]string{"other": "\x00"}}))
	f.Add(uint8(1), marshal(f, &bulwarkv1.DeleteSecretRequest{Name: "db-password"}))
	f.Add(uint8(2), marshal(f, &bulwarkv1.DeleteNodeRequest{NodeId: fuzzNode}))
	f.Add(uint8(3), marshal(f, &bulwarkv1.RevokeNodeRequest{NodeId: fuzzNode}))
	f.Add(uint8(4), marshal(f, &bulwarkv1.ReadAuditRequest{After: 5, Limit: 1001}))
	f.Add(uint8(5), marshal(f, &bulwarkv1.ApproveReplicaJoinRequest{Id: strings.Repeat("ab", 16)}))
	f.Add(uint8(6), marshal(f, &bulwarkv1.DenyReplicaJoinRequest{Id: "../x"}))
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		switch kind % 7 {
		case 0:
			fuzzValidator(t, data, validatePutSecret)
		case 1:
			fuzzValidator(t, data, func(r *bulwarkv1.DeleteSecretRequest) error { return validateSecretName(r.GetName()) })
		case 2:
			fuzzValidator(t, data, func(r *bulwarkv1.DeleteNodeRequest) error { return validateNodeID("node_id", r.GetNodeId()) })
		case 3:
			fuzzValidator(t, data, func(r *bulwarkv1.RevokeNodeRequest) error { return validateNodeID("node_id", r.GetNodeId()) })
		case 4:
			fuzzValidator(t, data, func(r *bulwarkv1.ReadAuditRequest) error {
				limit, err := auditPageLimit(r)
				if err == nil && (limit < 1 || limit > MaxAuditPage) {
					t.Fatalf("page limit %d accepted", limit)
				}
				return err
			})
		case 5:
			fuzzValidator(t, data, func(r *bulwarkv1.ApproveReplicaJoinRequest) error { return validateJoinID(r.GetId()) })
		case 6:
			fuzzValidator(t, data, func(r *bulwarkv1.DenyReplicaJoinRequest) error { return validateJoinID(r.GetId()) })
		}
	})
}

// firmwarePCRs replays the SHA-256 digests of a parsed firmware event log
// into PCR values (nil when it does not parse).
func firmwarePCRs(raw []byte) (pcrs map[int][]byte) {
	defer func() {
		if recover() != nil {
			pcrs = nil
		}
	}()
	el, err := attest.ParseEventLog(raw)
	if err != nil {
		return nil
	}
	pcrs = map[int][]byte{}
	for _, ev := range el.Events(attest.HashSHA256) {
		if ev.Type.String() == "EV_NO_ACTION" {
			continue
		}
		cur, ok := pcrs[ev.Index]
		if !ok {
			cur = make([]byte, 32)
		}
		h := sha256.New()
		h.Write(cur)
		h.Write(ev.Digest)
		pcrs[ev.Index] = h.Sum(nil)
	}
	return pcrs
}

// FuzzReplayFirmwareLog: the firmware event log a host sends is parsed and
// replayed against the quoted PCRs without panicking (or hanging), and a
// refusal is InvalidArgument (does not parse) or PermissionDenied (does
// not replay), never anything else. With self=true the PCRs are the log's
// own replay, so well-formed mutations get past parsing into Verify.
func FuzzReplayFirmwareLog(f *testing.F) {
	if out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-attestation").Output(); err == nil {
		dir := filepath.Join(strings.TrimSpace(string(out)), "attest", "testdata")
		for _, name := range []string{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "coreos_36_shielded_vm_no_secure_boot_eventlog"} {
			if raw, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				f.Add(raw, true)
				f.Add(raw[:len(raw)/2], true)
				f.Add(raw, false)
			}
		}
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 64), true)
	fixed := map[int][]byte{0: make([]byte, 32), 7: make([]byte, 32)}
	f.Fuzz(func(t *testing.T, data []byte, self bool) {
		if len(data) > MaxFirmwareLog {
			return
		}
		pcrs := fixed
		if self {
			if p := firmwarePCRs(data); len(p) > 0 {
				pcrs = p
			}
		}
		evs, err := replayFirmwareLog(data, pcrs)
		if c := status.Code(err); err != nil && c != codes.InvalidArgument && c != codes.PermissionDenied {
			t.Fatalf("refusal is %v, not InvalidArgument or PermissionDenied: %v", c, err)
		}
		if err == nil {
			// What policy reads from an accepted log: the kernel command
			// line only from a replayed PCR 8 event whose text was bound.
			fw := firmwareState(evs, pcrs)
			if fw.KernelCmdline != "" && !fw.BootLoaderQuoted {
				t.Fatalf("kernel command line %q read without PCRs 8 and 9 quoted", fw.KernelCmdline)
			}
		}
	})
}
