package load

import (
	"context"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"google.golang.org/grpc"
)

// tokenlessAttestd answers every Attest with an allow and no token, as a
// faulty (or older) attestd that ignores a request for one would; only the
// two calls attestOne makes are implemented.
type tokenlessAttestd struct {
	bulwarkv1.AttestationClient
	asked []bool // OmitToken of each Attest request
}

func (c *tokenlessAttestd) Challenge(context.Context, *bulwarkv1.ChallengeRequest, ...grpc.CallOption) (*bulwarkv1.ChallengeResponse, error) {
	return &bulwarkv1.ChallengeResponse{Nonce: make([]byte, 32)}, nil
}

func (c *tokenlessAttestd) Attest(_ context.Context, req *bulwarkv1.AttestRequest, _ ...grpc.CallOption) (*bulwarkv1.AttestResponse, error) {
	c.asked = append(c.asked, req.GetOmitToken())
	return &bulwarkv1.AttestResponse{Verdict: bulwarkv1.Verdict_VERDICT_ALLOW, AttestationId: "att-1"}, nil
}

// An allow without the token the host asked for is an error; without
// --tokens the host asks for none (omit_token) and the same answer is fine.
func TestAttestOneWantsTheTokenItAskedFor(t *testing.T) {
	tpm, err := softtpm.New(softtpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hst := &host{h: softtpm.NewHost(tpm, limits.DefaultLaunchPCR), nodeID: "sha256:00"}
	if hst.launch, err = hst.h.Launch(softtpm.SimulatedArtifacts(), DefaultPolicy, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := Config{RequestTimeout: 10 * time.Second}
	pcrs := []int{limits.DefaultLaunchPCR}
	c := &tokenlessAttestd{}
	if o := attestOne(context.Background(), cfg, Drive{Tokens: true, TwoCalls: true}, c, hst, pcrs, nil); o.fail != "attest: allow without the token asked for" {
		t.Errorf("with tokens: fail = %q, want the missing token reported", o.fail)
	}
	if o := attestOne(context.Background(), cfg, Drive{TwoCalls: true}, c, hst, pcrs, nil); o.fail != "" {
		t.Errorf("without tokens: fail = %q (%v)", o.fail, o.err)
	}
	if len(c.asked) != 2 || c.asked[0] || !c.asked[1] {
		t.Errorf("omit_token sent = %v, want [false true]", c.asked)
	}
}
