// Package hostd is the launcher's host service ('launcher daemon'): one
// long-lived process per host that owns the host TPM, the launch log, the
// loaded VM templates and every sandbox on the host, and serves the Host
// API (api/bulwark/v1/host.proto) on a local unix socket. Each launch is
// launch.Start's, as in a one-shot 'launcher run'; the sandbox then lives
// in the service, its output in a log file, its state in a record on disk
// (docs/daemon.md).
package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Config configures the host service.
type Config struct {
	// StateDir is the launcher's state directory (statedir): the launch
	// log, templates, and SandboxesDir.
	StateDir string
	// Attestd is how every launch reaches attestd.
	Attestd attestclient.Options
	// TPM is the host TPM, open for the service's lifetime.
	TPM *tpm.TPM
	// PCR is the launch PCR (0: limits.DefaultLaunchPCR).
	PCR int
	// Agent is the guest agent binary for the default base initramfs
	// ("": bulwark-agent beside the launcher).
	Agent string
	// LogLimit bounds each sandbox's output log (0: DefaultLogLimit).
	LogLimit int64
	// ReattestInterval, when set, is how often the service attests its
	// running sandboxes again (one quote for all), and turns continuous
	// attestation on: launches ask attestd to keep their state, and the
	// service applies attestd's decisions (continuous.go). 0: off.
	ReattestInterval time.Duration
	Logger           *slog.Logger
}

// Service implements the Host API.
type Service struct {
	bulwarkv1.UnimplementedHostServer
	cfg       Config
	templates launch.TemplateCache

	// ctx ends at Shutdown: launches in progress abort. stopAll ends at
	// a Shutdown that stops the workloads (gracefully), detachAll at one
	// that leaves them running for the next service to take over.
	ctx                  context.Context
	cancel               context.CancelFunc
	stopAll, detachAll   context.Context
	stopAllF, detachAllF context.CancelFunc
	wg                   sync.WaitGroup

	mu        sync.Mutex
	sandboxes map[string]*sandbox

	loops sync.WaitGroup // the continuous attestation loops (continuous.go)
	ended []string       // sandboxes ended since the last re-attestation (s.mu)
}

// sandbox is one sandbox the service knows.
type sandbox struct {
	dir  string
	log  *outputLog
	done chan struct{} // closed when it has ended (closed at once for one loaded ended)

	mu       sync.Mutex
	info     *bulwarkv1.Sandbox
	launched *launch.Launched         // while running
	abort    context.CancelFunc       // while launching
	ctrs     map[string]*podContainer // a pod's containers by name (pod.go)
	// ending is why the service ends the sandbox (measure.EndStopped,
	// measure.EndRevoked), for its END record; "" when it ends by itself.
	ending string
}

// endAs notes why the service is ending the sandbox (the first reason
// given stands).
func (sb *sandbox) endAs(reason string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.ending == "" {
		sb.ending = reason
	}
}

func (sb *sandbox) snapshot() *bulwarkv1.Sandbox {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return proto.Clone(sb.info).(*bulwarkv1.Sandbox)
}

// update changes the record and saves it.
func (sb *sandbox) update(log *slog.Logger, f func(*bulwarkv1.Sandbox)) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	f(sb.info)
	if err := writeRecord(sb.dir, sb.info); err != nil {
		log.Error("saving the sandbox record", "sandbox", sb.info.GetId(), "err", err)
	}
}

// cgroupSweepAge keeps a cgroup made this recently: a launch (of another
// launcher on this host) makes its group just before QEMU starts in it.
const cgroupSweepAge = time.Minute

