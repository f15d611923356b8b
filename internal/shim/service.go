// Package shim is containerd's runtime io.containerd.bulwark.v2: a shim v2
// (containerd's task API over ttrpc) that runs each container as one
// Bulwark sandbox, launched through the host service ('launcher daemon').
// The container's image is taken from containerd's content store, never
// from the snapshot containerd mounts: the shim copies the image's
// manifest, config and layers, each checked against its digest, into a
// root-only OCI layout in the task's bundle, and the host service measures
// that layout (checking every digest again) as it measures any image. See
// docs/containerd.md.
package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/hostd"
	"github.com/bulwark-project/bulwark/internal/statedir"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/status"
)

// RuntimeName is the runtime type containerd is configured with.
const RuntimeName = "io.containerd.bulwark.v2"

// Environment the shim reads (inherited from containerd's).
const (
	// envSocket is the host service's socket (default: launcher.sock in
	// the state directory, $BULWARK_STATE or /var/lib/bulwark).
	envSocket = "BULWARK_SOCKET"
	// envContainerd carries containerd's address from the shim's start
	// command to the shim server it starts.
	envContainerd = "BULWARK_CONTAINERD_ADDRESS"
)

// Files the shim keeps in the task's bundle directory.
const (
	// imageDirName holds the image's OCI layout (image/) and its signature
	// (image.sig, image.payload.json) until the host service has built the
	// image's disk.
	imageDirName = "bulwark-image"
	// sandboxFile records the sandbox id, for the delete command to clean
	// up after a shim that died.
	sandboxFile = "bulwark-sandbox"
)

// annotationCRIType is the CRI's mark of a pod's sandbox ("pause")
// container ("sandbox") and of its other containers ("container").
const annotationCRIType = "io.kubernetes.cri.container-type"

// exitLaunchFailed is the exit status of a container whose launch failed
// or was refused (docker run's "the container could not be run").
const exitLaunchFailed = 125

var empty = &ptypes.Empty{}

// New is the shim's init function (shim.Init): it serves one container.
func New(ctx context.Context, id string, publisher shim.Publisher, shutdown func()) (shim.Shim, error) {
	s := &service{
		ctx:        ctx,
		id:         id,
		publisher:  publisher,
		shutdown:   shutdown,
		events:     make(chan any, 128),
		containers: map[string]*container{},
	}
	go s.forward()
	return s, nil
}

// proc is the container's workload or one exec'd process.
type proc struct {
	id                    string
	stdin, stdout, stderr string
	status                tasktypes.Status
	pid                   uint32
	exitStatus            uint32
	exitedAt              time.Time
	exited                chan struct{}
	args                  []string // exec: the command
	terminal              bool     // on a terminal (crictl exec -t; a pod VM container's tty: attach.go)
	size                  *bulwarkv1.TerminalSize
	input                 *execInput // a process with stdin or a terminal, once started
	cancel                context.CancelFunc
	exitOnce              sync.Once
}

// exit records the process's end (once) and wakes its waiters.
func (p *proc) exit(code uint32) bool {
	first := false
	p.exitOnce.Do(func() {
		first = true
		p.status = tasktypes.Status_STOPPED
		p.exitStatus = code
		p.exitedAt = time.Now()
		close(p.exited)
	})
	return first
}

type service struct {
	ctx       context.Context
	id        string
	publisher shim.Publisher
	shutdown  func()
	events    chan any
	evMu      sync.Mutex
	evClosed  bool

	mu         sync.Mutex
	containers map[string]*container
}

// container is one container the shim serves: its own sandbox, a
// container of its pod's VM, or (a CRI pod's sandbox container) none.
type container struct {
	task   *proc
	bundle string
	// pause marks a CRI pod's sandbox ("pause") container: nothing of it
	// runs on the host; it exists until it is killed.
	pause bool
	// netns is a pause container's network namespace (its spec's): the
	// pod's, which its containers' sandboxes (or its VM) take over;
	// hostname is its spec's, the pod's (the CRI sets its containers'
	// HOSTNAME to it).
	netns, hostname string
	// podVM (a pause container): the pod's containers share one VM, its
	// sandbox, launched at the first one's Start (AnnotationPodVM).
	// podMu serialises that launch and the later AddContainer calls;
	// qemuPid is the pod VM's.
	podVM   bool
	podMu   sync.Mutex
	qemuPid uint32
	// pod (a container of a pod VM) is its pod's pause container.
	pod     *container
	cfg     launchConfig
	image   exportedImage
	sandbox string // the host service's id, once launched (a pod container's: its pod VM's)
	execs   map[string]*proc
}

