package softtpm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// Artifacts are the measurements of the workload a simulated host launches:
// digests ("sha256:<hex>") and the kernel command line. SimulatedArtifacts
// gives a fixed set, so that one policy admits every simulated host.
type Artifacts struct {
	Kernel, Initrd, Cmdline, Image, ImageConfig string
	Args                                        []string
}

// SimulatedArtifacts returns the fixed artifacts of the load generator's
// simulated workload: the digests of fixed strings standing for a kernel,
// an initrd, an OCI manifest and its config.
func SimulatedArtifacts() Artifacts {
	d := func(s string) string { return measure.DigestBytes(measure.SHA256, []byte(s)) }
	return Artifacts{
		Kernel:      d("bulwark-load simulated kernel v1"),
		Initrd:      d("bulwark-load simulated initrd v1"),
		Cmdline:     "console=ttyS0 panic=-1 bulwark.load=1",
		Image:       d("bulwark-load simulated image manifest v1"),
		ImageConfig: d("bulwark-load simulated image config v1"),
	}
}

// Host is a simulated launcher host: a TPM and its launch event log.
// Safe for concurrent use.
type Host struct {
	TPM       *TPM
	LaunchPCR int

	mu  sync.Mutex
	log measure.Log
	enc []byte // the encoded log, kept in step with log
}

// NewHost wraps t; launchPCR 0 means limits.DefaultLaunchPCR.
func NewHost(t *TPM, launchPCR int) *Host {
	if launchPCR == 0 {
		launchPCR = limits.DefaultLaunchPCR
	}
	return &Host{TPM: t, LaunchPCR: launchPCR}
}

// Launch is one simulated sandbox launch: its recorded event and the guest
// agent's ephemeral key, which opens the secrets released to it.
type Launch struct {
	Event    measure.LaunchEvent
	GuestKey *wrap.PrivateKey
}

// Launch records a new sandbox as the launcher does: a random 128-bit
// sandbox id, a fresh guest key (enclave/wrap), a launch event for the
// artifacts under the named policy, appended to the host's CEL launch log
// with its digest extended into the launch PCR.
func (h *Host) Launch(a Artifacts, policy string, now time.Time) (*Launch, error) {
	key, err := wrap.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("softtpm: launch: %w", err)
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("softtpm: launch: sandbox id: %w", err)
	}
	ev := measure.LaunchEvent{
		SandboxID:      hex.EncodeToString(id[:]),
		Policy:         policy,
		Kernel:         a.Kernel,
		Initrd:         a.Initrd,
		Cmdline:        a.Cmdline,
		CmdlineDigest:  measure.DigestCmdline(measure.SHA256, a.Cmdline),
		Image:          a.Image,
		ImageConfig:    a.ImageConfig,
		Args:           a.Args,
		GuestPublicKey: key.PublicKey(),
		Time:           now.UTC(),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err = h.log.Append(&ev, h.LaunchPCR, []measure.Alg{measure.SHA256}, func(alg measure.Alg, pcr int, digest []byte) error {
		if alg != measure.SHA256 {
			return fmt.Errorf("softtpm has only a SHA-256 bank, not %s", alg)
		}
		return h.TPM.Extend(pcr, digest)
	})
	if err != nil {
		return nil, fmt.Errorf("softtpm: launch: %w", err)
	}
	h.enc = h.log.Encode()
	return &Launch{Event: ev, GuestKey: key}, nil
}

// Log returns the encoded launch event log (CEL), as sent to attestd.
func (h *Host) Log() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return clone(h.enc)
}

// Evidence is what a host sends in AttestRequest for one nonce.
type Evidence struct {
	Quote, Signature []byte
	PCRs             map[int][]byte
	Log              []byte
}

// Attest quotes pcrs with the nonce and returns the quote with the PCR
// values and launch log it covers, read consistently.
func (h *Host) Attest(pcrs []int, nonce []byte) (*Evidence, error) {
	h.mu.Lock() // no launch between reading the log and quoting
	defer h.mu.Unlock()
	q, sig, err := h.TPM.Quote(pcrs, nonce)
	if err != nil {
		return nil, err
	}
	vals, err := h.TPM.ReadPCRs(pcrs)
	if err != nil {
		return nil, err
	}
	return &Evidence{Quote: q, Signature: sig, PCRs: vals, Log: clone(h.enc)}, nil
}
