package agent

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// podDir holds the roots of a pod's containers but the first (whose root
// is channel.RootfsDir): podDir/N/{image,upper,rootfs}.
const podDir = "/run/bulwark/ctr"

// pod is a pod sandbox's containers (Start.Pod): each a process group the
// agent runs chrooted in a root of its own. Their exit statuses come from
// the one reaper (reapPod). Safe for concurrent use.
type pod struct {
	hostname string
	wake     chan struct{} // a container process started: the reaper has a child again
	stopCh   chan struct{} // closed by stop
	wg       sync.WaitGroup

	mu         sync.Mutex
	containers map[int]*podContainer
	byPID      map[int]*podContainer
	stopping   bool
}

// podContainer is one container of a pod.
type podContainer struct {
	name string
	root string
	w    workload
	pid  int        // 0 until its process exists
	code chan int   // its exit code, from the reaper
	in   *execInput // its stdin and terminal (podtty_linux.go); nil without
	// ended: its CONTAINER_EXIT was sent, or it failed to start; only
	// then may CONTAINER_REMOVE forget it (podremove_linux.go).
	ended bool
}

// runPod is the "workload" of a pod sandbox: nothing runs until the host
// adds containers (CONTAINER_START, handled by watchHost); it ends when
// the host stops the pod and every process is gone, with code 0.
func (s *session) runPod(hostname string) (int, error) {
	s.pod = &pod{hostname: hostname, wake: make(chan struct{}, 1), stopCh: make(chan struct{}),
		containers: map[int]*podContainer{}, byPID: map[int]*podContainer{}}
	if err := s.send(channel.TypeStarted, channel.Started{PID: os.Getpid()}); err != nil {
		return 0, fmt.Errorf("sending STARTED: %w", err)
	}
	go s.watchHost(0, nil)
	s.reapPod()
	s.pod.wg.Wait() // every CONTAINER_EXIT sent before EXIT
	return 0, nil
}

// reapPod waits for every child of the agent and hands each exit code to
// its container or exec, until the pod is stopping and no child is left.
func (s *session) reapPod() {
	p := s.pod
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil { // ECHILD: nothing runs
			p.mu.Lock()
			stopping := p.stopping
			p.mu.Unlock()
			if stopping {
				return
			}
			select {
			case <-p.wake:
			case <-p.stopCh:
			}
			continue
		}
		sig := 0
		if ws.Signaled() {
			sig = int(ws.Signal())
		}
		code := ExitCode(ws.Exited(), ws.ExitStatus(), ws.Signaled(), sig)
		p.mu.Lock()
		c, ok := p.byPID[wpid]
		if ok {
			delete(p.byPID, wpid)
		}
		p.mu.Unlock()
		if ok {
			c.code <- code
		} else {
			s.execs.reaped(wpid, code)
		}
	}
}

// stop ends the pod: SIGTERM to every container's process group now,
// SIGKILL to every process after grace. The pod's EXIT follows once
// nothing runs.
func (p *pod) stop(grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return
	}
	p.stopping = true
	close(p.stopCh)
	for _, c := range p.containers {
		if c.pid > 0 {
			_ = unix.Kill(-c.pid, unix.SIGTERM)
		}
	}
	time.AfterFunc(grace, func() { _ = unix.Kill(-1, unix.SIGKILL) })
}

// kill sends a signal to one container's process group.
func (p *pod) kill(k *channel.ContainerKill) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.containers[k.Index]; ok && c.pid > 0 {
		_ = unix.Kill(-c.pid, unix.Signal(k.Signal))
	}
}

