package kvm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/kvm/channel"
)

// The host side of the guest protocol (docs/sandbox.md, "The guest
// channel") as a state machine. Every frame from the guest is untrusted: it
// is accepted only in the state that expects it, and anything else ends
// the sandbox as a protocol violation.
//
//	booting ──READY──▶ identified ──HELLO──▶ keyed ──(host START)──▶ starting
//	   │                 ▲                                              │
//	   │ (template)      └─ a clone starts here: its agent said          ├─STARTED─▶ running ──EXIT──▶ exited
//	   └──READY──▶ held     READY before the snapshot; the host          │              │
//	              (snapshot) sends IDENTITY after resuming               └─ERROR─▶ failed ◀─ERROR─┘
//
// ERROR may also come in booting, identified and keyed (the agent failed).
// In running, STDOUT/STDERR carry output, PONG answers a PING, and
// EXEC_OUT/EXEC_EXIT an EXEC (exec.go).
type guestState int

const (
	stateBooting     guestState = iota // waiting for READY
	stateIdentified                    // IDENTITY sent (after READY, or on resume); waiting for HELLO
	stateHeld                          // making a template: READY seen, the guest is held for its snapshot
	stateKeyed                         // HELLO: the guest key is known; the host may START
	stateStarting                      // START sent; waiting for STARTED or ERROR
	stateRunning                       // the workload runs
	stateExited                        // EXIT: the workload's status is known
	stateFailed                        // ERROR from the agent
	stateReattaching                   // Reattach: REATTACH sent and REATTACHED seen; waiting for STATUS
)

func (st guestState) String() string {
	return [...]string{"booting", "identified", "held for a template snapshot", "keyed", "starting", "running", "exited", "failed", "reattaching"}[st]
}

// accepts lists, per state, the guest frames it accepts.
var accepts = map[guestState][]channel.Type{
	stateBooting:     {channel.TypeReady, channel.TypeError},
	stateIdentified:  {channel.TypeHello, channel.TypeError},
	stateHeld:        nil,
	stateKeyed:       {channel.TypeError},
	stateStarting:    {channel.TypeStarted, channel.TypeError},
	stateRunning:     {channel.TypeStdout, channel.TypeStderr, channel.TypePong, channel.TypeExecOut, channel.TypeExecExit, channel.TypeDone, channel.TypeExit, channel.TypeError, channel.TypeContainerStarted, channel.TypeContainerOut, channel.TypeContainerExit, channel.TypeContainerRemoved},
	stateExited:      nil,
	stateFailed:      nil,
	stateReattaching: {channel.TypeStatus},
}

// expect checks that the guest may send t now. s.mu is held.
func (s *Sandbox) expect(t channel.Type) error {
	for _, a := range accepts[s.state] {
		if a == t {
			return nil
		}
	}
	switch {
	case s.state == stateHeld:
		return fmt.Errorf("unexpected %s frame: the guest is %s", t, s.state)
	case t == channel.TypeHello && s.state == stateBooting:
		return errors.New("HELLO before READY (an agent of an older protocol: rebuild the base initramfs)")
	case t == channel.TypeReady && s.state != stateBooting:
		return errors.New("second READY")
	case t == channel.TypeHello && s.state > stateIdentified:
		return errors.New("second HELLO")
	case (t == channel.TypeStdout || t == channel.TypeStderr) && s.state < stateRunning:
		return fmt.Errorf("%s before the workload started", t)
	case t == channel.TypeStarted || t == channel.TypeExit:
		return fmt.Errorf("%s out of order (the guest is %s)", t, s.state)
	case t.Known():
		return fmt.Errorf("unexpected %s frame from the guest (it is %s)", t, s.state)
	}
	return fmt.Errorf("unexpected %s frame from the guest", t)
}

// readGuest reads the agent's frames from r (on s.conn) until the
// channel closes.
func (s *Sandbox) readGuest(r *bufio.Reader) {
	defer close(s.readerDone)
	for {
		t, body, err := channel.ReadFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				select {
				case <-s.exited:
				default:
					s.fail(fmt.Errorf("kvm: guest channel: %w", err))
					s.kill()
				}
			}
			return
		}
		if err := s.handleFrame(t, body); err != nil {
			s.fail(fmt.Errorf("kvm: guest protocol violation: %w", err))
			s.kill()
			return
		}
		if t == channel.TypeReady && s.mode.templateRAM == nil {
			if err := s.sendIdentity(); err != nil {
				s.fail(err)
				s.kill()
				return
			}
		}
	}
}

