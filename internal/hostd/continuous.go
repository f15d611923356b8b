package hostd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
)

// Continuous attestation (docs/daemon.md "Continuous attestation"): every
// ReattestInterval the service attests its host again with one quote for
// all its running sandboxes, and it keeps attestd's WatchNode stream open
// (reconnecting with backoff), applying each decision to the sandbox it
// names: a revocation removes the secrets from the guest and then stops
// the workload or lets it run (the policy's on_revoke), a rotation
// replaces secret files in the guest.

// DefaultReattestInterval is 'launcher daemon --reattest-interval”s default.
const DefaultReattestInterval = 60 * time.Second

// watchSeqFile keeps, in the state directory, the last decision applied:
// a restarted service asks attestd for those after it.
const watchSeqFile = "watch.seq"

// Bounds of the watch stream's reconnection backoff.
const (
	watchBackoffMin = 200 * time.Millisecond
	watchBackoffMax = 30 * time.Second
)

// maxEndedPerReattest is how many ended sandboxes one re-attestation
// names (attestd's limit); more wait for the next.
const maxEndedPerReattest = 1024

// applyTimeout bounds the guest's answer to one decision.
const applyTimeout = 10 * time.Second

// startContinuous starts the re-attestation and watch loops, until
// Shutdown. Their goroutines are not in s.wg: they end with s.ctx.
func (s *Service) startContinuous() error {
	client, err := attestclient.Dial(s.cfg.Attestd)
	if err != nil {
		return err
	}
	h, err := launch.NewHost(s.ctx, s.cfg.TPM, s.cfg.StateDir, s.cfg.PCR, client)
	if err != nil {
		client.Close()
		return err
	}
	s.loops.Add(2)
	go func() {
		defer s.loops.Done()
		s.reattestLoop(h)
	}()
	go func() {
		defer s.loops.Done()
		s.watchLoop(h)
		client.Close()
	}()
	return nil
}

// running returns the running sandboxes (their workload started).
func (s *Service) running() []*sandbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*sandbox
	for _, sb := range s.sandboxes {
		sb.mu.Lock()
		if sb.launched != nil {
			out = append(out, sb)
		}
		sb.mu.Unlock()
	}
	return out
}

// reattestLoop re-attests every interval.
func (s *Service) reattestLoop(h *launch.Host) {
	t := time.NewTicker(s.cfg.ReattestInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Reattest(s.ctx, h); err != nil && s.ctx.Err() == nil {
			s.cfg.Logger.Warn("re-attestation failed; attestd reports the sandboxes stale if none passes within twice the interval", "err", err)
		}
	}
}

// sandboxEnded notes, for the next re-attestation, that a sandbox that
// ran has ended: attestd forgets it then.
func (s *Service) sandboxEnded(id string) {
	if s.cfg.ReattestInterval <= 0 {
		return
	}
	s.mu.Lock()
	s.ended = append(s.ended, id)
	s.mu.Unlock()
}

