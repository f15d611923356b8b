package attestd

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// challengeMsg and attestMsg are the two messages of a ChallengeAttest stream.
func challengeMsg(r *bulwarkv1.ChallengeRequest) *bulwarkv1.ChallengeAttestRequest {
	return &bulwarkv1.ChallengeAttestRequest{Step: &bulwarkv1.ChallengeAttestRequest_Challenge{Challenge: r}}
}

func attestMsg(r *bulwarkv1.AttestRequest) *bulwarkv1.ChallengeAttestRequest {
	return &bulwarkv1.ChallengeAttestRequest{Step: &bulwarkv1.ChallengeAttestRequest_Attest{Attest: r}}
}

// TestChallengeAttest drives the ChallengeAttest stream over TLS with a
// real TPM (the reference simulator): a verdict on one call, recorded and
// audited like Attest's, its nonce single use; and every refusal of the
// stream's shape (wrong first or second message, a watch nonce, another
// node or nonce, a host that hangs up between the steps), each of which
// ends the stream with INVALID_ARGUMENT naming the field and records no
// verdict; the unary checks (an unknown node) refuse as they do unary.
func TestChallengeAttest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: "embedded", ekAllow: []string{h.nodeID}})
	c := e.client
	h.enroll(ctx, c)
	ev := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
	h.launch(ev)

	var sent *bulwarkv1.AttestRequest
	ar, err := c.ChallengeAttest(ctx, &bulwarkv1.ChallengeRequest{NodeId: h.nodeID}, func(ch *bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error) {
		sent = h.attestRequest(ctx, ch.GetNonce(), ev.SandboxID)
		return sent, nil
	})
	if err != nil {
		t.Fatalf("ChallengeAttest: %v", err)
	}
	if ar.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW || ar.GetToken() == "" {
		t.Fatalf("verdict %v (reasons %q), token %q: want an allow with a token", ar.GetVerdict(), ar.GetReasons(), ar.GetToken())
	}
	if a, err := e.st.GetAttestation(ctx, ar.GetAttestationId()); err != nil || !a.Allow || a.NodeID != h.nodeID {
		t.Fatalf("stored attestation %+v, %v: want the allow recorded", a, err)
	}
	// The stream's nonce was consumed like Attest's: the same request again
	// is a replay.
	_, err = c.Attest(ctx, sent)
	wantCode(t, err, codes.PermissionDenied, "nonce")

	// Attestations judged or refused by Attest's checks: none of the
	// stream's own refusals reaches them.
	attests := func() (n float64) {
		for _, v := range []string{"allow", "deny", "error"} {
			n += metricValue(t, e.srv.metrics.Attestations.WithLabelValues(v))
		}
		return n
	}
	before := attests()
	otherNode := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name  string
		first *bulwarkv1.ChallengeAttestRequest
		// second is the message sent after the challenge's answer, made
		// with its nonce (nil: the host closes its side instead).
		second func(t *testing.T, nonce []byte) *bulwarkv1.ChallengeAttestRequest
		code   codes.Code
		want   []string
	}{
		{name: "attest first", first: attestMsg(&bulwarkv1.AttestRequest{NodeId: h.nodeID}),
			code: codes.InvalidArgument, want: []string{"challenge:", "first message"}},
		{name: "empty first", first: &bulwarkv1.ChallengeAttestRequest{},
			code: codes.InvalidArgument, want: []string{"challenge:", "first message"}},
		{name: "watch nonce", first: challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID, Watch: true}),
			code: codes.InvalidArgument, want: []string{"challenge.watch"}},
		{name: "unknown node", first: challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: otherNode}),
			code: codes.NotFound, want: []string{"node_id", "not enrolled"}},
		{name: "challenge twice", first: challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID}),
			second: func(*testing.T, []byte) *bulwarkv1.ChallengeAttestRequest {
				return challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID})
			},
			code: codes.InvalidArgument, want: []string{"attest:", "second message"}},
		{name: "another node", first: challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID}),
			second: func(t *testing.T, nonce []byte) *bulwarkv1.ChallengeAttestRequest {
				req := h.attestRequest(ctx, nonce, ev.SandboxID)
				req.NodeId = otherNode
				return attestMsg(req)
			},
			code: codes.InvalidArgument, want: []string{"attest.node_id"}},
		{name: "another nonce", first: challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID}),
			second: func(t *testing.T, _ []byte) *bulwarkv1.ChallengeAttestRequest {
				// A good nonce of the same node, from Challenge: still not
				// this stream's.
				other, _, err := c.Challenge(ctx, h.nodeID)
				if err != nil {
					t.Fatal(err)
				}
				return attestMsg(h.attestRequest(ctx, other, ev.SandboxID))
			},
			code: codes.InvalidArgument, want: []string{"attest.nonce"}},
		{name: "hang up after the challenge", first: challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID}),
			code: codes.InvalidArgument, want: []string{"attest:", "ended before"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := c.Attestation.ChallengeAttest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tc.first); err != nil {
				t.Fatal(err)
			}
			m, err := st.Recv()
			if err == nil {
				if m.GetChallenge() == nil {
					t.Fatalf("first answer %v, want a challenge", m)
				}
				if tc.second == nil {
					err = st.CloseSend()
				} else {
					err = st.Send(tc.second(t, m.GetChallenge().GetNonce()))
				}
				if err != nil {
					t.Fatal(err)
				}
				m, err = st.Recv()
			}
			wantCode(t, err, tc.code, tc.want...)
			if m != nil {
				t.Fatalf("answer %v with the refusal", m)
			}
		})
	}
	if n := attests(); n != before {
		t.Fatalf("attestations counted %v → %v: a refused stream judged something", before, n)
	}
}