var _ shim.Shim = (*service)(nil)

// forward publishes the task events to containerd in order.
func (s *service) forward() {
	ns, _ := namespaces.Namespace(s.ctx)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	for e := range s.events {
		if err := s.publisher.Publish(ctx, topic(e), e); err != nil {
			log.G(s.ctx).WithError(err).Error("bulwark shim: publishing an event")
		}
	}
	// The shim library waits for the publisher to close before it exits.
	s.publisher.Close()
}

// closeEvents ends forward once the queued events are published.
func (s *service) closeEvents() {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if !s.evClosed {
		s.evClosed = true
		close(s.events)
	}
}

func (s *service) send(e any) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if s.evClosed {
		return
	}
	select {
	case s.events <- e:
	default:
		log.G(s.ctx).Warnf("bulwark shim: event queue full, dropped %T", e)
	}
}

func topic(e any) string {
	switch e.(type) {
	case *eventstypes.TaskCreate:
		return runtime.TaskCreateEventTopic
	case *eventstypes.TaskStart:
		return runtime.TaskStartEventTopic
	case *eventstypes.TaskExit:
		return runtime.TaskExitEventTopic
	case *eventstypes.TaskDelete:
		return runtime.TaskDeleteEventTopic
	case *eventstypes.TaskExecAdded:
		return runtime.TaskExecAddedEventTopic
	case *eventstypes.TaskExecStarted:
		return runtime.TaskExecStartedEventTopic
	}
	return runtime.TaskUnknownTopic
}

// dialHost connects to the host service.
func dialHost() (*hostd.Client, error) {
	sock := os.Getenv(envSocket)
	if sock == "" {
		dir, err := statedir.Dir(nil)
		if err != nil {
			return nil, err
		}
		sock = filepath.Join(dir, hostd.SocketName)
	}
	return hostd.Dial(sock)
}

// Create reads the container's spec, copies its image out of containerd's
// content store into the bundle, and waits for Start to launch it.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[r.ID]; ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "bulwark shim: container %s already created", r.ID)
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	c := &container{bundle: r.Bundle, execs: map[string]*proc{}, pause: spec.Annotations[annotationCRIType] == "sandbox"}
	if c.pause {
		c.netns, c.hostname = netNSPath(spec), spec.Hostname
		if err := checkTerminal(r, spec, c); err != nil {
			return nil, err
		}
		if c.podVM, err = podVMMode(spec.Annotations); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
		}
	} else {
		cfg, err := parseSpec(spec)
		if err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
		}
		podHostname := ""
		if p, ok := s.containers[spec.Annotations[annotationSandboxID]]; ok && p.pause {
			cfg.NetNS = podNetNS(cfg.NetNS, p.task.pid, p.netns)
			podHostname = p.hostname
			if p.podVM {
				c.pod = p
			}
		}
		if err := checkTerminal(r, spec, c); err != nil {
			return nil, err
		}
		dir := filepath.Join(r.Bundle, imageDirName)
		defer func() {
			if retErr != nil {
				os.RemoveAll(dir)
			}
		}()
		img, err := s.exportContainerImage(ctx, r.ID, dir)
		if err != nil {
			return nil, errdefs.ToGRPC(err)
		}
		ov, err := processOverrides(spec.Process, img.Config, criHostname(spec, podHostname), layoutUserFiles(filepath.Join(dir, "image")))
		if err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "%v", err)
		}
		cfg.Env, cfg.WorkingDir, cfg.User = ov.Env, ov.WorkingDir, ov.User
		if cfg.Signature != nil {
			if err := os.WriteFile(filepath.Join(dir, "image.sig"), cfg.Signature, 0o600); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, "image.payload.json"), cfg.Payload, 0o600); err != nil {
				return nil, err
			}
		} else {
			n, err := addRegistrySignatures(ctx, img.Name, img.Manifest.Digest.String(), filepath.Join(dir, "image"), os.Getenv(SignatureRegistriesEnv))
			if err != nil {
				return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
			}
			if n > 0 {
				log.G(ctx).Infof("bulwark shim: container %s: %d cosign signature(s) from the registry of %s", r.ID, n, img.Name)
			}
		}
		c.cfg, c.image = cfg, img
		log.G(ctx).Infof("bulwark shim: container %s: image manifest %s from containerd's content store, policy %s", r.ID, img.Manifest.Digest, cfg.Policy)
	}
	c.task = &proc{id: r.ID, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, status: tasktypes.Status_CREATED,
		pid: uint32(os.Getpid()), exited: make(chan struct{})}
	if err := taskTerminal(c.task, r, spec); err != nil {
		return nil, err
	}
	s.containers[r.ID] = c
	s.send(&eventstypes.TaskCreate{ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}, Checkpoint: r.Checkpoint, Pid: c.task.pid})
	return &taskAPI.CreateTaskResponse{Pid: c.task.pid}, nil
}