// workloadOf is what an exec in container index shares with it.
func (p *pod) workloadOf(index int) (workload, string, error) {
	if p == nil {
		return workload{}, "", errors.New("this sandbox is not a pod: it has no containers")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.containers[index]
	if !ok || c.pid == 0 {
		return workload{}, "", fmt.Errorf("the pod has no container %d", index)
	}
	return c.w, c.root, nil
}

// startContainer runs one CONTAINER_START: its image disk checked against
// the digest the host measured, its root mounted, its process started;
// CONTAINER_STARTED says so (or why not), its output goes out as
// CONTAINER_OUT and its exit as CONTAINER_EXIT.
func (s *session) startContainer(cs *channel.ContainerStart) {
	p := s.pod
	p.mu.Lock()
	_, dup := p.containers[cs.Index]
	stopping := p.stopping
	c := &podContainer{name: cs.Name, code: make(chan int, 1), in: newInput(cs.Stdin, cs.TTY)}
	if !dup && !stopping {
		p.containers[cs.Index] = c
		p.wg.Add(1)
	}
	p.mu.Unlock()
	fail := func(err error) {
		s.log.Error("container not started", "container", cs.Name, "err", err)
		if !dup {
			p.mu.Lock()
			c.ended = true
			p.mu.Unlock()
		}
		_ = s.send(channel.TypeContainerStarted, channel.ContainerStarted{Index: cs.Index, Error: err.Error()})
	}
	switch {
	case dup:
		fail(fmt.Errorf("container %d exists already in this pod", cs.Index))
		return
	case stopping:
		fail(errors.New("the pod is stopping"))
		return
	}
	defer p.wg.Done()
	defer c.in.end()
	proc, outs, err := s.spawnContainer(c, cs)
	if err != nil {
		fail(err)
		return
	}
	_ = s.send(channel.TypeContainerStarted, channel.ContainerStarted{Index: cs.Index, PID: proc.Pid})
	var wg sync.WaitGroup
	s.pumpOutputs(&wg, outs, func(stream byte, b []byte) error {
		return s.sendRaw(channel.TypeContainerOut, channel.ContainerOutput{Index: cs.Index, Stream: stream, Data: b}.Encode())
	})
	code := <-c.code
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		// Its background processes hold the pipes: end its process group.
		_ = unix.Kill(-proc.Pid, unix.SIGKILL)
	}
	// A container ends with its process, as one in a PID namespace of its
	// own: what it left running in its root (in its process group or
	// not, execs too) is killed, and nothing holds its pipes.
	p.mu.Lock()
	root := c.root
	p.mu.Unlock()
	if err := killInRoot(root, removeWait); err != nil {
		s.log.Error("ending what a container left running", "container", cs.Name, "err", err)
	}
	<-drained
	if err := s.send(channel.TypeContainerExit, channel.ContainerExit{Index: cs.Index, Code: code}); err != nil {
		s.log.Error("sending CONTAINER_EXIT", "err", err)
	}
	p.mu.Lock()
	c.ended = true
	p.mu.Unlock()
}

// spawnContainer prepares container cs's root and starts its process,
// registered with the reaper before it can exit; it returns the agent's
// ends of its output (stdout and stderr, or its terminal).
func (s *session) spawnContainer(c *podContainer, cs *channel.ContainerStart) (*os.Process, []*os.File, error) {
	root, cfg, err := mountContainerRoot(cs)
	if err != nil {
		return nil, nil, err
	}
	argv, w, err := containerWorkload(root, cfg, cs, s.pod.hostname)
	if err != nil {
		return nil, nil, err
	}
	env, workDir, id := w.env, w.workDir, w.id
	prog, err := LookPath(root, argv[0], env, workDir)
	if err != nil {
		return nil, nil, err
	}
	st, err := s.containerStdio(c, cs, root, id)
	if err != nil {
		return nil, nil, err
	}
	sys := &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.groups()},
		Setsid:     true,
	}
	setTTYAttr(sys, cs.TTY)
	p := s.pod
	p.mu.Lock()
	proc, err := os.StartProcess(prog, argv, &os.ProcAttr{Dir: workDir, Env: env, Files: st.child, Sys: sys})
	if err == nil {
		c.root, c.w, c.pid = root, workload{env: env, workDir: workDir, id: id}, proc.Pid
		p.byPID[proc.Pid] = c
	}
	p.mu.Unlock()
	st.closeChild() // the process holds its own copies
	if err != nil {
		st.closeParent()
		return nil, nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return proc, st.out, nil
}

// containerWorkload is what container cs runs in its root, from its
// image's config cfg: its command, and its environment, working directory
// (made in the root, the user's, when missing) and identity, with what
// the host set over the image's (cs.Env, WorkingDir, User: the spec's, as
// measured into its launch event) applied. Its identity has the pod's
// secrets group (PodSecretsGID) besides its own.
func containerWorkload(root string, cfg channel.ImageConfig, cs *channel.ContainerStart, hostname string) ([]string, workload, error) {
	cfg = Override(cfg, &channel.Start{Env: cs.Env, WorkingDir: cs.WorkingDir, User: cs.User})
	argv, err := Command(cfg, cs.Args)
	if err != nil {
		return nil, workload{}, err
	}
	id, err := ResolveUser(root, cfg.User)
	if err != nil {
		return nil, workload{}, err
	}
	id.Groups = []uint32{PodSecretsGID}
	env := Env(cfg.Env, id.Home, hostname)
	workDir := cfg.WorkingDir
	if workDir == "" {
		workDir = "/"
	}
	if !path.IsAbs(workDir) {
		return nil, workload{}, fmt.Errorf("working directory %q is not absolute", workDir)
	}
	if err := MkdirAllInRoot(root, workDir, id); err != nil {
		return nil, workload{}, fmt.Errorf("working directory %s: %w", workDir, err)
	}
	return argv, workload{env: env, workDir: workDir, id: id}, nil
}

