package kvm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
	"golang.org/x/sys/unix"
)

// Secret is one wrapped secret to forward to the guest (see enclave/wrap).
type Secret = channel.Secret

// WindowSize is a terminal's size in characters (Config.TTY,
// Sandbox.Resize): rows and columns 1..channel.MaxWindowSize.
type WindowSize = channel.WindowSize

// ErrBootTimeout is returned when the agent did not say HELLO in time.
var ErrBootTimeout = errors.New("kvm: boot timeout: the guest agent did not start in time")

// ErrAborted is returned by Wait after Abort.
var ErrAborted = errors.New("kvm: launch aborted")

// GuestError is a failure reported by the guest agent (e.g. a secret that
// does not open: the workload never started).
type GuestError struct{ Message string }

func (e *GuestError) Error() string { return "guest: " + e.Message }

// Sandbox is a running micro-VM. Its methods are safe for concurrent use;
// Close it when done (it is always safe to call, also more than once).
type Sandbox struct {
	cfg     Config
	log     *slog.Logger
	accel   AccelChoice
	cmdline string
	cmd     *exec.Cmd
	proc    *os.Process // QEMU: cmd.Process, or found again by Reattach
	qmp     *QMP
	conn    net.Conn
	tmpDir  string
	cg      *cgroup
	conf    *confinement // nil: unconfined
	console *lineTail
	qerr    *lineTail
	files   []*os.File // our files to close after QEMU started (memfds)
	// podAddr, podGateway and podMAC are the guest's address, gateway
	// and MAC on a tap network (Config.NetNS's interface's), for START.
	podAddr, podGateway, podMAC string

	wmu sync.Mutex // serializes writes to conn
	// agentVersion is the protocol version of an agent taken over
	// (Reattach: its STATUS's, 6 when it names none); 0 for one that
	// said READY or HELLO, which speaks this host's (protocol.go).
	agentVersion atomic.Int32

	mode   mode
	recipe Recipe        // templates and clones only
	ready  chan struct{} // closed on READY while making a template

	mu           sync.Mutex
	state        guestState    // the guest protocol (protocol.go)
	hello        chan struct{} // closed on HELLO
	guestKey     []byte
	started      chan struct{} // closed on STARTED or ERROR
	startErr     error
	exitCode     int
	guestErr     error
	failErr      error // boot timeout, abort, protocol violation
	shutdown     string
	exited       chan struct{} // QEMU has exited and been reaped
	readerDone   chan struct{}
	eventsDone   chan struct{}
	procState    *os.ProcessState
	startTime    uint64        // QEMU's start time (clock ticks since boot), to know it again
	reattachedCh chan struct{} // Reattach: closed on STATUS
	pingSeq      uint64
	pongs        map[uint64]chan struct{}
	execSeq      uint32
	execs        map[uint32]*execWaiter
	dones        map[uint64]chan channel.Done // REVOKE/ROTATE awaiting DONE (revoke.go)
	pod          podState                     // a pod's containers (pod.go)
	closeOnce    sync.Once
	stopWatch    context.CancelFunc
}

// mode is how a sandbox starts: a cold boot (zero), the boot of a
// template (its RAM shared in templateRAM; it stops at READY), or a clone
// resumed from a template.
type mode struct {
	templateRAM *os.File
	clone       *Template
}

// Start boots a sandbox, or resumes a clone of cfg.Template. It returns
// once QEMU runs the guest; the guest agent is still booting (see
// GuestKey). Cancelling ctx kills the sandbox at any time, as
// exec.CommandContext does, and so does the launcher's own death (the QEMU
// process has PR_SET_PDEATHSIG=SIGKILL).
func Start(ctx context.Context, cfg Config) (*Sandbox, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.TemplateNet {
		return nil, errors.New("kvm: TemplateNet is for CreateTemplate (a sandbox's network is Config.Network)")
	}
	return start(ctx, cfg, &mode{clone: cfg.Template})
}

