package launch

import "fmt"

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
