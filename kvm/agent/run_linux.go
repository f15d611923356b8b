package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/kvm/channel"
)

// portWait bounds the search for the virtio-serial port after module load.
const portWait = 20 * time.Second

// Main is the agent's entry point (PID 1). It never returns: it powers the
// VM off, whatever happened.
func Main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	defer func() {
		if r := recover(); r != nil {
			log.Error("agent crashed", "panic", r, "stack", string(debug.Stack()))
		}
		powerOff(log)
	}()
	if os.Getpid() != 1 {
		log.Error("bulwark-agent must run as /init (PID 1) inside a sandbox VM")
		os.Exit(1)
	}
	if err := run(log); err != nil {
		log.Error("agent failed", "err", err)
	}
}

func powerOff(log *slog.Logger) {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		log.Error("power off failed", "err", err)
	}
	// If power-off failed, exiting PID 1 panics the kernel; with panic=-1
	// and QEMU's -no-reboot that ends the VM too.
	os.Exit(1)
}

type session struct {
	log  *slog.Logger
	port *os.File
	wmu  sync.Mutex

	workload workload // set before the workload starts; read by execs
	execs    execs
	link     hostLink // whether the host end is connected (reattach_linux.go)
	keys     keyring  // for REVOKE and ROTATE (revoke_linux.go); watchHost's only
	pod      *pod     // a pod sandbox's containers (pod_linux.go); nil otherwise
	tty      *os.File // the workload's terminal (master), set before watchHost starts; nil without one

	ptsMu sync.Mutex
	ptmx  map[string]string // a root → the ptmx of the devpts mounted in it (devpts)
}

// devpts mounts a devpts instance of its own in root (mountDevpts) the
// first time a terminal is wanted there, and returns its ptmx: the
// workload's -t and every exec -t in that root share it.
func (s *session) devpts(root string) (string, error) {
	s.ptsMu.Lock()
	defer s.ptsMu.Unlock()
	if p, ok := s.ptmx[root]; ok {
		return p, nil
	}
	p, err := mountDevpts(root)
	if err != nil {
		return "", err
	}
	if s.ptmx == nil {
		s.ptmx = map[string]string{}
	}
	s.ptmx[root] = p
	return p, nil
}

func (s *session) send(t channel.Type, v any) error {
	s.link.wait()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := channel.WriteJSON(s.port, t, v)
	if err == nil {
		s.link.written(t, v)
	}
	if t == channel.TypeStarted {
		// The guest key that START's secrets were opened with is
		// collected once the workload runs: a clone's first collection
		// costs 50–120 ms under TCG (its code translated anew), which
		// the launch no longer waits for.
		go runtime.GC()
	}
	return err
}

func (s *session) sendRaw(t channel.Type, b []byte) error {
	s.link.wait()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return channel.WriteFrame(s.port, t, b)
}

// fail reports err to the host (best effort) and returns it.
func (s *session) fail(err error) error {
	if s.port != nil {
		_ = s.send(channel.TypeError, channel.Error{Message: err.Error()})
	}
	return err
}