func start(ctx context.Context, cfg Config, m *mode) (*Sandbox, error) {
	choice, err := ChooseAccel(cfg.Accel)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("sandbox", cfg.Name)
	if choice.Accel == AccelTCG {
		log.Warn("sandbox accelerator: " + choice.Reason)
	} else {
		log.Info("sandbox accelerator: " + choice.Reason)
	}
	cmdline := cfg.Cmdline
	if cmdline == "" {
		if cmdline, err = DefaultCmdline(choice.Accel); err != nil {
			return nil, err
		}
	}
	// 2047: the guest kernel keeps COMMAND_LINE_SIZE (2048) bytes with the
	// NUL and drops the rest. launch.Run checks far more (policy.CheckCmdline).
	if strings.ContainsAny(cmdline, "\x00\n") || len(cmdline) > 2047 {
		return nil, errors.New("kvm: kernel command line: NUL or newline, or longer than 2047 bytes")
	}
	qemu, err := qemuBinary(cfg.QEMU)
	if err != nil {
		return nil, err
	}

	s := &Sandbox{
		cfg: cfg, log: log, accel: choice, cmdline: cmdline, mode: *m,
		console: newLineTail(40, cfg.Console), qerr: newLineTail(20, nil),
		hello: make(chan struct{}), started: make(chan struct{}), ready: make(chan struct{}),
		exited: make(chan struct{}), readerDone: make(chan struct{}), eventsDone: make(chan struct{}),
	}
	if m.templateRAM != nil || m.clone != nil {
		if s.recipe, err = recipeFor(&cfg, choice.Accel, cmdline, qemu); err != nil {
			return nil, err
		}
		if t := m.clone; t != nil {
			if err := t.Info.Fits(s.recipe); err != nil {
				return nil, fmt.Errorf("kvm: %w", err)
			}
		}
	}
	if m.clone != nil {
		s.state = stateIdentified // its agent said READY before the snapshot; IDENTITY follows the resume
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.launch(ctx, qemu); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func (s *Sandbox) launch(ctx context.Context, qemu string) error {
	cfg := s.cfg
	var err error
	sockDir := cfg.RunDir
	if sockDir == "" {
		if s.tmpDir, err = os.MkdirTemp("", "bulwark-sandbox-"); err != nil {
			return fmt.Errorf("kvm: %w", err)
		}
		sockDir = s.tmpDir
	}
	persist := cfg.RunDir != ""
	var extra []*os.File
	fdPath := func(f *os.File) string {
		extra = append(extra, f)
		return "/proc/self/fd/" + strconv.Itoa(2+len(extra))
	}
	// Listening sockets are made here and handed to QEMU; we connect before
	// QEMU even runs, so no guest byte can be lost to an unconnected socket.
	// A persistent sandbox keeps both paths, for Reattach.
	dir, closeDir, err := socketDir(sockDir)
	if err != nil {
		return err
	}
	defer closeDir()
	qmpL, qmpConn, err := listenAndDial(filepath.Join(dir, qmpSocket), persist)
	if err != nil {
		return err
	}
	defer qmpL.Close()
	chL, chConn, err := listenAndDial(filepath.Join(dir, channelSocket), persist)
	if err != nil {
		qmpConn.Close()
		return err
	}
	defer chL.Close()
	if !persist {
		os.Remove(s.tmpDir) // both socket paths are unlinked: nothing to leave behind
	}
	s.conn = chConn
	qmpFD := fdNum(fdPath(qmpL))
	chFD := fdNum(fdPath(chL))

	// QEMU gets every file as a descriptor: a confined QEMU could not open
	// the launcher's paths, and nothing can be swapped under it.
	openPath := func(p string) (*os.File, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("kvm: %w", err)
		}
		s.files = append(s.files, f)
		return f, nil
	}
	// A clone runs its template's memory: the kernel and initramfs are in
	// it already. QEMU loading them again (the kernel's ELF and symbols)
	// would only cost each clone 50 ms or more of CPU.
	var kernel, initrd string
	if s.mode.clone == nil || cloneKernel {
		if cfg.Kernel == nil {
			if cfg.Kernel, err = openPath(cfg.KernelPath); err != nil {
				qmpConn.Close()
				return err
			}
		}
		kernel = fdPath(cfg.Kernel)
		if cfg.Initrd != nil {
			initrd = fdPath(cfg.Initrd)
		} else {
			f, err := openPath(cfg.InitrdPath)
			if err != nil {
				qmpConn.Close()
				return err
			}
			initrd = fdPath(f)
		}
	}
	disk := cfg.Image
	if disk == nil {
		if disk, err = diskPlaceholder(); err != nil {
			qmpConn.Close()
			return err
		}
		s.files = append(s.files, disk)
	}

	spec := qemuSpec{
		name: cfg.Name, accel: s.accel.Accel, cpus: cfg.CPUs, memoryMiB: cfg.MemoryMiB,
		qmpFD: qmpFD, channelFD: chFD, kernel: kernel, initrd: initrd, disk: fdPath(disk), cmdline: s.cmdline,
		network: cfg.Network, ports: cfg.Ports,
	}
	if s.mode.templateRAM != nil && cfg.TemplateNet {
		spec.network = netTemplate
	}
	s.qerr.setDrop(expectedQEMUStderr(spec)) // before QEMU writes
	if cfg.Network == NetworkTap {
		pod, err := openPodTap(cfg.NetNS)
		if err != nil {
			qmpConn.Close()
			return fmt.Errorf("kvm: tap network: %w", err)
		}
		s.files = append(s.files, pod.tap) // QEMU's once it runs: the tap lives as long as QEMU
		spec.tapFD, spec.mac = fdNum(fdPath(pod.tap)), pod.mac
		s.podAddr, s.podMAC = pod.addr.String(), pod.mac
		if pod.gateway.IsValid() {
			s.podGateway = pod.gateway.String()
		}
		s.log.Info("tap network", "netns", cfg.NetNS, "interface", pod.iface, "address", s.podAddr, "gateway", s.podGateway, "mac", pod.mac)
	}
	for _, v := range cfg.Volumes {
		spec.volumes = append(spec.volumes, fdPath(v.File))
	}
	for _, d := range cfg.Scratch {
		spec.scratch = append(spec.scratch, fdPath(d.File))
	}
	if s.mode.templateRAM != nil || s.mode.clone != nil {
		// The template's machine has every scratch slot: the unused ones
		// hold a placeholder.
		for len(spec.scratch) < MaxScratch {
			f, err := scratchPlaceholder()
			if err != nil {
				qmpConn.Close()
				return err
			}
			s.files = append(s.files, f)
			spec.scratch = append(spec.scratch, fdPath(f))
		}
	}
	if cfg.Pod {
		// After every other device: the slots take the transports left
		// (a template's and its clones' machine: podSlotCount of the
		// recipe's, see recipeFor).
		s.pod.n = podSlotCount(spec)
		spec.podSlots = s.pod.n
	}
	switch {
	case s.mode.templateRAM != nil:
		spec.ram, spec.ramShared = fdPath(s.mode.templateRAM), true
	case s.mode.clone != nil:
		spec.ram, spec.incoming = fdPath(s.mode.clone.ram), true
		spec.tbSizeMiB = cloneTBSizeMiB
	}
	args := qemuArgs(spec)
	cmd := exec.Command(qemu, args...)
	cmd.ExtraFiles = extra
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, qemuEnv...)
	// The console is read from our own pipe (not StdoutPipe), so that the
	// last lines are in the tail before the sandbox reports its end.
	conR, conW, err := os.Pipe()
	if err != nil {
		qmpConn.Close()
		return err
	}
	defer conW.Close()
	cmd.Stdout = conW
	cmd.Stderr = s.qerr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if persist {
		cmd.SysProcAttr.Pdeathsig = 0
	}
	if !cfg.Unconfined {
		if s.conf, err = confine(cfg.Name, s.accel.Accel, cfg.Network == NetworkUser, persist, s.cloneNoTHP(), cmd); err != nil {
			qmpConn.Close()
			conR.Close()
			return fmt.Errorf("kvm: %w; run QEMU unconfined only on purpose (launcher run --no-confine; kvm.Config.Unconfined)", err)
		}
	}
	if s.conf != nil {
		// QEMU opens its disks again through /proc/self/fd as the
		// sandbox's uid: a scratch disk is the one file it writes.
		for _, d := range cfg.Scratch {
			if err := d.File.Chown(int(s.conf.uid), int(s.conf.gid)); err != nil {
				qmpConn.Close()
				conR.Close()
				s.conf.release()
				return fmt.Errorf("kvm: scratch disk %s: %w", d.Target, err)
			}
		}
	}
	s.log.Info("QEMU confinement: " + s.conf.String())
	cg, err := openCgroup(cfg.CgroupParent, cfg.Name, cfg.CPUs, cfg.MemoryMiB, s.accel.Accel)
	if err != nil {
		qmpConn.Close()
		conR.Close()
		s.conf.release()
		return fmt.Errorf("kvm: the sandbox's CPU and memory limits cannot be enforced: %w; "+
			"launch without them only on purpose (launcher run --no-cgroup; kvm.Config.CgroupParent = \"none\")", err)
	}
	s.cg = cg
	s.log.Debug("starting QEMU", "args", strings.Join(args, " "))
	if err := s.cg.start(cmd); err != nil {
		qmpConn.Close()
		conR.Close()
		s.cg.remove()
		s.conf.release()
		return fmt.Errorf("kvm: starting %s: %w", qemu, err)
	}
	conW.Close()
	s.cmd, s.proc = cmd, cmd.Process
	s.log.Debug("QEMU started", "pid", cmd.Process.Pid)
	if s.startTime, err = processStartTime(cmd.Process.Pid); err != nil {
		s.log.Warn("reading QEMU's start time", "err", err)
	}
	for _, f := range s.files {
		f.Close() // QEMU has its own descriptor now
	}
	s.files = nil
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		defer conR.Close()
		io.Copy(s.console, conR)
	}()
	go func() {
		err := cmd.Wait()
		select {
		case <-consoleDone:
		case <-time.After(2 * time.Second):
		}
		s.mu.Lock()
		s.procState = cmd.ProcessState
		s.mu.Unlock()
		if err != nil {
			s.log.Debug("QEMU exited", "err", err)
		}
		if err := s.cg.remove(); err != nil {
			s.log.Warn(err.Error())
		}
		s.conf.release()
		close(s.exited)
	}()
	watchCtx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	go s.watch(ctx, watchCtx)

	if err := s.conf.started(); err != nil {
		return s.startFailure("confining QEMU", err)
	}
	s.log.Debug("QEMU exec'ed")
	bootCtx, cancelBoot := context.WithTimeout(ctx, s.cfg.BootTimeout)
	defer cancelBoot()
	q, err := DialQMP(bootCtx, qmpConn)
	if err != nil {
		return s.startFailure("connecting to QMP", err)
	}
	s.qmp = q
	s.log.Debug("QMP connected")
	go s.readGuest(bufio.NewReaderSize(s.conn, 64<<10))
	go s.readEvents()
	if s.mode.clone != nil {
		if err := s.resume(bootCtx); err != nil {
			return s.startFailure("resuming from template "+s.mode.clone.Info.Name, err)
		}
		s.log.Debug("template device state loaded")
	}
	if err := s.waitChardev(bootCtx, "c0"); err != nil {
		return s.startFailure("guest channel", err)
	}
	if _, err := q.Execute(bootCtx, "cont", nil); err != nil {
		return s.startFailure("starting the guest", err)
	}
	s.log.Debug("guest continued")
	if s.mode.clone != nil {
		// Before anything else: the clone's own entropy, clock and name.
		if err := s.sendIdentity(); err != nil {
			return s.startFailure("sending the clone its identity", err)
		}
	}
	s.log.Info("sandbox started", "pid", cmd.Process.Pid, "accel", s.accel.Accel, "cpus", cfg.CPUs, "memory_mib", cfg.MemoryMiB,
		"template", s.templateName())
	return nil
}