// sendIdentity sends IDENTITY: fresh entropy from this host's CSPRNG, the
// wall-clock time and the sandbox id. The guest mixes the entropy in,
// forces a reseed, sets its clock and name before it makes its key (see
// channel.Identity). For a clone it is the first thing after resuming.
func (s *Sandbox) sendIdentity() error {
	id := channel.Identity{Entropy: make([]byte, 64)}
	if _, err := io.ReadFull(s.cfg.random(), id.Entropy); err != nil {
		return fmt.Errorf("kvm: entropy for the guest: %w", err)
	}
	id.UnixNano = s.cfg.now().UnixNano()
	id.SandboxID = s.cfg.Name
	return s.write(channel.TypeIdentity, id, 2*time.Second)
}

// handleFrame applies one guest frame to the sandbox state.
func (s *Sandbox) handleFrame(t channel.Type, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.expect(t); err != nil {
		return err
	}
	switch t {
	case channel.TypeReady:
		var r channel.Ready
		if err := channel.Decode(t, body, &r); err != nil {
			return err
		}
		if r.Version != channel.Version {
			return fmt.Errorf("agent speaks protocol version %d, want %d (rebuild the base initramfs)", r.Version, channel.Version)
		}
		if s.mode.templateRAM != nil {
			s.state = stateHeld
			close(s.ready) // the template is snapshotted as it waits for IDENTITY
		} else {
			s.state = stateIdentified // readGuest sends IDENTITY
		}
	case channel.TypeHello:
		var h channel.Hello
		if err := channel.Decode(t, body, &h); err != nil {
			return err
		}
		if h.Version != channel.Version {
			return fmt.Errorf("agent speaks protocol version %d, want %d (rebuild the base initramfs)", h.Version, channel.Version)
		}
		if len(h.PublicKey) != wrap.PublicKeySize {
			return fmt.Errorf("guest public key is %d bytes, want %d", len(h.PublicKey), wrap.PublicKeySize)
		}
		s.guestKey = h.PublicKey
		s.state = stateKeyed
		close(s.hello)
	case channel.TypeStarted:
		var st channel.Started
		if err := channel.Decode(t, body, &st); err != nil {
			return err
		}
		s.state = stateRunning
		close(s.started)
	case channel.TypeStdout, channel.TypeStderr:
		w := s.cfg.Stdout
		if t == channel.TypeStderr {
			w = s.cfg.Stderr
		}
		s.mu.Unlock()
		_, _ = w.Write(body) // a failing writer loses output, not the sandbox
		s.mu.Lock()
	case channel.TypeExit:
		var e channel.Exit
		if err := channel.Decode(t, body, &e); err != nil {
			return err
		}
		if e.Code < 0 || e.Code > 255 {
			return fmt.Errorf("exit code %d out of range", e.Code)
		}
		s.exitCode = e.Code
		s.state = stateExited
	case channel.TypePong:
		var p channel.Ping
		if err := channel.Decode(t, body, &p); err != nil {
			return err
		}
		ch, ok := s.pongs[p.Seq]
		if !ok {
			return fmt.Errorf("PONG %d answers no PING", p.Seq)
		}
		delete(s.pongs, p.Seq)
		close(ch)
	case channel.TypeExecOut, channel.TypeExecExit:
		return s.handleExecFrame(t, body)
	case channel.TypeStatus:
		var st channel.Status
		if err := channel.Decode(t, body, &st); err != nil {
			return err
		}
		if err := st.Validate(); err != nil {
			return err
		}
		if err := s.adoptContainers(&st); err != nil {
			return err
		}
		if st.Version == 0 {
			st.Version = 6 // the last version whose STATUS named none
		}
		s.agentVersion.Store(int32(st.Version))
		s.state = stateRunning
		if st.State == "exited" {
			s.state, s.exitCode = stateExited, st.Code
		}
		close(s.reattachedCh)
	case channel.TypeDone:
		return s.handleDone(body)
	case channel.TypeContainerStarted, channel.TypeContainerOut, channel.TypeContainerExit, channel.TypeContainerRemoved:
		return s.handleContainerFrame(t, body)
	case channel.TypeError:
		var e channel.Error
		if err := channel.Decode(t, body, &e); err != nil {
			return err
		}
		msg := e.Message
		if len(msg) > 4096 {
			msg = msg[:4096] + "..."
		}
		s.guestErr = &GuestError{Message: sanitize(msg)}
		if s.state <= stateStarting {
			s.startErr = s.guestErr
			close(s.started)
		}
		s.state = stateFailed
	}
	return nil
}

