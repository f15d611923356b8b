package attestd

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestMalformedAttest: every malformed field is InvalidArgument naming it,
// and nothing is consumed or judged.
func TestMalformedAttest(t *testing.T) {
	p := newInproc(t)
	ctx := context.Background()
	big := func(n int) []byte { return make([]byte, n) }
	cases := []struct {
		field string
		mut   func(r *bulwarkv1.AttestRequest)
	}{
		{"node_id", func(r *bulwarkv1.AttestRequest) { r.NodeId = "" }},
		{"node_id", func(r *bulwarkv1.AttestRequest) { r.NodeId = "sha256:XYZ" }},
		{"node_id", func(r *bulwarkv1.AttestRequest) { r.NodeId = strings.Repeat("a", 71) }},
		{"nonce", func(r *bulwarkv1.AttestRequest) { r.Nonce = nil }},
		{"nonce", func(r *bulwarkv1.AttestRequest) { r.Nonce = big(31) }},
		{"quote", func(r *bulwarkv1.AttestRequest) { r.Quote = nil }},
		{"quote", func(r *bulwarkv1.AttestRequest) { r.Quote = big(MaxQuote + 1) }},
		{"signature", func(r *bulwarkv1.AttestRequest) { r.Signature = nil }},
		{"signature", func(r *bulwarkv1.AttestRequest) { r.Signature = big(MaxSignature + 1) }},
		{"pcrs", func(r *bulwarkv1.AttestRequest) { r.Pcrs = nil }},
		{"pcrs", func(r *bulwarkv1.AttestRequest) { r.Pcrs[24] = big(32) }},
		{"pcrs", func(r *bulwarkv1.AttestRequest) { r.Pcrs[0] = big(20) }},
		{"pcrs", func(r *bulwarkv1.AttestRequest) { delete(r.Pcrs, limits.DefaultLaunchPCR) }},
		{"launch_log", func(r *bulwarkv1.AttestRequest) { r.LaunchLog = nil }},
		{"launch_log", func(r *bulwarkv1.AttestRequest) { r.LaunchLog = big(MaxLaunchLog + 1) }},
		{"launch_log", func(r *bulwarkv1.AttestRequest) { r.LaunchLog = []byte("garbage") }},
		{"sandbox_id", func(r *bulwarkv1.AttestRequest) { r.SandboxId = "" }},
		{"sandbox_id", func(r *bulwarkv1.AttestRequest) { r.SandboxId = "a/b" }},
		{"sandbox_id", func(r *bulwarkv1.AttestRequest) { r.SandboxId = strings.Repeat("a", 129) }},
		{"signatures", func(r *bulwarkv1.AttestRequest) {
			r.Signatures = make([]*bulwarkv1.ArtifactSignature, MaxSignatures+1)
		}},
		{"signatures[0].artifact", func(r *bulwarkv1.AttestRequest) {
			r.Signatures = []*bulwarkv1.ArtifactSignature{{Signature: []byte{1}}}
		}},
		{"signatures[0].artifact", func(r *bulwarkv1.AttestRequest) {
			r.Signatures = []*bulwarkv1.ArtifactSignature{{Artifact: "not-an-artifact", Signature: []byte{1}}}
		}},
		{"signatures[0].artifact", func(r *bulwarkv1.AttestRequest) {
			r.Signatures = []*bulwarkv1.ArtifactSignature{{Artifact: "kernel\x00", Signature: []byte{1}}}
		}},
		{"signatures[0].signature", func(r *bulwarkv1.AttestRequest) {
			r.Signatures = []*bulwarkv1.ArtifactSignature{{Artifact: "kernel"}}
		}},
		{"signatures[0].payload", func(r *bulwarkv1.AttestRequest) {
			r.Signatures = []*bulwarkv1.ArtifactSignature{{Artifact: "image", Signature: []byte{1}, Payload: big(MaxArtPayload + 1)}}
		}},
		{"firmware_event_log", func(r *bulwarkv1.AttestRequest) { r.FirmwareEventLog = big(MaxFirmwareLog + 1) }},
		{"firmware_event_log", func(r *bulwarkv1.AttestRequest) { r.FirmwareEventLog = []byte("not a TCG log") }},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			req := p.request(t)
			tc.mut(req)
			_, err := p.srv.Attest(ctx, req)
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field) {
				t.Fatalf("got %v, want InvalidArgument naming %s", err, tc.field)
			}
		})
	}
	// The node's nonces are untouched by malformed requests: a good
	// request still passes.
	if r, err := p.srv.Attest(ctx, p.request(t)); err != nil || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("good request after malformed ones: %v %v", err, r)
	}
}