// cloneNoTHP: a TCG clone's QEMU runs without transparent huge pages.
// Under TCG nothing of a clone gains from them, and they cost it memory:
// an anonymous region QEMU marks MADV_HUGEPAGE is resident in whole 2 MiB
// pages however little of it is touched (≈ 2 MiB an idle clone, measured:
// docs/performance.md).
func (s *Sandbox) cloneNoTHP() bool {
	return s.mode.clone != nil && s.accel.Accel == AccelTCG && cloneNoTHP
}

func (s *Sandbox) templateName() string {
	if s.mode.clone == nil {
		return ""
	}
	return s.mode.clone.Info.Name
}

// resume loads the template's device state into the waiting QEMU (the RAM
// is already mapped from the template's sealed memfd).
func (s *Sandbox) resume(ctx context.Context) error {
	// A descriptor of its own: clones must not share a file offset.
	state, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(s.mode.clone.state.Fd())))
	if err != nil {
		return err
	}
	defer state.Close()
	if _, err := s.qmp.Execute(ctx, "migrate-set-capabilities", migrationCaps(true)); err != nil {
		return err
	}
	if _, err := s.qmp.ExecuteWithFile(ctx, "getfd", map[string]any{"fdname": "state"}, state); err != nil {
		return err
	}
	if _, err := s.qmp.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:state"}); err != nil {
		return err
	}
	return s.waitMigration(ctx, "loading the template's device state")
}