func run(log *slog.Logger) error {
	if err := mountBase(); err != nil {
		return err
	}
	if err := loadModules(log); err != nil {
		return err
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	bench := hasParam(string(cmdline), "bulwark.bench")
	portPath, err := findPort(channel.PortName, portWait)
	if err != nil {
		return err
	}
	if bench {
		// Benchmark baseline: no host protocol, run the image's command.
		return runStandalone(log)
	}
	port, err := os.OpenFile(portPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", portPath, err)
	}
	// Only the agent talks to the host: the port's node goes away (the open
	// descriptor stays, and a virtio port cannot be opened twice).
	_ = os.Remove(portPath)
	s := &session{log: log, port: port}
	// No key and no random state of ours before the host's identity: a
	// guest resumed from a snapshot must not share them with its siblings.
	if err := s.send(channel.TypeReady, channel.Ready{Version: channel.Version}); err != nil {
		return fmt.Errorf("sending READY: %w", err)
	}
	first, err := ReadHostMessage(port)
	if err != nil {
		return s.fail(err)
	}
	if first.Abort != nil {
		log.Info("host aborted the launch", "reason", first.Abort.Reason)
		return s.fail(fmt.Errorf("aborted by host: %s", first.Abort.Reason))
	}
	if first.Identity == nil {
		return s.fail(errors.New("the host sent something else than IDENTITY first"))
	}
	if err := applyIdentity(log, first.Identity); err != nil {
		return s.fail(err)
	}
	// The image disk is mounted while this guest makes its key and the
	// host attests it: from here on, with the CRNG reseeded, what the
	// mount draws from it is this guest's own.
	image := mountImageAsync(log)
	key, err := wrap.GenerateKey()
	if err != nil {
		return s.fail(err)
	}
	if err := s.send(channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: key.PublicKey()}); err != nil {
		return fmt.Errorf("sending HELLO: %w", err)
	}
	msg, err := ReadHostMessage(port)
	if err != nil {
		return s.fail(err)
	}
	if msg.Abort != nil {
		log.Info("host aborted the launch", "reason", msg.Abort.Reason)
		return s.fail(fmt.Errorf("aborted by host: %s", msg.Abort.Reason))
	}
	start := msg.Start
	if start == nil {
		return s.fail(errors.New("the host sent something else than START or ABORT after HELLO"))
	}
	cfg, err := image.wait()
	if err != nil {
		return s.fail(err)
	}
	if err := mountVolumes(log, start.Mounts); err != nil {
		return s.fail(err)
	}
	cfg = Override(cfg, start)
	argv, err := Command(cfg, start.Args)
	if err != nil {
		return s.fail(err)
	}
	if start.Network != "" {
		if err := setupNetwork(log, start); err != nil {
			return s.fail(fmt.Errorf("network: %w", err))
		}
	}
	id, err := ResolveUser(channel.RootfsDir, cfg.User)
	if err != nil {
		return s.fail(err)
	}
	acc := secretsAccessFor(id, start.Pod)
	if err := openSecrets(key, start, acc); err != nil {
		return s.fail(err)
	}
	// The key stays for rotated secrets (ROTATE, wrapped to it) while the
	// sandbox holds secrets; a revocation drops it.
	if len(start.Secrets) > 0 {
		s.keys = keyring{key: key, sandboxID: start.SandboxID, access: acc}
	}
	key = nil // collected after STARTED (session.send)

	if start.SandboxID != first.Identity.SandboxID {
		return s.fail(fmt.Errorf("START names sandbox %q, but this guest is sandbox %q", start.SandboxID, first.Identity.SandboxID))
	}
	env := Env(cfg.Env, id.Home, hostname(first.Identity.SandboxID))
	var code int
	if start.Pod {
		code, err = s.runPod(hostname(first.Identity.SandboxID))
	} else {
		code, err = s.runWorkload(argv, env, cfg.WorkingDir, id, start.Stdin, start.TTY)
	}
	if err != nil {
		return s.fail(err)
	}
	if err := s.send(channel.TypeExit, channel.Exit{Code: code}); err != nil {
		return fmt.Errorf("sending EXIT: %w", err)
	}
	return nil
}

// hostname is the guest's hostname for a sandbox id: its first 12
// characters, as container runtimes shorten container ids.
func hostname(sandboxID string) string {
	if len(sandboxID) > 12 {
		return sandboxID[:12]
	}
	return sandboxID
}

func hasParam(cmdline, p string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == p || strings.HasPrefix(f, p+"=") {
			return true
		}
	}
	return false
}

func mountBase() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := mount(m.src, m.dst, m.fstype, unix.MS_NOSUID, ""); err != nil {
			return err
		}
	}
	return nil
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", dst, err)
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount %s on %s: %w", fstype, dst, err)
	}
	return nil
}