// New makes the service and loads the sandboxes a previous one left:
// those still running are taken over (pod VMs with their containers),
// the others reported lost.
func New(cfg Config) (*Service, error) {
	if cfg.StateDir == "" || cfg.TPM == nil {
		return nil, errors.New("hostd: a state directory and an open TPM are required")
	}
	if cfg.LogLimit <= 0 {
		cfg.LogLimit = DefaultLogLimit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	root := SandboxesDir(cfg.StateDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("hostd: %w", err)
	}
	s := &Service{cfg: cfg, sandboxes: map[string]*sandbox{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stopAll, s.stopAllF = context.WithCancel(context.Background())
	s.detachAll, s.detachAllF = context.WithCancel(context.Background())
	records, errs := loadRecords(root)
	for _, err := range errs {
		cfg.Logger.Warn("a sandbox record cannot be read; it is ignored", "err", err)
	}
	var ended []string
	for _, r := range records {
		dir := filepath.Join(root, r.GetId())
		if r.GetStatus() == StatusRunning {
			if err := s.reattach(dir, r); err == nil {
				continue
			}
		}
		done := make(chan struct{})
		close(done)
		sb := &sandbox{dir: dir, log: endedOutputLog(filepath.Join(dir, outputFile)), done: done, info: r}
		if r.GetPod() {
			endContainers(sb, r.GetStatus())
		}
		s.sandboxes[r.GetId()] = sb
		ended = append(ended, r.GetId())
		for _, c := range r.GetContainers() { // a pod's added containers have launch events of their own
			if id := c.GetEventId(); id != "" && id != r.GetId() {
				ended = append(ended, id)
			}
		}
	}
	// Sandbox cgroups a killed launcher or daemon could not remove stay
	// behind empty; the running sandboxes (taken over above) hold theirs.
	if n, err := kvm.SweepCgroups("", cgroupSweepAge); err != nil {
		cfg.Logger.Warn("removing cgroups left by ended sandboxes", "err", err)
	} else if n > 0 {
		cfg.Logger.Info("removed cgroups left by ended sandboxes", "count", n)
	}
	// Every sandbox that no longer runs has its END in the launch log:
	// those lost now, and any whose END a previous service did not write
	// (it stopped first). Those of an earlier boot cycle, or already
	// ended, are passed over (launch.RecordEnd).
	ctx, cancel := context.WithTimeout(context.Background(), endTimeout)
	if n, err := launch.RecordEnd(ctx, cfg.TPM, cfg.StateDir, cfg.PCR, measure.EndLost, ended...); err != nil {
		cfg.Logger.Error("recording the end of sandboxes that no longer run in the launch log", "err", err)
	} else if n > 0 {
		cfg.Logger.Warn("END records written for sandboxes that ended while no host service watched them", "count", n)
	}
	cancel()
	if cfg.ReattestInterval > 0 {
		if err := s.startContinuous(); err != nil {
			s.cancel()
			return nil, fmt.Errorf("hostd: continuous attestation: %w", err)
		}
	}
	return s, nil
}

// reattach takes over a sandbox a previous host service ran (a pod VM
// with its containers: podlife.go), or records it lost (saying why) when
// that cannot be done.
func (s *Service) reattach(dir string, r *bulwarkv1.Sandbox) error {
	id := r.GetId()
	lost := func(why string) error {
		r.Status, r.ExitCode, r.Error, r.EndedUnixMs = StatusLost, -1, why, time.Now().UnixMilli()
		for _, c := range r.GetContainers() { // a pod's: none runs on
			if c.GetStatus() == containerRunning || c.GetStatus() == containerCreated {
				c.Status, c.Error = containerFailed, "its pod VM was lost: "+why
			}
		}
		if err := writeRecord(dir, r); err != nil {
			s.cfg.Logger.Error("saving the sandbox record", "sandbox", id, "err", err)
		}
		s.cfg.Logger.Warn("sandbox lost", "sandbox", id, "why", why)
		return errors.New(why)
	}
	log, err := createOutputLog(filepath.Join(dir, outputFile), s.cfg.LogLimit)
	if err != nil {
		return lost("its output log cannot be opened: " + err.Error())
	}
	cfg := kvm.Config{Name: id, RunDir: dir, Stdout: log.writer(streamStdout), Stderr: log.writer(streamStderr), Logger: s.cfg.Logger}
	var pod *podTakeover
	if r.GetPod() { // its containers' output goes on into their logs
		if pod, err = newPodTakeover(dir, r, s.cfg.LogLimit); err != nil {
			log.end()
			killLeftover(r)
			return lost("its containers' logs cannot be opened (" + err.Error() + "); its QEMU was killed")
		}
		cfg.Pod, cfg.ContainerOutput = true, pod.output
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kb, err := kvm.Reattach(ctx, cfg,
		kvm.Persisted{PID: int(r.GetQemuPid()), StartTime: r.GetQemuStartTime(), CgroupDirs: r.GetCgroupDirs(), Accel: r.GetAccel()})
	if err != nil {
		log.end()
		if pod != nil {
			pod.end()
		}
		if errors.Is(err, kvm.ErrGone) {
			return lost("its QEMU ended while no host service was running")
		}
		killLeftover(r)
		return lost("it could not be taken over after a restart of the host service (" + err.Error() + "); its QEMU was killed")
	}
	res := launch.Result{
		SandboxID: id, Accel: r.GetAccel(), ImageDigest: r.GetImageDigest(), AttestationID: r.GetAttestationId(),
		Policy: r.GetPolicy(), Secrets: r.GetSecrets(), Template: r.GetTemplate(), StartMillis: r.GetStartMs(),
	}
	l := launch.Adopt(kb, res, time.Duration(r.GetStopTimeoutSeconds())*time.Second)
	if pod != nil {
		if pl, err := s.adoptPod(dir, kb, res, r); err != nil {
			s.cfg.Logger.Warn("pod taken over without its launch state: its containers run on, but it takes no new one", "sandbox", id, "err", err)
		} else {
			l = pl
		}
	}
	sb := &sandbox{dir: dir, log: log, done: make(chan struct{}), info: r, launched: l}
	s.sandboxes[id] = sb
	s.wg.Add(1)
	go s.wait(sb, l)
	if pod != nil {
		s.adopt(sb, l, pod)
	}
	s.cfg.Logger.Info("sandbox taken over from the previous host service", "sandbox", id, "qemu_pid", r.GetQemuPid())
	return nil
}

// Shutdown aborts launches in progress and then either stops every
// running workload gracefully (SIGTERM, then its stop timeout) and waits
// for them to end, or, with keep, leaves them running: the service lets
// go of them (their records say running) and the next service takes them
// over. It returns when done, or when ctx ends.
func (s *Service) Shutdown(ctx context.Context, keep bool) error {
	s.mu.Lock() // Run checks s.ctx and joins s.wg under s.mu: none joins after this
	s.cancel()
	s.mu.Unlock()
	if keep {
		s.detachAllF()
	} else {
		s.stopAllF()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.loops.Wait()
		close(done)
	}()
	defer s.templates.Close()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run launches a sandbox and streams its progress until the workload runs.
func (s *Service) Run(req *bulwarkv1.RunRequest, stream bulwarkv1.Host_RunServer) error {
	o, err := runOptions(req)
	if err != nil {
		return err
	}
	// Tracked from here: Shutdown waits for the launch as for the sandbox.
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "the host service is shutting down")
	}
	s.wg.Add(1)
	s.mu.Unlock()
	ended := false
	defer func() {
		if !ended {
			s.wg.Done()
		}
	}()

	id, err := launch.NewSandboxID()
	if err != nil {
		return status.Errorf(codes.Internal, "sandbox id: %v", err)
	}
	dir := filepath.Join(SandboxesDir(s.cfg.StateDir), id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return status.Errorf(codes.Internal, "sandbox directory: %v", err)
	}
	log, err := createOutputLog(filepath.Join(dir, outputFile), s.cfg.LogLimit)
	if err != nil {
		os.RemoveAll(dir)
		return status.Errorf(codes.Internal, "sandbox log: %v", err)
	}
	sb := &sandbox{dir: dir, log: log, done: make(chan struct{}), info: &bulwarkv1.Sandbox{
		Id: id, Status: StatusCreated, Image: req.GetImage(), Policy: req.GetPolicy(), Args: req.GetArgs(),
		CreatedUnixMs: time.Now().UnixMilli(), ExitCode: -1,
	}}
	sb.update(s.cfg.Logger, func(*bulwarkv1.Sandbox) {})
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	s.cfg.Logger.Info("launching", "sandbox", id, "image", req.GetImage(), "policy", req.GetPolicy())

	var sendMu sync.Mutex
	send := func(ev *bulwarkv1.RunEvent) {
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.Send(ev) // a client gone away ends the launch through ctx
	}
	o.SandboxID, o.StateDir, o.HostTPM, o.Templates, o.RunDir = id, s.cfg.StateDir, s.cfg.TPM, &s.templates, dir
	o.Attestd, o.PCR, o.Agent, o.Logger = s.cfg.Attestd, s.cfg.PCR, s.cfg.Agent, s.cfg.Logger
	o.ReattestInterval = s.cfg.ReattestInterval
	o.Stdout, o.Stderr = log.writer(streamStdout), log.writer(streamStderr)
	o.Progress = lineWriter(func(line string) {
		send(&bulwarkv1.RunEvent{Event: &bulwarkv1.RunEvent_Progress{Progress: line}})
	})
	o.Warnings = lineWriter(func(line string) {
		send(&bulwarkv1.RunEvent{Event: &bulwarkv1.RunEvent_Warning{Warning: line}})
	})
	// The launch ends when the client goes away, the service stops, or
	// the sandbox is stopped or removed while it launches.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stopAfter := context.AfterFunc(s.ctx, cancel)
	defer stopAfter()
	sb.mu.Lock()
	sb.abort = cancel
	sb.mu.Unlock()

	l, err := launch.Start(ctx, o)
	if err != nil {
		sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) {
			i.Status, i.Error, i.EndedUnixMs = StatusFailed, err.Error(), time.Now().UnixMilli()
			if l != nil {
				r := l.Result()
				i.Accel, i.Template, i.AttestationId = r.Accel, r.Template, r.AttestationID
			}
		})
		log.end()
		close(sb.done)
		s.cfg.Logger.Warn("launch failed", "sandbox", id, "err", err)
		return launchStatus(id, err)
	}
	r := l.Result()
	sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) {
		i.Status, i.Accel, i.Template, i.AttestationId, i.Secrets = StatusRunning, r.Accel, r.Template, r.AttestationID, r.Secrets
		i.ImageDigest, i.StartMs, i.QemuPid = r.ImageDigest, r.StartMillis, int32(l.Sandbox().PID())
		i.StartedUnixMs = time.Now().UnixMilli()
		p := l.Sandbox().Persisted()
		i.QemuStartTime, i.CgroupDirs, i.StopTimeoutSeconds = p.StartTime, p.CgroupDirs, req.GetStopTimeoutSeconds()
		i.Ports, i.Network, i.Pod = r.Ports, o.Network, o.Pod
	})
	sb.mu.Lock()
	sb.launched, sb.abort = l, nil
	sb.mu.Unlock()
	ended = true // the waiter owns the WaitGroup slot now
	go s.wait(sb, l)
	if o.Pod {
		if err := savePodState(dir, l, req.GetSigners()); err != nil {
			s.cfg.Logger.Warn("saving the pod's launch state: a host service restarted adds no container to it", "sandbox", id, "err", err)
		}
		co, _ := firstContainerStdio(req) // checked by runOptions
		if err := s.firstContainer(ctx, sb, l, co); err != nil {
			return err
		}
	}
	s.cfg.Logger.Info("sandbox running", "sandbox", id, "template", r.Template, "start_ms", r.StartMillis)
	send(&bulwarkv1.RunEvent{Event: &bulwarkv1.RunEvent_Started{Started: sb.snapshot()}})
	return nil
}