// qemuBinary is the QEMU to run: the given path, or qemu-system-x86_64
// from PATH.
func qemuBinary(qemu string) (string, error) {
	if qemu != "" {
		return qemu, nil
	}
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", errors.New("kvm: qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	return p, nil
}

// fdNum is the descriptor number in a /proc/self/fd/N path.
func fdNum(path string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(path, "/proc/self/fd/"))
	return n
}

func (s *Sandbox) startFailure(what string, err error) error {
	s.kill()
	<-s.exited
	if t := strings.TrimSpace(s.qerr.String()); t != "" {
		return fmt.Errorf("kvm: %s: %w; QEMU said:\n%s", what, err, t)
	}
	return fmt.Errorf("kvm: %s: %w", what, err)
}

// waitChardev waits until QEMU has accepted our connection on the chardev.
func (s *Sandbox) waitChardev(ctx context.Context, label string) error {
	for i := 0; ; i++ {
		raw, err := s.qmp.Execute(ctx, "query-chardev", nil)
		if err != nil {
			return err
		}
		var devs []struct {
			Label    string `json:"label"`
			Filename string `json:"filename"`
		}
		if err := json.Unmarshal(raw, &devs); err != nil {
			return fmt.Errorf("query-chardev: %w", err)
		}
		for _, d := range devs {
			if d.Label == label && !strings.HasPrefix(d.Filename, "disconnected") {
				return nil
			}
		}
		if i > 200 {
			return fmt.Errorf("QEMU did not accept the channel connection (chardev %s)", label)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Socket names in Config.RunDir.
const (
	qmpSocket     = "q.sock"
	channelSocket = "c.sock"
)

// maxSocketPath is the longest path a unix socket address holds.
const maxSocketPath = 107

// socketDir is how to name dir in socket paths: dir itself, or, when a
// socket name in it would be too long for a unix socket address (deep
// state directories), /proc/self/fd/N of a descriptor of it, which the
// kernel resolves to the same directory. Call the function returned when
// the sockets are made or connected.
func socketDir(dir string) (string, func(), error) {
	if len(filepath.Join(dir, channelSocket)) <= maxSocketPath {
		return dir, func() {}, nil
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("kvm: %s: %w", dir, err)
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), func() { unix.Close(fd) }, nil
}

// listenAndDial makes a listening socket at path (kept there with keep,
// else unlinked at once) and connects to it.
func listenAndDial(path string, keep bool) (*os.File, net.Conn, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("kvm: %w", err)
	}
	f, err := l.File()
	if err != nil {
		l.Close()
		return nil, nil, fmt.Errorf("kvm: %w", err)
	}
	conn, err := net.Dial("unix", path)
	l.SetUnlinkOnClose(!keep)
	l.Close() // f keeps the socket listening; the path is gone unless kept
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("kvm: connecting %s: %w", path, err)
	}
	return f, conn, nil
}

// watch kills the VM when ctx ends or the boot takes too long.
func (s *Sandbox) watch(ctx, stop context.Context) {
	boot := time.NewTimer(s.cfg.BootTimeout)
	defer boot.Stop()
	hello := s.hello
	if s.mode.templateRAM != nil {
		hello = s.ready
	}
	for {
		select {
		case <-stop.Done():
			return
		case <-s.exited:
			return
		case <-ctx.Done():
			s.fail(fmt.Errorf("kvm: sandbox cancelled: %w", ctx.Err()))
			s.kill()
			return
		case <-hello:
			boot.Stop()
			hello = nil // never ready again; keep watching ctx
		case <-boot.C:
			s.fail(fmt.Errorf("%w (%v); last console lines:\n%s", ErrBootTimeout, s.cfg.BootTimeout, s.consoleTail()))
			s.kill()
			return
		}
	}
}

// consoleTail is the guest console's last lines for an error message, with
// control characters (terminal escapes from a hostile guest) replaced.
func (s *Sandbox) consoleTail() string {
	t := s.console.String()
	if strings.TrimSpace(t) == "" {
		return "(no console output)"
	}
	return sanitize(t)
}

func sanitize(t string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
			return '?'
		}
		return r
	}, t)
}