// Reattest attests the host again now for its running sandboxes, telling
// attestd of those that ended since the last time (none of either:
// nothing to do), and records each one's verdict.
func (s *Service) Reattest(ctx context.Context, h *launch.Host) error {
	sbs := s.running()
	s.mu.Lock()
	ended := slices.Clone(s.ended[:min(len(s.ended), maxEndedPerReattest)])
	s.mu.Unlock()
	if len(sbs) == 0 && len(ended) == 0 {
		return nil
	}
	// Each sandbox's own launch event, and a pod's running added
	// containers' (each has a launch event of its own).
	var ids []string
	of := map[string]*sandbox{}
	for _, sb := range sbs {
		id := sb.snapshot().GetId()
		ids = append(ids, id)
		of[id] = sb
		for _, ev := range sb.runningContainerEvents() {
			ids = append(ids, ev)
			of[ev] = sb
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReattestInterval)
	defer cancel()
	r, err := h.Reattest(ctx, ids, ended, s.cfg.ReattestInterval)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.ended = slices.DeleteFunc(s.ended, func(id string) bool { return slices.Contains(ended, id) })
	s.mu.Unlock()
	now := time.Now().UnixMilli()
	// A sandbox's verdict is a deny if its own event's or any of its
	// containers' is.
	verdicts := map[*sandbox]string{}
	for i, v := range r.GetSandboxes() {
		if i >= len(ids) || v.GetSandboxId() != ids[i] {
			break
		}
		sb := of[ids[i]]
		if v.GetVerdict() == bulwarkv1.Verdict_VERDICT_ALLOW {
			if verdicts[sb] == "" {
				verdicts[sb] = "allow"
			}
			continue
		}
		verdicts[sb] = "deny"
		s.cfg.Logger.Warn("re-attestation denied", "sandbox", sb.snapshot().GetId(), "event", ids[i], "reasons", strings.Join(v.GetReasons(), "; "))
	}
	for sb, verdict := range verdicts {
		sb.update(s.cfg.Logger, func(info *bulwarkv1.Sandbox) {
			info.LastVerdict, info.LastVerdictUnixMs = verdict, now
		})
	}
	s.cfg.Logger.Debug("re-attested", "sandboxes", len(ids), "verdict", r.GetVerdict())
	return nil
}

// watchLoop keeps the watch stream open: on any error it waits (doubling
// from watchBackoffMin to watchBackoffMax, reset by a stream that opened)
// and opens it again from the last decision applied.
func (s *Service) watchLoop(h *launch.Host) {
	backoff := watchBackoffMin
	for {
		opened, err := s.watchOnce(h)
		if s.ctx.Err() != nil {
			return
		}
		if opened {
			backoff = watchBackoffMin
		}
		s.cfg.Logger.Warn("attestd watch stream ended; reconnecting", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// watchOnce opens the stream after the last decision applied and applies
// decisions until it ends. opened says whether attestd accepted it.
func (s *Service) watchOnce(h *launch.Host) (opened bool, err error) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	after := s.watchSeq()
	st, err := h.Watch(ctx, after)
	if err != nil {
		return false, err
	}
	for {
		d, err := st.Recv()
		if err != nil {
			return opened, err
		}
		if !opened {
			opened = true
			s.cfg.Logger.Info("watching attestd's decisions", "node", h.NodeID(), "after", after)
		}
		if d.GetHeartbeat() {
			continue
		}
		s.apply(d)
		if err := s.saveWatchSeq(d.GetSeq()); err != nil {
			s.cfg.Logger.Error("saving the last decision applied", "err", err)
		}
	}
}

// apply carries one decision to the sandbox it names, if it runs here.
func (s *Service) apply(d *bulwarkv1.NodeDecision) {
	log := s.cfg.Logger.With("sandbox", d.GetSandboxId(), "seq", d.GetSeq())
	sb, container := s.decisionSandbox(d.GetSandboxId())
	if container != "" {
		// A decision on a container's launch event is its pod's: the
		// container shares the pod's guest and secrets.
		log = log.With("pod", sb.snapshot().GetId(), "container", container)
	}
	var l *launch.Launched
	if sb != nil {
		sb.mu.Lock()
		l = sb.launched
		sb.mu.Unlock()
	}
	if l == nil {
		log.Info("attestd decision for a sandbox not running here; nothing to do", "kind", d.GetKind())
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, applyTimeout)
	defer cancel()
	switch d.GetKind() {
	case bulwarkv1.NodeDecision_KIND_REVOKE:
		sb.mu.Lock()
		ending := sb.ending
		sb.mu.Unlock()
		if ending == measure.EndRevoked {
			log.Info("sandbox already revoked and ending; decision passed over")
			return
		}
		var names []string
		for _, x := range d.GetSecrets() {
			names = append(names, x.GetName())
		}
		reason := strings.Join(d.GetReasons(), "; ")
		if container != "" {
			reason = "container " + container + ": " + reason
		}
		if len(names) == 0 || d.GetAction() == "stop" { // said before the workload ends of it
			sb.update(s.cfg.Logger, func(info *bulwarkv1.Sandbox) { info.Revoked = reason })
		}
		if d.GetAction() == "stop" {
			sb.endAs(measure.EndRevoked)
		}
		removed, err := l.Sandbox().Revoke(ctx, d.GetAction(), names, launch.DefaultStopGrace)
		sb.update(s.cfg.Logger, func(info *bulwarkv1.Sandbox) {
			if len(names) == 0 {
				info.Secrets = nil
			} else {
				info.Secrets = slices.DeleteFunc(info.Secrets, func(n string) bool { return slices.Contains(names, n) })
			}
		})
		if err != nil {
			// The guest did not confirm: the secrets may still be there.
			// Nothing it holds is trusted any more: end it.
			log.Error("revocation not confirmed by the guest; stopping the sandbox", "err", err)
			sb.endAs(measure.EndRevoked)
			l.Sandbox().Abort("revoked by attestd: " + reason)
			return
		}
		log.Warn("sandbox revoked by attestd: secrets removed from the guest", "removed", removed, "action", d.GetAction(), "reasons", reason)
	case bulwarkv1.NodeDecision_KIND_ROTATE:
		secrets := make([]kvm.Secret, 0, len(d.GetSecrets()))
		for _, x := range d.GetSecrets() {
			secrets = append(secrets, kvm.Secret{Name: x.GetName(), Wrapped: x.GetWrapped()})
		}
		if err := l.Sandbox().Rotate(ctx, secrets); err != nil {
			log.Error("secret rotation failed", "err", err)
			return
		}
		log.Info("secrets rotated in the guest", "count", len(secrets))
	default:
		log.Warn("unknown decision from attestd; ignored", "kind", d.GetKind())
	}
}

func (s *Service) watchSeq() uint64 {
	b, err := os.ReadFile(filepath.Join(s.cfg.StateDir, watchSeqFile))
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func (s *Service) saveWatchSeq(seq uint64) error {
	return fsutil.WriteFileAtomic(filepath.Join(s.cfg.StateDir, watchSeqFile), []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600)
}

// decisionSandbox is the sandbox an attestd decision about launch event id
// is for: the sandbox of that id, or the pod one of whose added
// containers has that launch event (container: its name); nil when none
// is known here.
func (s *Service) decisionSandbox(id string) (sb *sandbox, container string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil || id == "" {
		return sb, ""
	}
	for _, sb := range s.sandboxes {
		sb.mu.Lock()
		for _, c := range sb.info.GetContainers() {
			if c.GetEventId() == id {
				sb.mu.Unlock()
				return sb, c.GetName()
			}
		}
		sb.mu.Unlock()
	}
	return nil, ""
}

// runningContainerEvents lists the launch events of a pod's added
// containers that run (none for another sandbox).
func (sb *sandbox) runningContainerEvents() []string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	var out []string
	for _, c := range sb.info.GetContainers() {
		if c.GetStatus() == containerRunning && c.GetEventId() != "" && c.GetEventId() != sb.info.GetId() {
			out = append(out, c.GetEventId())
		}
	}
	return out
}