// mountContainerRoot checks container cs's image disk against the digest
// and size the host measured and returns its root and the image's config.
// Container 0's image is the launch's own disk, already mounted at
// channel.RootfsDir; another's is the disk in its slot, mounted read-only
// under a tmpfs upper layer at podDir/N/rootfs, with its pseudo filesystems
// and the pod's secrets (read-only) at /run/secrets.
func mountContainerRoot(cs *channel.ContainerStart) (string, channel.ImageConfig, error) {
	var cfg channel.ImageConfig
	name := imageDevice
	if cs.Index > 0 {
		var err error
		if name, err = waitSerial(channel.ContainerSlotSerial(cs.Index), diskWait); err != nil {
			return "", cfg, err
		}
	}
	dev, err := waitDisk(name, diskWait)
	if err != nil {
		return "", cfg, err
	}
	if err := verifyDisk(dev, cs.DiskDigest, cs.DiskSize); err != nil {
		return "", cfg, err
	}
	if cs.Index == 0 {
		cfg, err = readImageConfig(filepath.Join(channel.ImageMount, channel.DiskConfig))
		return channel.RootfsDir, cfg, err
	}
	base := filepath.Join(podDir, strconv.Itoa(cs.Index))
	image, upper, root := filepath.Join(base, "image"), filepath.Join(base, "upper"), filepath.Join(base, "rootfs")
	if err := mount(dev, image, "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return "", cfg, fmt.Errorf("the container's image disk: %w", err)
	}
	if cfg, err = readImageConfig(filepath.Join(image, channel.DiskConfig)); err != nil {
		return "", cfg, err
	}
	if err := mount("tmpfs", upper, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return "", cfg, err
	}
	for _, d := range []string{"data", "work"} {
		if err := os.Mkdir(filepath.Join(upper, d), 0o755); err != nil {
			return "", cfg, fmt.Errorf("overlay: %w", err)
		}
	}
	opts := "lowerdir=" + filepath.Join(image, channel.DiskRootfs) + ",upperdir=" + upper + "/data,workdir=" + upper + "/work"
	if err := mount("overlay", root, "overlay", 0, opts); err != nil {
		return "", cfg, fmt.Errorf("the container's root: %w", err)
	}
	if err := mountRootfsAt(root); err != nil {
		return "", cfg, err
	}
	if st, err := os.Stat(secretsDir); err == nil && st.IsDir() {
		dst := filepath.Join(root, "run/secrets")
		if err := mount(secretsDir, dst, "", unix.MS_BIND, ""); err != nil {
			return "", cfg, fmt.Errorf("the pod's secrets: %w", err)
		}
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return "", cfg, fmt.Errorf("the pod's secrets: read-only: %w", err)
		}
	}
	return root, cfg, nil
}

// verifyDisk drops what the guest cached of dev (the kernel probed the
// slot while it was empty), hashes its first size bytes and compares them
// with digest ("sha256:<hex>"), and checks that they are an erofs image.
func verifyDisk(dev, digest string, size int64) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("the container's image disk: %w", err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("the container's image disk: dropping cached blocks: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return fmt.Errorf("the container's image disk: %w", err)
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	if subtle.ConstantTimeCompare(h.Sum(nil), want) != 1 {
		return fmt.Errorf("the container's image disk is not the one the host measured (sha256:%x, want %s): not started", h.Sum(nil), digest)
	}
	var b [4]byte
	if _, err := f.ReadAt(b[:], 1024); err != nil {
		return fmt.Errorf("the container's image disk: %w", err)
	}
	if binary.LittleEndian.Uint32(b[:]) != erofsMagic {
		return errors.New("the container's image disk holds no erofs image")
	}
	return nil
}