func TestMalformedOther(t *testing.T) {
	p := newInproc(t)
	ctx := context.Background()
	check := func(err error, field string) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field) {
			t.Fatalf("got %v, want InvalidArgument naming %s", err, field)
		}
	}
	_, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{})
	check(err, "ek_public")
	_, err = p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: []byte{1, 2, 3}, AkPublic: []byte{1}})
	check(err, "ek_public")
	_, err = p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: make([]byte, 10), EkCertificate: make([]byte, MaxEKCertificate+1), AkPublic: []byte{1}})
	check(err, "ek_certificate")
	_, err = p.srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: p.node})
	check(err, "secret")
	_, err = p.srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: p.node, Secret: make([]byte, 65)})
	check(err, "secret")
	_, err = p.srv.Challenge(ctx, &bulwarkv1.ChallengeRequest{})
	check(err, "node_id")
	_, err = p.srv.ReleaseSecrets(ctx, &bulwarkv1.ReleaseSecretsRequest{})
	check(err, "ref")
	_, err = p.srv.ReleaseSecrets(ctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: "x"}})
	check(err, "attestation_id")
	_, err = p.srv.ReleaseSecrets(ctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_Token{Token: strings.Repeat("a", MaxToken+1)}})
	check(err, "token")
	// An unknown attestation id is NotFound, naming the field.
	_, err = p.srv.ReleaseSecrets(ctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: "att-" + strings.Repeat("0", 32)}})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.HasPrefix(st.Message(), "attestation_id: ") {
		t.Fatalf("unknown attestation id: %v", err)
	}
}

// FuzzAttestRequest feeds random bytes as each field of a genuine request
// (and as a whole encoded request) through validation and the
// verification path (quote, launch log, sandbox, firmware log) in process.
// Nothing may panic, and every refusal must be a client error, never
// Internal or Unknown. (The stateful part — node lookup and nonce
// consumption — runs in TestAttestRandomFields: under coverage
// instrumentation the store's background work makes fuzzing crawl.)
func FuzzAttestRequest(f *testing.F) {
	p := newInproc(f)
	seed := p.request(f)
	ak := p.host.TPM.AKPublic()
	whole, _ := proto.Marshal(seed)
	f.Add(uint8(255), whole)
	f.Add(uint8(2), seed.Quote)
	f.Add(uint8(3), seed.Signature)
	f.Add(uint8(5), seed.LaunchLog)
	f.Add(uint8(5), seed.LaunchLog[:len(seed.LaunchLog)/2])
	f.Add(uint8(0), []byte(seed.NodeId))
	f.Add(uint8(6), []byte(seed.SandboxId))
	f.Add(uint8(7), []byte{0, 0, 0, 0})
	f.Add(uint8(8), []byte("artifact"))
	f.Add(uint8(10), []byte{0, 0, 0, 0, 8})
	f.Add(uint8(11), []byte{1})
	// The genuine request passes, without a stored prefix and with one
	// (of its own log, in its quote's boot cycle: offsets and sandbox
	// records then reach the stored-prefix paths).
	if _, err := verifyEvidence(ak, limits.DefaultLaunchPCR, seed, nil); err != nil {
		f.Fatalf("genuine request: %v", err)
	}
	held := heldPrefixOf(f, ak, seed)
	if _, err := verifyEvidence(ak, limits.DefaultLaunchPCR, seed, held); err != nil {
		f.Fatalf("genuine request with its prefix held: %v", err)
	}
	f.Fuzz(func(t *testing.T, field uint8, data []byte) {
		var req *bulwarkv1.AttestRequest
		if field == 255 {
			req = &bulwarkv1.AttestRequest{}
			if err := proto.Unmarshal(data, req); err != nil {
				return
			}
		} else {
			req = proto.Clone(seed).(*bulwarkv1.AttestRequest)
			mutateField(req, field, data)
		}
		if err := validateAttest(req); err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("validation: %v", err)
			}
			return
		}
		for _, h := range []*store.PrefixView{nil, held} {
			_, err := verifyEvidence(ak, limits.DefaultLaunchPCR, req, h)
			switch status.Code(err) {
			case codes.OK, codes.InvalidArgument, codes.PermissionDenied, codes.FailedPrecondition:
			default:
				t.Fatalf("fuzzed field %d: %v", field, err)
			}
		}
	})
}