// wait waits for a running sandbox to end and records how it ended.
func (s *Service) wait(sb *sandbox, l *launch.Launched) {
	defer s.wg.Done()
	type result struct {
		res *launch.Result
		err error
	}
	ended := make(chan result, 1)
	go func() {
		res, err := l.Wait(s.stopAll) // Shutdown: SIGTERM, the stop timeout, SIGKILL
		ended <- result{res, err}
	}()
	var r result
	select {
	case r = <-ended:
	case <-s.detachAll.Done():
		// Left running: its record stays "running" for the next service.
		l.Sandbox().Detach()
		s.cfg.Logger.Info("sandbox left running for the next host service", "sandbox", sb.snapshot().GetId())
		return
	}
	res, err := r.res, r.err
	l.Close()
	// Its END goes into the launch log before its record says it ended:
	// a service that stops in between finds it lost, and writes it then.
	sb.mu.Lock()
	reason := sb.ending
	sb.mu.Unlock()
	if reason == "" {
		reason = launch.EndReason(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), endTimeout)
	if _, eerr := launch.RecordEnd(ctx, s.cfg.TPM, s.cfg.StateDir, s.cfg.PCR, reason, sb.snapshot().GetId()); eerr != nil {
		s.cfg.Logger.Error("recording the end of the sandbox in the launch log", "sandbox", sb.snapshot().GetId(), "err", eerr)
	}
	cancel()
	sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) {
		i.EndedUnixMs = time.Now().UnixMilli()
		i.ExitCode, i.QemuPeakRssKib = int32(res.ExitCode), res.QEMUPeakRSSKiB
		switch {
		case err == nil:
			i.Status = StatusExited
		case errors.Is(err, launch.ErrInterrupted):
			i.Status, i.Error = StatusExited, "stopped: the host service shut down"
		default:
			i.Status, i.Error = StatusFailed, err.Error()
		}
	})
	sb.mu.Lock()
	sb.launched = nil
	sb.mu.Unlock()
	s.sandboxEnded(sb.snapshot().GetId())
	sb.log.end()
	close(sb.done)
	info := sb.snapshot()
	s.cfg.Logger.Info("sandbox ended", "sandbox", info.GetId(), "status", info.GetStatus(), "exit_code", info.GetExitCode())
}