// fail records the first host-side failure.
func (s *Sandbox) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr == nil {
		s.failErr = err
	}
}

func (s *Sandbox) kill() {
	if s.proc != nil {
		_ = s.proc.Signal(syscall.SIGKILL)
	}
}

func (s *Sandbox) readEvents() {
	defer close(s.eventsDone)
	handle := func(ev QMPEvent) {
		if ev.Event == "SHUTDOWN" {
			var d struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			s.mu.Lock()
			s.shutdown = d.Reason
			s.mu.Unlock()
			s.log.Debug("guest shut down", "reason", d.Reason)
		}
	}
	for {
		select {
		case ev := <-s.qmp.Events():
			handle(ev)
		case <-s.qmp.Done():
			for { // the reader queued every event before it ended
				select {
				case ev := <-s.qmp.Events():
					handle(ev)
				default:
					return
				}
			}
		}
	}
}

// drain waits, after QEMU exited, until the guest channel and the QMP
// events have been read to their end.
func (s *Sandbox) drain() {
	if s.qmp == nil {
		return
	}
	<-s.readerDone
	select {
	case <-s.eventsDone:
	case <-time.After(2 * time.Second): // QEMU's monitor socket should close with it
	}
}

// Name returns the sandbox id (Config.Name).
func (s *Sandbox) Name() string { return s.cfg.Name }