// readSpec reads the bundle's OCI runtime spec.
func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bulwark shim: reading the container's spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", errBadSpec, err)
	}
	return &spec, nil
}

// Start launches the container (Create done) or an exec'd process. The
// launch is the host service's: verify, measure, boot or clone, attest,
// release secrets, start the workload. A refused launch fails Start with
// the policy's reasons.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	if r.ExecID != "" {
		return s.startExec(ctx, r)
	}
	s.mu.Lock()
	c, err := s.container(r.ID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	t := c.task
	if t.status != tasktypes.Status_CREATED || t.cancel != nil {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s already started", r.ID)
	}
	if c.pause { // the pod's VMs are its containers'
		t.status = tasktypes.Status_RUNNING
		s.send(&eventstypes.TaskStart{ContainerID: t.id, Pid: t.pid})
		s.mu.Unlock()
		return &taskAPI.StartResponse{Pid: t.pid}, nil
	}
	if c.pod != nil {
		s.mu.Unlock()
		return s.startInPod(ctx, c)
	}
	lctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	req := &bulwarkv1.RunRequest{
		Policy: c.cfg.Policy, Image: filepath.Join(c.bundle, imageDirName, "image"),
		Args: workloadArgs(c.cfg.Args, c.image.Config.Entrypoint, c.image.Config.Cmd),
		Env:  c.cfg.Env, WorkingDir: c.cfg.WorkingDir, User: c.cfg.User,
		Kernel: c.cfg.Kernel, Initrd: c.cfg.Initrd, Template: c.cfg.Template,
	}
	if c.cfg.NetNS != "" { // a pod with its own network: the guest takes its interface over
		req.Network, req.Netns = "tap", c.cfg.NetNS
	}
	s.mu.Unlock()
	defer cancel()

	sb, err := s.launch(lctx, req)
	if err != nil {
		s.forgetFailed(req.Image)
	}
	// The host service has built the image's disk (or failed): the copy
	// is no longer needed.
	os.RemoveAll(filepath.Join(c.bundle, imageDirName))
	s.mu.Lock()
	defer s.mu.Unlock()
	t.cancel = nil
	if err != nil {
		if t.exit(exitLaunchFailed) {
			s.send(&eventstypes.TaskExit{ContainerID: t.id, ID: t.id, Pid: t.pid, ExitStatus: t.exitStatus, ExitedAt: protobuf.ToTimestamp(t.exitedAt)})
		}
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	c.sandbox = sb.GetId()
	if err := os.WriteFile(filepath.Join(c.bundle, sandboxFile), []byte(c.sandbox), 0o600); err != nil {
		log.G(ctx).WithError(err).Warn("bulwark shim: recording the sandbox id")
	}
	if t.status == tasktypes.Status_STOPPED { // killed during the launch: stop what started (Delete removes it)
		go s.stopSandbox(c.sandbox, syscall.SIGKILL)
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s was killed while it launched", t.id)
	}
	if pid := sb.GetQemuPid(); pid > 0 {
		t.pid = uint32(pid)
	}
	t.status = tasktypes.Status_RUNNING
	log.G(ctx).Infof("bulwark shim: container %s runs in sandbox %s (attestation %s)", t.id, c.sandbox, sb.GetAttestationId())
	s.send(&eventstypes.TaskStart{ContainerID: t.id, Pid: t.pid})
	stdout, stderr := openOutputs(s.ctx, t.stdout, t.stderr)
	go s.follow(t, c.sandbox, "", stdout, stderr)
	return &taskAPI.StartResponse{Pid: t.pid}, nil
}

// launch runs the host service's launch and returns the started sandbox;
// a failure carries the host service's reasons.
func (s *service) launch(ctx context.Context, req *bulwarkv1.RunRequest) (*bulwarkv1.Sandbox, error) {
	c, err := dialHost()
	if err != nil {
		return nil, fmt.Errorf("bulwark shim: %w", err)
	}
	defer c.Close()
	stream, err := c.Run(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("bulwark launch: %s", status.Convert(err).Message())
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("bulwark launch: the host service ended the launch without a sandbox")
			}
			return nil, fmt.Errorf("bulwark launch: %s", status.Convert(err).Message())
		}
		switch e := ev.GetEvent().(type) {
		case *bulwarkv1.RunEvent_Progress:
			log.G(ctx).Infof("bulwark launch: %s", e.Progress)
		case *bulwarkv1.RunEvent_Warning:
			log.G(ctx).Warnf("bulwark launch: %s", e.Warning)
		case *bulwarkv1.RunEvent_Started:
			return e.Started, nil
		}
	}
}