// find returns the sandbox whose id is id or starts with it.
func (s *Service) find(id string) (*sandbox, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "id: empty (give a sandbox id from 'launcher ps', or a unique prefix of one)")
	}
	if len(id) > 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, status.Errorf(codes.InvalidArgument, "id %q: want a sandbox id (hex digits) or a unique prefix of one", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb := s.sandboxes[id]; sb != nil {
		return sb, nil
	}
	var found []*sandbox
	for k, sb := range s.sandboxes {
		if strings.HasPrefix(k, id) {
			found = append(found, sb)
		}
	}
	switch len(found) {
	case 0:
		return nil, status.Errorf(codes.NotFound, "no sandbox %s ('launcher ps -a' lists them)", id)
	case 1:
		return found[0], nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "id %q: %d sandboxes start with it; give more digits", id, len(found))
}

// ListSandboxes lists running sandboxes, or all with req.All, oldest first.
func (s *Service) ListSandboxes(_ context.Context, req *bulwarkv1.ListSandboxesRequest) (*bulwarkv1.ListSandboxesResponse, error) {
	s.mu.Lock()
	all := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		all = append(all, sb)
	}
	s.mu.Unlock()
	resp := &bulwarkv1.ListSandboxesResponse{}
	for _, sb := range all {
		info := sb.snapshot()
		if req.GetAll() || info.GetStatus() == StatusRunning || info.GetStatus() == StatusCreated {
			resp.Sandboxes = append(resp.Sandboxes, info)
		}
	}
	sort.Slice(resp.Sandboxes, func(i, j int) bool {
		a, b := resp.Sandboxes[i], resp.Sandboxes[j]
		if a.GetCreatedUnixMs() != b.GetCreatedUnixMs() {
			return a.GetCreatedUnixMs() < b.GetCreatedUnixMs()
		}
		return a.GetId() < b.GetId()
	})
	return resp, nil
}