// Accel returns the accelerator in use: "kvm" or "tcg".
func (s *Sandbox) Accel() string { return s.accel.Accel }

// AccelReason says why that accelerator was chosen.
func (s *Sandbox) AccelReason() string { return s.accel.Reason }

// Cmdline returns the guest kernel command line in use.
func (s *Sandbox) Cmdline() string { return s.cmdline }

// PID returns the QEMU process id.
func (s *Sandbox) PID() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.Pid
}

// Abort tells the agent not to run the workload (or to stop it) and tears
// the VM down: it waits a few seconds for the guest to power off, then
// kills QEMU. Wait then returns ErrAborted.
func (s *Sandbox) Abort(reason string) {
	s.fail(fmt.Errorf("%w: %s", ErrAborted, reason))
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	_ = s.write(channel.TypeAbort, channel.Abort{Reason: reason}, 2*time.Second)
	select {
	case <-s.exited:
	case <-time.After(3 * time.Second):
		s.kill()
		<-s.exited
	}
}

// Wait waits for the sandbox to end and returns the workload's exit code.
// The error is non-nil when no exit code came back: boot timeout, abort,
// a guest error (*GuestError), QEMU dying, ctx ending (which kills the VM).
func (s *Sandbox) Wait(ctx context.Context) (int, error) {
	select {
	case <-s.exited:
	case <-ctx.Done():
		s.fail(fmt.Errorf("kvm: sandbox cancelled: %w", ctx.Err()))
		s.kill()
		<-s.exited
	}
	s.drain()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return -1, s.failErr
	}
	if s.state == stateExited {
		return s.exitCode, nil
	}
	return -1, s.endErrorLocked("the sandbox ended without a workload exit status")
}

