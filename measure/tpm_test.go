package measure

import (
	"bytes"
	"testing"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// TestReplayMatchesTPM extends launch events into a real TPM 2.0 (Microsoft's
// reference implementation, in process) through Log.Append and checks that
// the PCRs the TPM computed equal Replay, in both banks.
func TestReplayMatchesTPM(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Skipf("TPM simulator unavailable (needs CGO_ENABLED=1 and OpenSSL headers: apt-get install libssl-dev): %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	ext := func(a Alg, pcr int, d []byte) error {
		alg := tpm2.AlgSHA256
		if a == SHA384 {
			alg = tpm2.AlgSHA384
		}
		return tpm2.PCRExtend(sim, tpmutil.Handle(pcr), alg, d, "")
	}
	l := &Log{}
	for _, id := range []string{"first", "second", "third"} {
		if _, err := l.Append(testEvent(id), limits.DefaultLaunchPCR, []Alg{SHA256, SHA384}, ext); err != nil {
			t.Fatal(err)
		}
	}
	enc := l.Encode()
	for _, tc := range []struct {
		a   Alg
		alg tpm2.Algorithm
	}{{SHA256, tpm2.AlgSHA256}, {SHA384, tpm2.AlgSHA384}} {
		got, err := tpm2.ReadPCR(sim, limits.DefaultLaunchPCR, tc.alg)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseLog(enc)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Replay(parsed, limits.DefaultLaunchPCR, tc.a)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: TPM PCR %d = %x, replay = %x", tc.a, limits.DefaultLaunchPCR, got, want)
		}
		if _, err := VerifyLog(enc, limits.DefaultLaunchPCR, tc.a, got); err != nil {
			t.Fatal(err)
		}
		// A log missing its last record does not explain the TPM's value.
		short := buildLog(t, 0)
		for _, r := range parsed.Records()[:2] {
			short.Append(r.Event, limits.DefaultLaunchPCR, []Alg{SHA256, SHA384}, nil)
		}
		if _, err := VerifyLog(short.Encode(), limits.DefaultLaunchPCR, tc.a, got); err == nil {
			t.Fatal("a truncated log verified against the TPM's PCR")
		}
	}
}