// InspectSandbox describes one sandbox.
func (s *Service) InspectSandbox(_ context.Context, req *bulwarkv1.InspectSandboxRequest) (*bulwarkv1.Sandbox, error) {
	sb, err := s.find(req.GetId())
	if err != nil {
		return nil, err
	}
	return sb.snapshot(), nil
}

// Logs streams a sandbox's output.
func (s *Service) Logs(req *bulwarkv1.LogsRequest, stream bulwarkv1.Host_LogsServer) error {
	sb, err := s.find(req.GetId())
	if err != nil {
		return err
	}
	err = sb.log.follow(stream.Context(), req.GetFollow(), func(st byte, data []byte) error {
		return stream.Send(&bulwarkv1.LogChunk{Stream: bulwarkv1.LogChunk_Stream(st), Data: data})
	})
	if err != nil && stream.Context().Err() == nil {
		return status.Errorf(codes.Internal, "sandbox %s: logs: %v", sb.snapshot().GetId(), err)
	}
	return nil
}

// endTimeout bounds recording sandboxes' ends in the launch log.
const endTimeout = 30 * time.Second

// MaxStopGraceSeconds bounds StopSandboxRequest.grace_seconds.
const MaxStopGraceSeconds = 300

// stopMargin is how long, past the grace period, the workload's exit
// status may take to come back before the VM is torn down.
const stopMargin = 10 * time.Second