// GuestKey waits for the agent's HELLO and returns its ephemeral public key
// (enclave/wrap, 32 bytes). It fails when the boot times out, QEMU exits
// or ctx ends.
func (s *Sandbox) GuestKey(ctx context.Context) ([]byte, error) {
	select {
	case <-s.hello:
	case <-s.exited:
		select {
		case <-s.hello:
		default:
			return nil, s.endError("the guest stopped before its agent started")
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guestKey == nil {
		return nil, s.endErrorLocked("no guest key")
	}
	return append([]byte(nil), s.guestKey...), nil
}

// StartWorkload sends the wrapped secrets (wrapped for this sandbox's id,
// Config.Name), an optional command (args replaces the image's
// entrypoint+cmd) and Config's Env, WorkingDir, User, Network, volumes, Stdin and TTY to the agent, and waits until the workload process
// exists, its image mounted. If a secret does not open, the workload never
// starts and the error is a *GuestError. It may be called once.
func (s *Sandbox) StartWorkload(ctx context.Context, secrets []Secret, args []string) error {
	if _, err := s.GuestKey(ctx); err != nil {
		return err
	}
	msg := channel.Start{SandboxID: s.cfg.Name, Secrets: secrets, Args: args,
		Env: s.cfg.Env, WorkingDir: s.cfg.WorkingDir, User: s.cfg.User, Network: s.cfg.Network, Mounts: s.cfg.mounts(),
		Stdin: s.cfg.Stdin != nil, Pod: s.cfg.Pod, TTY: s.cfg.TTY}
	if s.cfg.Network == NetworkTap {
		// The MAC too: a clone's device has its template's (the
		// migrated device state), which the agent replaces.
		msg.Address, msg.Gateway, msg.MAC = s.podAddr, s.podGateway, s.podMAC
	}
	if err := msg.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	s.mu.Lock()
	if s.state != stateKeyed {
		st := s.state
		s.mu.Unlock()
		return fmt.Errorf("kvm: StartWorkload: the guest is %s, not waiting for START (called twice?)", st)
	}
	s.state = stateStarting
	s.mu.Unlock()
	if err := s.write(channel.TypeStart, msg, 30*time.Second); err != nil {
		return err
	}
	select {
	case <-s.started:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.startErr == nil && s.cfg.Stdin != nil {
			go s.feedStdin()
		}
		return s.startErr
	case <-s.exited:
		s.drain()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.startErr != nil {
			return s.startErr
		}
		if s.state >= stateRunning && s.state != stateFailed {
			return nil
		}
		return s.endErrorLocked("the guest stopped before the workload started")
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Sandbox) write(t channel.Type, v any, timeout time.Duration) error {
	if err := s.agentKnows(t); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := channel.WriteJSON(s.conn, t, v); err != nil {
		return fmt.Errorf("kvm: sending %s to the guest: %w", t, err)
	}
	return nil
}

// ErrAgentTooOld is wrapped when a frame is for a later protocol version
// than the agent of a sandbox taken over speaks (the sandbox was started
// before the host was upgraded).
var ErrAgentTooOld = errors.New("the sandbox's guest agent is older than this host")

// agentKnows refuses frame t when the agent of a sandbox taken over
// predates it: an older agent would end its session on a frame it does
// not know.
func (s *Sandbox) agentKnows(t channel.Type) error {
	v := int(s.agentVersion.Load())
	if need := channel.FrameVersion(t); v != 0 && need > v {
		return fmt.Errorf("kvm: %w: it speaks protocol version %d, and %s needs %d; restart the sandbox (a new one boots with this host's agent) to use it", ErrAgentTooOld, v, t, need)
	}
	return nil
}

// running reports whether the workload runs. s.mu is held.
func (s *Sandbox) runningLocked() bool { return s.state == stateRunning }

// Stop asks the agent to end the running workload gracefully: SIGTERM to
// its process group now, SIGKILL to everything after grace (whole seconds,
// rounded up; 0..channel.MaxStopGraceSeconds). Wait then returns the
// workload's exit status as usual. It fails when the workload is not
// running (nothing to stop: use Abort before START).
func (s *Sandbox) Stop(grace time.Duration) error {
	secs := int((grace + time.Second - 1) / time.Second)
	st := channel.Stop{GraceSeconds: secs}
	if err := st.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	s.mu.Lock()
	running := s.runningLocked()
	s.mu.Unlock()
	if !running {
		return errors.New("kvm: stop: the workload is not running")
	}
	return s.write(channel.TypeStop, st, 2*time.Second)
}

// Resize tells the agent the workload's terminal (Config.TTY) has a new
// size; the workload's foreground process group gets SIGWINCH. It fails
// when the sandbox has no terminal, the size is out of bounds or the
// workload is not running. Safe for concurrent use.
func (s *Sandbox) Resize(ws WindowSize) error {
	if s.cfg.TTY == nil {
		return errors.New("kvm: resize: the workload has no terminal (Config.TTY)")
	}
	if err := ws.Validate(); err != nil {
		return fmt.Errorf("kvm: resize: %w", err)
	}
	s.mu.Lock()
	running := s.runningLocked()
	s.mu.Unlock()
	if !running {
		return errors.New("kvm: resize: the workload is not running")
	}
	return s.write(channel.TypeResize, ws, 2*time.Second)
}

// Ping asks the agent whether it is alive while the workload runs and
// returns the round trip time once it answers.
func (s *Sandbox) Ping(ctx context.Context) (time.Duration, error) {
	s.mu.Lock()
	if !s.runningLocked() {
		s.mu.Unlock()
		return 0, errors.New("kvm: ping: the workload is not running")
	}
	s.pingSeq++
	seq := s.pingSeq
	if s.pongs == nil {
		s.pongs = map[uint64]chan struct{}{}
	}
	ch := make(chan struct{})
	s.pongs[seq] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pongs, seq)
		s.mu.Unlock()
	}()
	t0 := time.Now()
	if err := s.write(channel.TypePing, channel.Ping{Seq: seq}, 2*time.Second); err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(t0), nil
	case <-s.exited:
		return 0, errors.New("kvm: ping: the sandbox ended")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Ports returns the port forwards QEMU listens on, with the host port it
// chose for each forward of HostPort 0 (QEMU's "info usernet"); none
// without a network.
func (s *Sandbox) Ports(ctx context.Context) ([]PortForward, error) {
	if s.cfg.Network != NetworkUser || len(s.cfg.Ports) == 0 {
		return nil, nil
	}
	if s.qmp == nil {
		return nil, errors.New("kvm: ports: QEMU's monitor is not connected")
	}
	raw, err := s.qmp.Execute(ctx, "human-monitor-command", map[string]any{"command-line": "info usernet"})
	if err != nil {
		return nil, fmt.Errorf("kvm: ports: %w", err)
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("kvm: ports: %w", err)
	}
	return parseUsernet(out), nil
}

// parseUsernet reads the host forwards from QEMU's "info usernet":
//
//	TCP[HOST_FORWARD]   3       127.0.0.1 36729       10.0.2.15    80     0     0
func parseUsernet(out string) []PortForward {
	var ports []PortForward
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != "TCP[HOST_FORWARD]" {
			continue
		}
		ip, err1 := netip.ParseAddr(f[2])
		hp, err2 := strconv.ParseUint(f[3], 10, 16)
		gp, err3 := strconv.ParseUint(f[5], 10, 16)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		ports = append(ports, PortForward{HostIP: ip, HostPort: uint16(hp), GuestPort: uint16(gp)})
	}
	return ports
}

// feedStdin sends Config.Stdin to the agent in STDIN frames until EOF (or
// a read error), then an empty frame: the end of the workload's input. It
// stops when the sandbox ends (a read already blocked in Stdin returns
// when Stdin does).
func (s *Sandbox) feedStdin() {
	buf := make([]byte, channel.MaxStdinChunk)
	for {
		n, err := s.cfg.Stdin.Read(buf)
		select {
		case <-s.exited:
			return
		default:
		}
		if n > 0 {
			if werr := s.writeRaw(channel.TypeStdin, buf[:n], 30*time.Second); werr != nil {
				s.log.Debug("stdin", "err", werr)
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("reading the workload's stdin", "err", err)
			}
			_ = s.writeRaw(channel.TypeStdin, nil, 30*time.Second)
			return
		}
	}
}

func (s *Sandbox) writeRaw(t channel.Type, b []byte, timeout time.Duration) error {
	if err := s.agentKnows(t); err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := channel.WriteFrame(s.conn, t, b); err != nil {
		return fmt.Errorf("kvm: sending %s to the guest: %w", t, err)
	}
	return nil
}