// forgetFailed removes the record the host service keeps of a failed
// launch of image (the layout path is the bundle's own): containerd
// deletes the container, so nothing else would. The Run stream does not
// name the sandbox of a failed launch, hence the lookup. Whatever names
// the image failed to launch: a sandbox still said to run (a pod VM
// whose first container failed, being stopped) is removed by force.
func (s *service) forgetFailed(image string) {
	c, err := dialHost()
	if err != nil {
		return
	}
	defer c.Close()
	list, err := c.ListSandboxes(s.ctx, &bulwarkv1.ListSandboxesRequest{All: true})
	if err != nil {
		log.G(s.ctx).WithError(err).Warn("bulwark shim: listing sandboxes to remove a failed launch")
		return
	}
	for _, sb := range list.GetSandboxes() {
		if sb.GetImage() != image {
			continue
		}
		if _, err := c.RemoveSandbox(s.ctx, &bulwarkv1.RemoveSandboxRequest{Id: sb.GetId(), Force: true}); err != nil {
			log.G(s.ctx).WithError(err).Warnf("bulwark shim: removing failed sandbox %s", sb.GetId())
		}
	}
}

// inspect reports the sandbox's status (with name: its container's), its
// exit code (-1: none) and why it ended when not by itself: its error, or
// its revocation.
func inspect(ctx context.Context, id, name string) (status string, exitCode int32, msg string, err error) {
	c, err := dialHost()
	if err != nil {
		return "", -1, "", err
	}
	defer c.Close()
	if name != "" {
		ct, err := c.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: id, Name: name})
		if err != nil {
			return "", -1, "", err
		}
		return ct.GetStatus(), ct.GetExitCode(), ct.GetError(), nil
	}
	sb, err := c.InspectSandbox(ctx, &bulwarkv1.InspectSandboxRequest{Id: id})
	if err != nil {
		return "", -1, "", err
	}
	msg = sb.GetError()
	if r := sb.GetRevoked(); r != "" && sb.GetStatus() != "running" {
		msg = "revoked by attestd: " + r
	}
	return sb.GetStatus(), sb.GetExitCode(), msg, nil
}