// TestChallengeAttestBounds: the stream's challenge is rate limited per
// peer as Challenge is (it hands out a nonce to anyone), and a host that
// never sends its attest request is cut off after the request timeout
// instead of holding a handler.
func TestChallengeAttestBounds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: "embedded", ekAllow: []string{h.nodeID}, requestTimeout: time.Second,
		peerRate: 0.001, peerBurst: 3})
	h.enroll(ctx, e.client) // Enroll and ActivateCredential: 2 of the burst

	st, err := e.client.Attestation.ChallengeAttest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(challengeMsg(&bulwarkv1.ChallengeRequest{NodeId: h.nodeID})); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || m.GetChallenge() == nil {
		t.Fatalf("challenge: %v %v", m, err)
	}
	// No attest request: attestd ends the stream once the request timeout
	// runs out (Canceled or DeadlineExceeded, as for a unary request that
	// never arrives).
	_, err = st.Recv()
	if code := status.Code(err); code != codes.Canceled && code != codes.DeadlineExceeded {
		t.Fatalf("a stream whose attest request never came ended with %v, want the server to cancel it", err)
	}

	// The burst is spent: the next stream's challenge is refused.
	_, err = e.client.ChallengeAttest(ctx, &bulwarkv1.ChallengeRequest{NodeId: h.nodeID}, func(*bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error) {
		t.Fatal("build called after a refused challenge")
		return nil, nil
	})
	var se *attestclient.StepError
	if !errors.As(err, &se) || se.Step != "challenge" {
		t.Fatalf("err %v, want a refused challenge step", err)
	}
	wantCode(t, se.Err, codes.ResourceExhausted, "rate limit")
}

// olderAttestd is attestd as it was before ChallengeAttest: every other
// RPC is the real server's.
type olderAttestd struct{ *Server }

func (olderAttestd) ChallengeAttest(grpc.BidiStreamingServer[bulwarkv1.ChallengeAttestRequest, bulwarkv1.ChallengeAttestResponse]) error {
	return status.Error(codes.Unimplemented, "method ChallengeAttest not implemented")
}

// TestChallengeAttestFallback: a client of an attestd without
// ChallengeAttest gets its verdict by Challenge and Attest instead, and
// asks by them from then on.
func TestChallengeAttestFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: "embedded", ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	ev := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
	h.launch(ev)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	bulwarkv1.RegisterAttestationServer(gs, olderAttestd{e.srv})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	c, err := attestclient.Dial(attestclient.Options{Addr: lis.Addr().String(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	for i := range 2 {
		ar, err := c.ChallengeAttest(ctx, &bulwarkv1.ChallengeRequest{NodeId: h.nodeID}, func(ch *bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error) {
			return h.attestRequest(ctx, ch.GetNonce(), ev.SandboxID), nil
		})
		if err != nil || ar.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("attestation %d through an older attestd: %v %v", i, ar, err)
		}
	}
	// The stream alone (bulwark-load's) does not fall back.
	_, err = attestclient.ChallengeAttest(ctx, c.Attestation, &bulwarkv1.ChallengeRequest{NodeId: h.nodeID}, nil)
	wantCode(t, err, codes.Unimplemented)
}