func mutateField(req *bulwarkv1.AttestRequest, field uint8, data []byte) {
	switch field % 12 {
	case 0:
		req.NodeId = string(data)
	case 1:
		req.Nonce = data
	case 2:
		req.Quote = data
	case 3:
		req.Signature = data
	case 4:
		if len(data) > 0 {
			req.Pcrs[uint32(data[0])] = data[1:]
		}
	case 5:
		req.LaunchLog = data
	case 6:
		req.SandboxId = string(data)
	case 7:
		req.FirmwareEventLog = data
	case 8:
		req.Signatures = []*bulwarkv1.ArtifactSignature{{Artifact: string(data), Signature: data, Payload: data}}
	case 9:
		req.Pcrs[limits.DefaultLaunchPCR] = data
	case 10:
		req.SandboxRecord = data
	case 11:
		var b [8]byte
		copy(b[:], data)
		req.LaunchLogOffset = binary.LittleEndian.Uint64(b[:])
		if len(data) > 1 {
			req.LaunchLog = data[1:]
		}
	}
}

// heldPrefixOf is the launch log prefix attestd would hold after
// verifying req: its whole log, in its quote's boot cycle.
func heldPrefixOf(t testing.TB, ak []byte, req *bulwarkv1.AttestRequest) *store.PrefixView {
	q, err := verify.VerifyQuote(ak, req.GetQuote(), req.GetSignature(), req.GetNonce(), pcrsByIndex(req.GetPcrs()))
	if err != nil {
		t.Fatal(err)
	}
	clock := q.Clock()
	lg, err := measure.ParseLog(req.GetLaunchLog())
	if err != nil {
		t.Fatal(err)
	}
	steps, err := measure.ReplaySteps(lg.Records(), measure.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := &store.PrefixView{Prefix: store.LaunchPrefix{ResetCount: clock.ResetCount, RestartCount: clock.RestartCount,
		Events: uint64(lg.Len()), PCR: steps[len(steps)-1]}, PCRAt: make([]byte, 32)}
	for i, r := range lg.Records() {
		if r.SandboxID() == req.GetSandboxId() {
			v.Sandbox = append(v.Sandbox, store.PrefixRecord{RecNum: r.RecNum, SandboxID: r.SandboxID(), Digest: r.DigestFor(measure.SHA256), PCR: steps[i], End: r.IsEnd()})
		}
	}
	return v
}

// TestAttestRandomFields sends requests with one field replaced by random
// bytes through the whole server (store included): never a server error,
// and a good request afterwards still passes.
func TestAttestRandomFields(t *testing.T) {
	p := newInproc(t)
	ctx := context.Background()
	r := mrand.New(mrand.NewPCG(1, 2))
	n := 300
	if testing.Short() {
		n = 50
	}
	for i := 0; i < n; i++ {
		field := uint8(r.IntN(10))
		data := make([]byte, r.IntN(200))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		req := p.request(t)
		mutateField(req, field, data)
		_, err := p.srv.Attest(ctx, req)
		switch status.Code(err) {
		case codes.Internal, codes.Unknown:
			t.Fatalf("field %d: %v", field, err)
		}
	}
	if r, err := p.srv.Attest(ctx, p.request(t)); err != nil || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("good request: %v %v", err, r)
	}
}

