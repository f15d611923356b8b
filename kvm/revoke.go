package kvm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// Revoke tells the agent that attestd revoked the sandbox (or the secrets
// named; none: all): the agent removes the secret files from /run/secrets,
// answers, and then acts: channel.RevokeStop stops the workload (SIGTERM,
// SIGKILL after grace), channel.RevokeWipeSecrets lets it run on. It
// returns, once the agent answered, how many files it removed. It fails
// when the workload is not running.
func (s *Sandbox) Revoke(ctx context.Context, action string, names []string, grace time.Duration) (int, error) {
	msg := channel.Revoke{Action: action, Names: names, GraceSeconds: int((grace + time.Second - 1) / time.Second)}
	if err := msg.Validate(); err != nil {
		return 0, fmt.Errorf("kvm: %w", err)
	}
	d, err := s.control(ctx, channel.TypeRevoke, func(seq uint64) any { msg.Seq = seq; return msg })
	if err != nil {
		return 0, fmt.Errorf("kvm: revoke: %w", err)
	}
	if d.Error != "" {
		return d.Removed, fmt.Errorf("kvm: revoke: the guest: %s", sanitize(d.Error))
	}
	return d.Removed, nil
}

// Rotate sends new versions of secrets the guest holds (wrapped for this
// sandbox's id, as at start); the agent replaces each file atomically. It
// returns once the agent answered.
func (s *Sandbox) Rotate(ctx context.Context, secrets []Secret) error {
	msg := channel.Rotate{Secrets: secrets}
	if err := msg.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	d, err := s.control(ctx, channel.TypeRotate, func(seq uint64) any { msg.Seq = seq; return msg })
	if err != nil {
		return fmt.Errorf("kvm: rotate: %w", err)
	}
	if d.Error != "" {
		return fmt.Errorf("kvm: rotate: the guest: %s", sanitize(d.Error))
	}
	return nil
}

// control sends a REVOKE or ROTATE with a fresh sequence number while the
// workload runs and waits for the agent's DONE.
func (s *Sandbox) control(ctx context.Context, t channel.Type, msg func(seq uint64) any) (channel.Done, error) {
	s.mu.Lock()
	if !s.runningLocked() {
		s.mu.Unlock()
		return channel.Done{}, errors.New("the workload is not running")
	}
	s.pingSeq++ // one sequence for PING and these: each answer names its own
	seq := s.pingSeq
	if s.dones == nil {
		s.dones = map[uint64]chan channel.Done{}
	}
	ch := make(chan channel.Done, 1)
	s.dones[seq] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.dones, seq)
		s.mu.Unlock()
	}()
	if err := s.write(t, msg(seq), 2*time.Second); err != nil {
		return channel.Done{}, err
	}
	select {
	case d := <-ch:
		return d, nil
	case <-s.exited:
		return channel.Done{}, errors.New("the sandbox ended")
	case <-ctx.Done():
		return channel.Done{}, ctx.Err()
	}
}

// handleDone takes the agent's DONE. s.mu is held.
func (s *Sandbox) handleDone(body []byte) error {
	var d channel.Done
	if err := channel.Decode(channel.TypeDone, body, &d); err != nil {
		return err
	}
	ch, ok := s.dones[d.Seq]
	if !ok {
		return fmt.Errorf("DONE %d answers no REVOKE or ROTATE", d.Seq)
	}
	delete(s.dones, d.Seq)
	if len(d.Error) > 4096 {
		d.Error = d.Error[:4096] + "..."
	}
	ch <- d
	return nil
}