func (s *Sandbox) endError(what string) error {
	s.drain()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endErrorLocked(what)
}

func (s *Sandbox) endErrorLocked(what string) error {
	if s.failErr != nil {
		return s.failErr
	}
	if s.guestErr != nil {
		return s.guestErr
	}
	detail := ""
	if s.procState != nil {
		detail = "QEMU " + s.procState.String()
	}
	if s.shutdown != "" {
		detail += ", shutdown reason " + s.shutdown
	}
	msg := fmt.Sprintf("kvm: %s (%s); last console lines:\n%s", what, strings.TrimPrefix(detail, ", "), s.consoleTail())
	if t := strings.TrimSpace(s.qerr.String()); t != "" {
		msg += "\nQEMU said:\n" + t
	}
	return errors.New(msg)
}

// ShutdownReason is the reason of QEMU's SHUTDOWN event ("guest-shutdown"
// when the guest powered off, "host-qmp-quit" after Close, ...), or "" when
// QEMU ended without one (killed).
func (s *Sandbox) ShutdownReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// MaxRSSKiB returns QEMU's peak resident memory (its VmHWM, from the
// rusage of the reaped process) once the sandbox has ended, else 0.
func (s *Sandbox) MaxRSSKiB() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procState == nil {
		return 0
	}
	if ru, ok := s.procState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// closeConns stops the watcher and closes the connections to QEMU's
// monitor and to the agent.
func (s *Sandbox) closeConns() {
	if s.stopWatch != nil {
		s.stopWatch()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.qmp != nil {
		s.qmp.Close()
	}
}

// Close ends QEMU if it still runs (QMP "quit", SIGKILL if that does not
// work within a second or two) and releases everything the sandbox holds
// (connections, cgroup). Always safe to call, also more than once.
func (s *Sandbox) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.proc != nil {
			select {
			case <-s.exited:
			default:
				s.fail(errors.New("kvm: sandbox closed"))
				// Ask QEMU to quit over QMP; kill it if that does not work at once.
				if s.qmp != nil {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, err := s.qmp.Execute(ctx, "quit", nil)
					cancel()
					if err == nil {
						select {
						case <-s.exited:
						case <-time.After(2 * time.Second):
						}
					}
				}
				s.kill()
				<-s.exited
			}
			s.drain()
		}
		s.closeConns()
		for _, f := range s.files {
			f.Close()
		}
		s.closePodSlots()
		if s.tmpDir != "" {
			os.RemoveAll(s.tmpDir)
		}
		if s.cfg.RunDir != "" {
			os.Remove(filepath.Join(s.cfg.RunDir, qmpSocket))
			os.Remove(filepath.Join(s.cfg.RunDir, channelSocket))
		}
		err = s.cg.remove()
		s.conf.release()
	})
	return err
}
