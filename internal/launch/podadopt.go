package launch

import (
	"fmt"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
)

// AdoptContainer is container index of a pod that Adopt took over (its
// sandbox reattached), with what its launch recorded: its launch event's
// id, attestd's verdict on it and its image's digest. It fails when the
// pod's agent did not report that container.
func (l *Launched) AdoptContainer(index int, eventID, attestationID, imageDigest string) (*Container, error) {
	c, err := l.sb.PodContainer(index)
	if err != nil {
		return nil, fmt.Errorf("container %d: %w", index, err)
	}
	return &Container{Index: index, EventID: eventID, AttestationID: attestationID, ImageDigest: imageDigest, c: c, sb: l.sb}, nil
}

// PodState is what a pod VM's launch keeps to add containers (the pod's
// launch event, the node it runs on, its kernel's and initrd's
// signatures), in a form the host service saves beside the pod's record,
// so that a service that takes the pod over after a restart adds
// containers to it as the one that launched it (AdoptPod).
type PodState struct {
	NodeID     string              `json:"node_id"`
	Event      measure.LaunchEvent `json:"event"`
	Signatures []PodSignature      `json:"signatures,omitempty"`
}

// PodSignature is a signature of the pod's kernel or initrd, as its
// launch sent it to attestd.
type PodSignature struct {
	Artifact  string `json:"artifact"`
	Signature []byte `json:"signature"`
	Payload   []byte `json:"payload,omitempty"`
}

// PodState is the state of a pod VM's launch (nil for a sandbox that is
// not a pod).
func (l *Launched) PodState() *PodState {
	if l.pod == nil {
		return nil
	}
	st := &PodState{NodeID: l.pod.nodeID, Event: l.pod.event}
	for _, s := range l.pod.sigs {
		st.Signatures = append(st.Signatures, PodSignature{Artifact: s.GetArtifact(), Signature: s.GetSignature(), Payload: s.GetPayload()})
	}
	return st
}

// AdoptPod is Adopt for a pod VM whose launch state st the previous host
// service saved: containers can be added to it (o: what AddContainer
// needs of a launch's options — HostTPM, StateDir, PCR, Attestd, Policy,
// Signers, Logger, ReattestInterval). The pod's first container was
// started by the launch; the slots of the containers the agent reported
// (the sandbox's PodContainers) stay taken until they are removed.
func AdoptPod(sb *kvm.Sandbox, res Result, o Options, st *PodState) (*Launched, error) {
	if st == nil || st.NodeID == "" || st.Event.SandboxID != res.SandboxID {
		return nil, fmt.Errorf("the pod's saved launch state is not pod %s's", res.SandboxID)
	}
	if o.StopGrace <= 0 {
		o.StopGrace = DefaultStopGrace
	}
	l := &Launched{o: o, sb: sb, res: &res, pod: &podLaunch{nodeID: st.NodeID, event: st.Event, first: true}}
	for _, s := range st.Signatures {
		l.pod.sigs = append(l.pod.sigs, &bulwarkv1.ArtifactSignature{Artifact: s.Artifact, Signature: s.Signature, Payload: s.Payload})
	}
	n := sb.PodSlots()
	for _, i := range sb.PodContainers() {
		l.pod.hold(n, i)
	}
	return l, nil
}
