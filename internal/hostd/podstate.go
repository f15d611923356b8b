package hostd

import (
	"crypto"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/signing"
)

// A pod VM's launch state (podStateFile, beside its record): what adding
// containers to it needs once the service that launched it is gone — its
// launch event, node and kernel/initrd signatures (launch.PodState) and
// the keys its launch trusted for signatures (the request's signers). A
// restarted service takes the pod over with it (launch.AdoptPod) and
// adds containers as the first one did.
const (
	podStateFile = "pod.json"
	// maxPodStateFile bounds the file read back at a takeover.
	maxPodStateFile = 1 << 20
)

type podStateRecord struct {
	Launch  *launch.PodState `json:"launch"`
	Signers [][]byte         `json:"signers,omitempty"` // PEM public keys
}

// savePodState writes pod l's launch state into dir.
func savePodState(dir string, l *launch.Launched, signers [][]byte) error {
	b, err := json.MarshalIndent(podStateRecord{Launch: l.PodState(), Signers: signers}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, podStateFile), append(b, '\n'), 0o600)
}

// adoptPod is the Launched of pod r taken over (kb) from the launch
// state saved in dir, with the service's TPM, attestd and settings: one
// that adds containers as the launch did.
func (s *Service) adoptPod(dir string, kb *kvm.Sandbox, res launch.Result, r *bulwarkv1.Sandbox) (*launch.Launched, error) {
	b, err := fsutil.ReadFileLimit(filepath.Join(dir, podStateFile), maxPodStateFile)
	if err != nil {
		return nil, err
	}
	var rec podStateRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", podStateFile, err)
	}
	var signers []crypto.PublicKey
	for i, pem := range rec.Signers {
		pub, err := signing.LoadVerifier(pem)
		if err != nil {
			return nil, fmt.Errorf("%s: signer %d: %w", podStateFile, i, err)
		}
		signers = append(signers, pub)
	}
	o := launch.Options{
		Pod: true, Policy: r.GetPolicy(), Signers: signers, StopGrace: time.Duration(r.GetStopTimeoutSeconds()) * time.Second,
		SandboxID: r.GetId(), StateDir: s.cfg.StateDir, HostTPM: s.cfg.TPM, RunDir: dir,
		Attestd: s.cfg.Attestd, PCR: s.cfg.PCR, Agent: s.cfg.Agent, Logger: s.cfg.Logger, ReattestInterval: s.cfg.ReattestInterval,
	}
	return launch.AdoptPod(kb, res, o, rec.Launch)
}