func loadModules(log *slog.Logger) error {
	man, err := readManifest()
	if err != nil {
		return err
	}
	if err := loadModuleFiles(man.Modules); err != nil {
		return err
	}
	log.Debug("modules loaded", "count", len(man.Modules))
	return nil
}

// findPort waits for the virtio-serial port called name and returns a
// device node for it: the /dev/vportNpM node devtmpfs creates, or one made
// with mknod from sysfs.
func findPort(name string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ents, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range ents {
			n, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
			if err != nil || strings.TrimSpace(string(n)) != name {
				continue
			}
			dev := filepath.Join("/dev", e.Name())
			if st, err := os.Stat(dev); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				return dev, nil
			}
			mm, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "dev"))
			if err != nil {
				continue
			}
			var maj, min uint32
			if _, err := fmt.Sscanf(strings.TrimSpace(string(mm)), "%d:%d", &maj, &min); err != nil {
				continue
			}
			node := "/run/bulwark-port"
			_ = os.Remove(node)
			if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(maj, min))); err != nil {
				return "", fmt.Errorf("mknod %s: %w", node, err)
			}
			return node, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("virtio-serial port %q did not appear within %v (virtio_console loaded? -device virtserialport,name=%s given?)", name, wait, name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mountRootfs gives the workload's root its pseudo filesystems.
func mountRootfs() error { return mountRootfsAt(channel.RootfsDir) }

// mountRootfsAt gives the root r (the workload's, or a pod container's)
// its pseudo filesystems.
func mountRootfsAt(r string) error {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", r + "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", r + "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, ""},
		{"devtmpfs", r + "/dev", "devtmpfs", unix.MS_NOSUID, ""},
		{"tmpfs", r + "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", r + "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"},
		{"tmpfs", r + "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		// A symlink in the image (e.g. /run -> /var/run) must not redirect
		// the mount outside the root: refuse it.
		if st, err := os.Lstat(m.dst); err == nil && st.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("image path %s is a symlink; cannot mount %s there", strings.TrimPrefix(m.dst, r), m.fstype)
		}
		if err := mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	return nil
}

// openSecrets unwraps every secret into tmpfs /run/secrets/NAME, owned
// and readable as secretsAccessFor says. The first secret that does not
// open stops everything: the workload never starts.
func openSecrets(key *wrap.PrivateKey, start *channel.Start, acc secretsAccess) error {
	if len(start.Secrets) == 0 {
		return nil
	}
	dir := path.Join(channel.RootfsDir, "run/secrets")
	if err := mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0500,size=64m"); err != nil {
		return err
	}
	return unwrapSecrets(dir, key, start, acc)
}