// stopSandbox stops a sandbox: SIGKILL gives the workload a second, any
// other signal the host service's default grace period.
func (s *service) stopSandbox(id string, sig syscall.Signal) {
	grace := uint32(0)
	if sig == syscall.SIGKILL {
		grace = 1
	}
	c, err := dialHost()
	if err != nil {
		log.G(s.ctx).WithError(err).Warnf("bulwark shim: stopping sandbox %s", id)
		return
	}
	defer c.Close()
	if _, err := c.StopSandbox(s.ctx, &bulwarkv1.StopSandboxRequest{Id: id, GraceSeconds: grace}); err != nil {
		log.G(s.ctx).WithError(err).Warnf("bulwark shim: stopping sandbox %s", id)
	}
}

// killContainer sends sig to a container of pod VM id.
func (s *service) killContainer(id, name string, sig syscall.Signal) {
	c, err := dialHost()
	if err != nil {
		log.G(s.ctx).WithError(err).Warnf("bulwark shim: killing container %s", name)
		return
	}
	defer c.Close()
	if _, err := c.KillContainer(s.ctx, &bulwarkv1.KillContainerRequest{Id: id, Name: name, Signal: uint32(sig)}); err != nil {
		log.G(s.ctx).WithError(err).Warnf("bulwark shim: killing container %s", name)
	}
}

// Kill stops the container's sandbox (in the background: Wait reports the
// end); a container of a pod VM gets the signal there, the others run on;
// a pod's sandbox container stops the pod's VM. Before the launch, the
// container just ends. With an ExecID it signals that exec (killExec).
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	if r.ExecID != "" {
		return s.killExec(r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	t := c.task
	switch {
	case t.status == tasktypes.Status_STOPPED:
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "process already finished")
	case t.status == tasktypes.Status_CREATED || (c.pause && c.sandbox == ""):
		if t.cancel != nil {
			t.cancel() // abort the launch in progress
		}
		if t.exit(128 + r.Signal) {
			s.send(&eventstypes.TaskExit{ContainerID: t.id, ID: t.id, Pid: t.pid, ExitStatus: t.exitStatus, ExitedAt: protobuf.ToTimestamp(t.exitedAt)})
		}
	case c.pod != nil:
		go s.killContainer(c.sandbox, t.id, syscall.Signal(r.Signal))
	default: // a sandbox, or a pod's VM (its pause task ends with it)
		go s.stopSandbox(c.sandbox, syscall.Signal(r.Signal))
	}
	return empty, nil
}

// Delete forgets the container (its sandbox, the sandbox's log, the
// image copy) or an exec'd process.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		p, ok := c.execs[r.ExecID]
		if !ok {
			return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "bulwark shim: exec %s not found", r.ExecID)
		}
		if p.status == tasktypes.Status_RUNNING {
			return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: exec %s still runs", r.ExecID)
		}
		delete(c.execs, r.ExecID)
		return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
	}
	t := c.task
	if t.status == tasktypes.Status_RUNNING {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s still runs: kill it first", r.ID)
	}
	if t.cancel != nil {
		t.cancel()
	}
	t.exit(exitLaunchFailed) // never started
	// A pod VM goes with its pause container, not with its containers: a
	// container of a pod is removed from it, which frees its image slot.
	switch {
	case c.sandbox != "" && c.pod == nil:
		if err := removeSandbox(ctx, c.sandbox); err != nil {
			log.G(ctx).WithError(err).Warnf("bulwark shim: removing sandbox %s", c.sandbox)
		}
	case c.pod != nil && c.pod.sandbox != "":
		if err := removeFromPod(ctx, c.pod.sandbox, t.id); err != nil {
			log.G(ctx).WithError(err).Warnf("bulwark shim: removing container %s from pod VM %s", t.id, c.pod.sandbox)
		}
	}
	os.RemoveAll(filepath.Join(c.bundle, imageDirName))
	os.Remove(filepath.Join(c.bundle, sandboxFile))
	delete(s.containers, r.ID)
	s.send(&eventstypes.TaskDelete{ContainerID: t.id, ID: t.id, Pid: t.pid, ExitStatus: t.exitStatus, ExitedAt: protobuf.ToTimestamp(t.exitedAt)})
	return &taskAPI.DeleteResponse{Pid: t.pid, ExitStatus: t.exitStatus, ExitedAt: protobuf.ToTimestamp(t.exitedAt)}, nil
}