// StopSandbox stops a running workload gracefully and waits for its end.
func (s *Service) StopSandbox(ctx context.Context, req *bulwarkv1.StopSandboxRequest) (*bulwarkv1.Sandbox, error) {
	if req.GetGraceSeconds() > MaxStopGraceSeconds {
		return nil, status.Errorf(codes.InvalidArgument, "grace_seconds: %d is more than %d", req.GetGraceSeconds(), MaxStopGraceSeconds)
	}
	sb, err := s.find(req.GetId())
	if err != nil {
		return nil, err
	}
	grace := time.Duration(req.GetGraceSeconds()) * time.Second
	if grace == 0 {
		grace = launch.DefaultStopGrace
	}
	sb.endAs(measure.EndStopped)
	sb.mu.Lock()
	l := sb.launched
	sb.mu.Unlock()
	if l != nil {
		if err := l.Sandbox().Stop(grace); err != nil {
			l.Sandbox().Abort("stop: " + err.Error())
		}
		t := time.NewTimer(grace + stopMargin)
		defer t.Stop()
		select {
		case <-sb.done:
		case <-t.C:
			l.Sandbox().Abort("stop: the workload did not exit after SIGKILL")
			<-sb.done
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	} else {
		sb.mu.Lock()
		abort := sb.abort
		sb.mu.Unlock()
		if abort != nil { // a launch in progress: it ends here
			abort()
		}
		select {
		case <-sb.done:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return sb.snapshot(), nil
}

// RemoveSandbox forgets an ended sandbox (killing it first with force).
func (s *Service) RemoveSandbox(ctx context.Context, req *bulwarkv1.RemoveSandboxRequest) (*bulwarkv1.RemoveSandboxResponse, error) {
	sb, err := s.find(req.GetId())
	if err != nil {
		return nil, err
	}
	info := sb.snapshot()
	select {
	case <-sb.done:
	default:
		if !req.GetForce() {
			return nil, status.Errorf(codes.FailedPrecondition, "sandbox %s is %s: stop it first ('launcher stop %s'), or remove it with --force", info.GetId(), info.GetStatus(), info.GetId()[:12])
		}
		sb.endAs(measure.EndStopped)
		sb.mu.Lock()
		l, abort := sb.launched, sb.abort
		sb.mu.Unlock()
		if l != nil {
			l.Sandbox().Abort("removed with --force")
		}
		if abort != nil {
			abort()
		}
		select {
		case <-sb.done:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	s.mu.Lock()
	delete(s.sandboxes, info.GetId())
	s.mu.Unlock()
	if err := os.RemoveAll(sb.dir); err != nil {
		return nil, status.Errorf(codes.Internal, "removing %s: %v", sb.dir, err)
	}
	s.cfg.Logger.Info("sandbox removed", "sandbox", info.GetId())
	return &bulwarkv1.RemoveSandboxResponse{Id: info.GetId()}, nil
}

// launchStatus is the gRPC status of a failed launch; the message keeps
// every reason launch gave.
func launchStatus(id string, err error) error {
	code := codes.Aborted
	switch {
	case errors.Is(err, launch.ErrRefused), errors.Is(err, launch.ErrDenied):
		code = codes.PermissionDenied
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Errorf(code, "sandbox %s: %v", id, err)
}

// lineWriter calls f with each complete line written, without its
// newline and without the "launcher: " prefix launch puts first.
type lineWriter func(string)

func (f lineWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		f(strings.TrimPrefix(line, "launcher: "))
	}
	return len(p), nil
}