// unwrapSecrets unwraps start's secrets into dir (made acc's, its mode
// acc.dirMode()) as files of acc's owner and mode.
func unwrapSecrets(dir string, key *wrap.PrivateKey, start *channel.Start, acc secretsAccess) error {
	if err := os.Chown(dir, int(acc.owner.UID), int(acc.owner.GID)); err != nil {
		return fmt.Errorf("secrets directory: %w", err)
	}
	if err := os.Chmod(dir, acc.dirMode()); err != nil {
		return fmt.Errorf("secrets directory: %w", err)
	}
	for _, sec := range start.Secrets {
		pt, err := key.Open(start.SandboxID, sec.Name, sec.Wrapped)
		if err != nil {
			return fmt.Errorf("secret %q does not open with this sandbox's key: the workload was not started", sec.Name)
		}
		p := path.Join(dir, sec.Name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
		if err == nil {
			_, err = f.Write(pt)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		clear(pt)
		if err == nil {
			err = os.Chown(p, int(acc.owner.UID), int(acc.owner.GID))
		}
		if err == nil {
			err = os.Chmod(p, acc.mode)
		}
		if err != nil {
			return fmt.Errorf("writing secret %q: %w", sec.Name, err)
		}
	}
	return nil
}

// runWorkload starts argv chrooted into the image root as id, streams its
// output to the host and returns its exit code. Orphans are reaped (the
// agent is PID 1); when the main process exits, whatever it left running
// is killed once its output is drained. With tty, the workload runs on a
// new pseudo-terminal of that size (runOnTTY) instead of pipes.
func (s *session) runWorkload(argv, env []string, workDir string, id Identity, withStdin bool, tty *channel.WindowSize) (int, error) {
	if workDir == "" {
		workDir = "/"
	}
	if !path.IsAbs(workDir) {
		return 0, fmt.Errorf("working directory %q is not absolute", workDir)
	}
	if err := MkdirAllInRoot(channel.RootfsDir, workDir, id); err != nil {
		return 0, fmt.Errorf("working directory %s: %w", workDir, err)
	}
	prog, err := LookPath(channel.RootfsDir, argv[0], env, workDir)
	if err != nil {
		return 0, err
	}
	if tty != nil {
		return s.runOnTTY(prog, argv, env, workDir, id, withStdin, *tty)
	}
	devnull, err := os.Open("/dev/null")
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	stdin := devnull
	var feed *stdinFeed
	if withStdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			return 0, err
		}
		stdin, feed = inR, newStdinFeed(inW)
		defer feed.Close()
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	proc, err := os.StartProcess(prog, argv, &os.ProcAttr{
		Dir:   workDir,
		Env:   env,
		Files: []*os.File{stdin, outW, errW},
		Sys: &syscall.SysProcAttr{
			Chroot:     channel.RootfsDir,
			Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.groups()},
			Setsid:     true,
		},
	})
	outW.Close()
	errW.Close()
	if err != nil {
		if feed != nil {
			stdin.Close()
		}
		outR.Close()
		errR.Close()
		return 0, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	s.workload = workload{env: env, workDir: workDir, id: id}
	if err := s.send(channel.TypeStarted, channel.Started{PID: proc.Pid}); err != nil {
		return 0, fmt.Errorf("sending STARTED: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go s.pump(&wg, outR, func(b []byte) error { return s.sendRaw(channel.TypeStdout, b) })
	go s.pump(&wg, errR, func(b []byte) error { return s.sendRaw(channel.TypeStderr, b) })
	if feed != nil {
		stdin.Close() // the workload has its own copy: writes fail once it is gone
	}
	go s.watchHost(proc.Pid, feed)
	return s.waitDrained(proc.Pid, &wg)
}

// runOnTTY is runWorkload with a terminal (docker run -t): the workload
// gets a new pseudo-terminal of the workload root's own devpts as stdin,
// stdout, stderr and controlling terminal, leading a session of its own
// (so ^C typed on the host's terminal reaches its foreground process
// group as SIGINT). What it writes comes back as STDOUT frames; with
// withStdin the host's STDIN frames are typed into it, and RESIZE frames
// change its size. An end of input leaves the terminal open: a terminal
// has no end of file, only a ^D its line discipline reads.
func (s *session) runOnTTY(prog string, argv, env []string, workDir string, id Identity, withStdin bool, ws channel.WindowSize) (int, error) {
	ptmx, err := s.devpts(channel.RootfsDir)
	if err != nil {
		return 0, fmt.Errorf("terminal: %w", err)
	}
	master, slave, err := openPTY(ptmx, ws, int(id.UID), int(id.GID))
	if err != nil {
		return 0, err
	}
	proc, err := os.StartProcess(prog, argv, &os.ProcAttr{
		Dir:   workDir,
		Env:   env,
		Files: []*os.File{slave, slave, slave},
		Sys: &syscall.SysProcAttr{
			Chroot:     channel.RootfsDir,
			Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.groups()},
			Setsid:     true,
			Setctty:    true,
			Ctty:       0, // the child's stdin
		},
	})
	slave.Close() // the workload holds it: the master reads EIO once every holder is gone
	if err != nil {
		master.Close()
		return 0, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	s.workload = workload{env: env, workDir: workDir, id: id}
	s.tty = master
	if err := s.send(channel.TypeStarted, channel.Started{PID: proc.Pid}); err != nil {
		return 0, fmt.Errorf("sending STARTED: %w", err)
	}
	var feed *stdinFeed
	if withStdin {
		feed = newStdinFeed(ttyInput{master})
		defer feed.Close()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go s.pump(&wg, master, func(b []byte) error { return s.sendRaw(channel.TypeStdout, b) })
	go s.watchHost(proc.Pid, feed)
	return s.waitDrained(proc.Pid, &wg)
}

// ttyInput is the workload's input on its terminal: writes go to the
// master; closing it (the end of the host's input) leaves the master open
// for the output.
type ttyInput struct{ f *os.File }

func (t ttyInput) Write(b []byte) (int, error) { return t.f.Write(b) }
func (t ttyInput) Close() error                { return nil }

// waitDrained reaps until the workload (pid) exits, then waits for its
// output (wg, the pumps) to end, killing whatever still holds it open,
// and returns its exit code.
func (s *session) waitDrained(pid int, wg *sync.WaitGroup) (int, error) {
	code := s.reapUntil(pid)
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		// Background processes hold the pipes open: end them.
		_ = unix.Kill(-1, unix.SIGKILL)
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
			return code, errors.New("workload output did not close after its processes were killed")
		}
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	return code, nil
}

// pump sends what r carries (a process's output pipe) as frames until
// its end; if sending fails, the rest is read and dropped, so the process
// never blocks on a full pipe.
func (s *session) pump(wg *sync.WaitGroup, r *os.File, send func([]byte) error) {
	defer wg.Done()
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := send(buf[:n]); werr != nil {
				s.log.Error("sending output", "err", werr)
				io.Copy(io.Discard, r)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// reapUntil waits for any child until pid exits and returns its exit code;
// the exit codes of the other children go to their execs.
func (s *session) reapUntil(pid int) int {
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 255
		}
		sig := 0
		if ws.Signaled() {
			sig = int(ws.Signal())
		}
		code := ExitCode(ws.Exited(), ws.ExitStatus(), ws.Signaled(), sig)
		if wpid == pid {
			return code
		}
		s.execs.reaped(wpid, code)
	}
}

// watchHost follows the host while the workload runs: PING is answered
// with PONG; ABORT ends the VM at once; STOP sends SIGTERM to the workload's process group (it leads its
// own session) and SIGKILL to every process after the grace period, and the
// exit status is then reported as usual.
func (s *session) watchHost(pid int, feed *stdinFeed) {
	for {
		msg, err := ReadHostMessage(s.port)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The host process is gone (reads end while nobody is
			// connected): hold every frame until one reattaches.
			s.link.lost()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			return
		}
		switch {
		case msg.Reattach != nil:
			s.reattached(msg.Reattach)
		case msg.ContainerStdin != nil && s.pod != nil:
			s.containerStdin(msg.ContainerStdin)
		case msg.ContainerResize != nil && s.pod != nil:
			s.containerResize(msg.ContainerResize)
		case msg.Abort != nil:
			s.log.Info("host aborted the workload", "reason", msg.Abort.Reason)
			_ = s.send(channel.TypeError, channel.Error{Message: "aborted by host: " + msg.Abort.Reason})
			powerOff(s.log)
		case msg.Stop != nil && s.pod != nil:
			s.pod.stop(time.Duration(msg.Stop.GraceSeconds) * time.Second)
		case msg.ContainerStart != nil && s.pod != nil:
			go s.startContainer(msg.ContainerStart)
		case msg.ContainerKill != nil && s.pod != nil:
			s.pod.kill(msg.ContainerKill)
		case msg.ContainerRemove != nil && s.pod != nil:
			go s.removeContainer(msg.ContainerRemove.Index)
		case msg.Stop != nil:
			grace := time.Duration(msg.Stop.GraceSeconds) * time.Second
			s.log.Info("host stops the workload", "grace", grace)
			_ = unix.Kill(-pid, unix.SIGTERM)
			time.AfterFunc(grace, func() { _ = unix.Kill(-1, unix.SIGKILL) })
		case msg.Ping != nil:
			_ = s.send(channel.TypePong, msg.Ping)
		case msg.Exec != nil:
			s.execs.register(msg.Exec) // before any EXEC_STDIN that follows it
			go s.runExec(msg.Exec, s.execs.expect(msg.Exec.ID))
		case msg.ExecSignal != nil:
			s.execs.signal(msg.ExecSignal.ID, syscall.Signal(msg.ExecSignal.Signal))
		case msg.ExecStdin != nil:
			s.execStdin(msg.ExecStdin)
		case msg.ExecResize != nil:
			s.execResize(msg.ExecResize)
		case msg.StdinEOF:
			if feed != nil {
				feed.Close()
			}
		case msg.Stdin != nil:
			if feed != nil {
				feed.Push(msg.Stdin)
			}
		case msg.Resize != nil:
			if s.tty == nil {
				s.log.Warn("ignoring a RESIZE: the workload has no terminal")
			} else if err := setWindowSize(s.tty, *msg.Resize); err != nil {
				s.log.Warn("resizing the workload's terminal", "err", err)
			}
		case msg.Revoke != nil:
			s.revoke(pid, msg.Revoke)
			if s.pod != nil && msg.Revoke.Action == channel.RevokeStop {
				s.pod.stop(time.Duration(msg.Revoke.GraceSeconds) * time.Second)
			}
		case msg.Rotate != nil:
			s.rotate(msg.Rotate)
		default:
			s.log.Warn("ignoring a frame the workload's state does not take (START, or a container frame outside a pod)")
		}
	}
}

// runStandalone is the benchmark baseline: the same guest setup, the
// image's command with output on the console, no host protocol.
func runStandalone(log *slog.Logger) error {
	cfg, err := mountImage(log)
	if err != nil {
		return err
	}
	argv, err := Command(cfg, nil)
	if err != nil {
		return err
	}
	id, err := ResolveUser(channel.RootfsDir, cfg.User)
	if err != nil {
		return err
	}
	env := Env(cfg.Env, id.Home, "bench")
	wd := cfg.WorkingDir
	if wd == "" {
		wd = "/"
	}
	prog, err := LookPath(channel.RootfsDir, argv[0], env, wd)
	if err != nil {
		return err
	}
	proc, err := os.StartProcess(prog, argv, &os.ProcAttr{
		Dir: wd, Env: env, Files: []*os.File{nil, os.Stderr, os.Stderr},
		Sys: &syscall.SysProcAttr{Chroot: channel.RootfsDir, Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.groups()}},
	})
	if err != nil {
		return err
	}
	code := (&session{}).reapUntil(proc.Pid)
	log.Info("workload exited", "code", code)
	return nil
}

// applyIdentity adds the host's entropy to the kernel's pool and forces a
// CRNG reseed (writing to /dev/urandom alone does not reseed: guests
// resumed from one snapshot would go on drawing identical bytes), then sets
// the wall clock. Errors are fatal: a guest whose randomness could be a
// sibling's must not make a key.
func applyIdentity(log *slog.Logger, id *channel.Identity) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	defer f.Close()
	if err := addEntropy(int(f.Fd()), id.Entropy); err != nil {
		return fmt.Errorf("identity: RNDADDENTROPY: %w", err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.RNDRESEEDCRNG, 0); err != nil {
		return fmt.Errorf("identity: RNDRESEEDCRNG: %w", err)
	}
	ts := unix.NsecToTimespec(id.UnixNano)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("identity: setting the clock: %w", err)
	}
	if err := unix.Sethostname([]byte(hostname(id.SandboxID))); err != nil {
		return fmt.Errorf("identity: setting the hostname: %w", err)
	}
	log.Info("identity applied: entropy added, CRNG reseeded, clock set", "entropy_bytes", len(id.Entropy), "time", time.Unix(0, id.UnixNano).UTC().Format(time.RFC3339))
	return nil
}