// removeSandbox has the host service forget a sandbox, killing it if it
// still runs.
func removeSandbox(ctx context.Context, id string) error {
	c, err := dialHost()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.RemoveSandbox(ctx, &bulwarkv1.RemoveSandboxRequest{Id: id, Force: true})
	return err
}

// Cleanup is the shim's delete command, run by containerd when a shim went
// away without deleting its container: it removes the sandbox the bundle
// (the working directory) records, and the image copy.
func (s *service) Cleanup(ctx context.Context) (*taskAPI.DeleteResponse, error) {
	bundle, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(bundle, sandboxFile)); err == nil && len(b) > 0 {
		if err := removeSandbox(ctx, string(b)); err != nil {
			log.G(ctx).WithError(err).Warnf("bulwark shim: removing sandbox %s", b)
		}
	}
	os.RemoveAll(filepath.Join(bundle, imageDirName))
	os.Remove(filepath.Join(bundle, sandboxFile))
	// The dead shim's socket, unless a shim still serves it (a pod's).
	if addr, err := shim.ReadAddress(filepath.Join(bundle, "address")); err == nil && !shim.CanConnect(addr) {
		shim.RemoveSocket(addr)
	}
	return &taskAPI.DeleteResponse{ExitedAt: protobuf.ToTimestamp(time.Now()), ExitStatus: 128 + uint32(syscall.SIGKILL)}, nil
}

// State reports the container or an exec'd process.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StateResponse{ID: p.id, Bundle: c.bundle, Pid: p.pid, Status: p.status, Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr,
		Terminal: p.terminal, ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt), ExecID: r.ExecID}, nil
}

// container finds a container (s.mu held).
func (s *service) container(id string) (*container, error) {
	c, ok := s.containers[id]
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "bulwark shim: container %s not created", id)
	}
	return c, nil
}

// process finds the container or one of its exec'd processes (s.mu held).
func (s *service) process(id, execID string) (*container, *proc, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.task, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "bulwark shim: exec %s not found", execID)
	}
	return c, p, nil
}

// Wait waits for the container's or an exec'd process's end.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	_, p, err := s.process(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Pids lists the sandbox's QEMU as the container's one process.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	return &taskAPI.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: c.task.pid}}}, nil
}

// Connect returns the shim's and the container's pids.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, ok := s.containers[r.ID]; ok {
		resp.TaskPid = c.task.pid
	}
	return resp, nil
}

// Shutdown ends the shim once its container is deleted.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers) > 0 {
		return empty, nil
	}
	s.closeEvents()
	s.shutdown()
	return empty, nil
}

func notImplemented(what string) error {
	return errdefs.ToGRPCf(errdefs.ErrNotImplemented, "bulwark shim: %s is not supported", what)
}

// Pause is not supported.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("pause")
}

// Resume is not supported.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("resume")
}

// Checkpoint is not supported.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("checkpoint")
}

// ResizePty resizes the terminal of an exec'd process or of a pod VM
// container's own process (attach.go).
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if !p.terminal {
		return nil, notImplemented("a terminal for a process without one")
	}
	size, err := terminalSize(r.Height, r.Width)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: process %s: %v", p.id, err)
	}
	if p.input == nil { // not started yet: its terminal starts at this size
		p.size = size
		return empty, nil
	}
	if err := p.input.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Resize{Resize: size}}); err != nil && p.status != tasktypes.Status_STOPPED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: process %s: resize: %v", p.id, err)
	}
	return empty, nil
}

// CloseIO ends the stdin of an exec'd process or of a pod VM container's
// own process; it changes nothing for a process without stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin && p.input != nil {
		p.input.closeIO()
	}
	return empty, nil
}

// Update is not supported: a sandbox's resources are fixed at launch.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, notImplemented("update")
}