// FuzzPreflightRequest feeds arbitrary request bytes through validation and,
// when they pass, through the policy's preflight: only InvalidArgument or a
// verdict may come out, never a panic.
func FuzzPreflightRequest(f *testing.F) {
	pol, err := policy.Parse("test.yaml", []byte(testPolicyYAML(testPolicyName, testKernel)), policy.LoadOptions{})
	if err != nil {
		f.Fatal(err)
	}
	set, err := policy.NewSet(pol)
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := proto.Marshal(&bulwarkv1.PreflightRequest{NodeId: "sha256:" + strings.Repeat("ab", 32), Policy: testPolicyName,
		Kernel: testKernel, Initrd: testInitrd, Image: testImage, ImageConfig: testConfig, Cmdline: testCmdline,
		Args: []string{"/bin/sh"}, Signatures: []*bulwarkv1.ArtifactSignature{{Artifact: "image", Signature: []byte{0x30, 1, 2}, Payload: []byte("{}")}}})
	f.Add(seed)
	seed, _ = proto.Marshal(&bulwarkv1.PreflightRequest{NodeId: "sha256:" + strings.Repeat("ab", 32), Policy: testPolicyName,
		Kernel: testKernel, Cmdline: testCmdline, EnvKeys: []string{"A", "B"}, EnvDigest: measure.EnvDigest(measure.SHA256, []string{"A=1", "B=2"}),
		WorkingDir: "/srv", User: "app:1000", Network: "user", Ports: []string{"127.0.0.1:8080:80/tcp"},
		Volumes: []string{"tmpfs:/scratch:0", "ro:/data:" + testImage}})
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &bulwarkv1.PreflightRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		if err := validatePreflight(req); err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("validation: %v", err)
			}
			return
		}
		ev := policy.Evidence{NodeID: req.GetNodeId(), Signatures: artifactSignatures(req.GetSignatures()), Time: time.Now(),
			Event: measure.LaunchEvent{Policy: req.GetPolicy(), Kernel: req.GetKernel(), Initrd: req.GetInitrd(), Image: req.GetImage(),
				Cmdline: req.GetCmdline(), CmdlineDigest: measure.DigestCmdline(measure.SHA256, req.GetCmdline()), Args: req.GetArgs(),
				EnvKeys: req.GetEnvKeys(), EnvDigest: req.GetEnvDigest(), WorkingDir: req.GetWorkingDir(), User: req.GetUser(),
				Network: req.GetNetwork(), Ports: req.GetPorts(), Volumes: req.GetVolumes()}}
		// What validation lets through is an event the log could hold.
		ev.Event.SandboxID = "sb"
		if err := ev.Event.Validate(); err != nil {
			for _, f := range []string{"env_keys", "env_digest", "working_dir", "user", "network", "ports", "volumes"} {
				if strings.Contains(err.Error(), "launch event: "+f) {
					t.Fatalf("a validated request makes an invalid event: %v", err)
				}
			}
		}
		if v := set.Preflight(context.Background(), ev); v.Allow && len(v.Secrets) > 0 {
			t.Fatal("preflight granted secrets")
		}
	})
}

// Attestation ids are valid as Release expects them, distinct, and sort by
// the time they were issued (the store's index relies on it).
func TestAttestationIDOrder(t *testing.T) {
	s := &Server{rand: rand.Reader}
	t0 := time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)
	var prev string
	seen := map[string]bool{}
	for i := range 200 {
		id, err := s.attestationID(t0.Add(time.Duration(i/4) * time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if err := validateAttestationID("attestation_id", id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("id %s issued twice", id)
		}
		seen[id] = true
		if i%4 == 0 && id <= prev {
			t.Fatalf("id %s issued after %s sorts before it", id, prev)
		}
		if !strings.HasPrefix(id, fmt.Sprintf("att-%012x", t0.Add(time.Duration(i/4)*time.Millisecond).UnixMilli())) {
			t.Fatalf("id %s does not start with the time in ms", id)
		}
		prev = id
	}
}
