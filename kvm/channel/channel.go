// Package channel is the wire protocol between the launcher (kvm.Sandbox) and
// the guest agent (kvm/agent) over the virtio-serial port "bulwark.0".
//
// A frame is a 4-byte big-endian length N, then N bytes: one type byte and
// N-1 bytes of body. N is at least 1 and at most MaxFrameSize. Control frames
// carry a JSON body (one of the message structs below); output frames carry
// raw bytes. Both sides use ReadFrame and WriteFrame; everything read is
// untrusted and size-limited. The protocol is documented in docs/sandbox.md.
package channel

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
)

// Version is the protocol version the agent announces in Ready and Hello.
// 3: the image arrives as a disk, and Identity names the sandbox.
// 4: EXEC runs a command beside the workload; REATTACH lets a new host
// process take a running sandbox over.
// 5: START may ask for a terminal (Start.TTY), RESIZE changes its size.
// 6: EXEC may ask for stdin (Exec.Stdin, fed by EXEC_STDIN) and a terminal
// (Exec.TTY, resized by EXEC_RESIZE).
// 7: CONTAINER_REMOVE frees a pod's image slot for another container;
// a pod's container may have stdin (CONTAINER_STDIN) and a terminal
// (CONTAINER_RESIZE); EXEC_SIGNAL signals an exec's process group.
const Version = 7

// PortName is the virtio-serial port name the agent looks for.
const PortName = "bulwark.0"

// MaxFrameSize bounds the length field of one frame (type byte + body).
const MaxFrameSize = 4 << 20

// Type is a frame type.
type Type uint8

// Frame types. Guest → host: Ready, Hello, Started, Stdout, Stderr, Exit,
// Error, Pong, ExecOut, ExecExit, Reattached, Status, Done. Host → guest:
// Identity, Start, Abort, Stop, Ping, Exec, Reattach, Stdin, Revoke, Rotate,
// Resize, ExecStdin, ExecResize, ExecSignal (execsignal.go).
const (
	TypeHello      Type = 1  // guest: JSON Hello, its public key, after Identity
	TypeStart      Type = 2  // host: JSON Start
	TypeAbort      Type = 3  // host: JSON Abort
	TypeStarted    Type = 4  // guest: JSON Started, the workload process exists
	TypeStdout     Type = 5  // guest: raw bytes of the workload's stdout
	TypeStderr     Type = 6  // guest: raw bytes of the workload's stderr
	TypeExit       Type = 7  // guest: JSON Exit, last frame of a run
	TypeError      Type = 8  // guest: JSON Error, the run failed (the workload never started or the agent failed)
	TypeStop       Type = 9  // host: JSON Stop, end the running workload gracefully
	TypeReady      Type = 10 // guest: JSON Ready, first frame after boot: the port is open, no key yet
	TypeIdentity   Type = 11 // host: JSON Identity, fresh entropy and time, before the guest makes its key
	TypePing       Type = 12 // host: JSON Ping, while the workload runs: is the agent alive?
	TypePong       Type = 13 // guest: JSON Ping, the answer, with the same sequence number
	TypeExec       Type = 14 // host: JSON Exec, run a command beside the running workload
	TypeExecOut    Type = 15 // guest: ExecOutput, raw output of an exec (ExecOutput.Encode)
	TypeExecExit   Type = 16 // guest: JSON ExecExit, last frame of an exec
	TypeReattach   Type = 17 // host: JSON Reattach, a new host process took the channel over
	TypeReattached Type = 18 // guest: JSON Reattach, the same nonce: the stream is in step from here
	TypeStatus     Type = 19 // guest: JSON Status, right after REATTACHED
	TypeStdin      Type = 20 // host: raw bytes for the workload's stdin (Start.Stdin), at most MaxStdinChunk; empty: end of input
	// Continuous attestation (revoke.go).
	TypeRevoke Type = 21 // host: JSON Revoke, attestd revoked the sandbox: remove secrets, then act
	TypeRotate Type = 22 // host: JSON Rotate, new versions of secrets the guest holds
	TypeDone   Type = 23 // guest: JSON Done, a REVOKE or ROTATE was applied (or why not)
	// Terminal (Start.TTY).
	TypeResize Type = 24 // host: JSON WindowSize, the workload's terminal has a new size
	// Interactive exec (Exec.Stdin, Exec.TTY).
	TypeExecStdin  Type = 25 // host: ExecInput, input for an exec (ExecInput.Encode); no data: end of input
	TypeExecResize Type = 26 // host: JSON ExecResize, an exec's terminal has a new size
)

// MaxStdinChunk bounds the body of one STDIN frame.
const MaxStdinChunk = 32 << 10

func (t Type) String() string {
	switch t {
	case TypeContainerStdin:
		return "CONTAINER_STDIN"
	case TypeContainerResize:
		return "CONTAINER_RESIZE"
	case TypeHello:
		return "HELLO"
	case TypeStart:
		return "START"
	case TypeAbort:
		return "ABORT"
	case TypeStarted:
		return "STARTED"
	case TypeStdout:
		return "STDOUT"
	case TypeStderr:
		return "STDERR"
	case TypeExit:
		return "EXIT"
	case TypeError:
		return "ERROR"
	case TypeStop:
		return "STOP"
	case TypeReady:
		return "READY"
	case TypeIdentity:
		return "IDENTITY"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeExec:
		return "EXEC"
	case TypeExecOut:
		return "EXEC_OUT"
	case TypeExecExit:
		return "EXEC_EXIT"
	case TypeReattach:
		return "REATTACH"
	case TypeReattached:
		return "REATTACHED"
	case TypeStatus:
		return "STATUS"
	case TypeStdin:
		return "STDIN"
	case TypeRevoke:
		return "REVOKE"
	case TypeRotate:
		return "ROTATE"
	case TypeDone:
		return "DONE"
	case TypeContainerStart:
		return "CONTAINER_START"
	case TypeContainerStarted:
		return "CONTAINER_STARTED"
	case TypeContainerOut:
		return "CONTAINER_OUT"
	case TypeContainerExit:
		return "CONTAINER_EXIT"
	case TypeContainerKill:
		return "CONTAINER_KILL"
	case TypeContainerRemove:
		return "CONTAINER_REMOVE"
	case TypeContainerRemoved:
		return "CONTAINER_REMOVED"
	case TypeResize:
		return "RESIZE"
	case TypeExecStdin:
		return "EXEC_STDIN"
	case TypeExecResize:
		return "EXEC_RESIZE"
	case TypeExecSignal:
		return "EXEC_SIGNAL"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Known reports whether t is a frame type of this protocol version.
func (t Type) Known() bool {
	return t >= TypeHello && t <= TypeExecSignal || t >= TypeContainerStart && t <= TypeContainerRemoved || t == TypeContainerStdin || t == TypeContainerResize
}

// Exec asks the agent to run a command beside the running workload, in
// its root, as its user, with its environment; ID names the exec in its
// output and exit frames.
type Exec struct {
	ID   uint32   `json:"id"`
	Args []string `json:"args"`
	// Container, in a pod sandbox, names the container (its index) whose
	// root, user and environment the command gets.
	Container *int `json:"container,omitempty"`
	// Stdin gives the command a pipe as stdin (with TTY: its terminal's
	// input), fed by EXEC_STDIN frames until an empty one; else stdin is
	// /dev/null.
	Stdin bool `json:"stdin,omitempty"`
	// TTY, when set, runs the command on a new terminal of this size, its
	// controlling terminal in a session of its own (crictl exec -t): its
	// output, stdout and stderr merged, comes as EXEC_OUT stream 1, and
	// EXEC_RESIZE frames change its size.
	TTY *WindowSize `json:"tty,omitempty"`
}

// Bounds of an Exec.
const (
	MaxExecArgs      = 256
	MaxExecArgsBytes = 64 << 10
	// MaxExecs bounds the execs that run at once in one sandbox.
	MaxExecs = 16
)

// Validate checks an Exec: 1..MaxExecArgs arguments, no NUL, at most
// MaxExecArgsBytes in all.
func (e *Exec) Validate() error {
	if len(e.Args) == 0 || len(e.Args) > MaxExecArgs {
		return fmt.Errorf("exec: %d arguments, want 1..%d", len(e.Args), MaxExecArgs)
	}
	total := 0
	for i, a := range e.Args {
		total += len(a)
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("exec: argument %d contains a NUL byte", i)
		}
	}
	if total > MaxExecArgsBytes {
		return fmt.Errorf("exec: %d bytes of arguments, at most %d", total, MaxExecArgsBytes)
	}
	if e.Args[0] == "" {
		return errors.New("exec: empty command")
	}
	if e.Container != nil && (*e.Container < 0 || *e.Container >= MaxContainers) {
		return fmt.Errorf("exec: container index %d, want 0..%d", *e.Container, MaxContainers-1)
	}
	if e.TTY != nil {
		if err := e.TTY.Validate(); err != nil {
			return fmt.Errorf("exec: %w", err)
		}
	}
	return nil
}

// ExecInput is input for an exec that asked for stdin: on the wire the
// exec id (4 bytes big-endian) and at most MaxStdinChunk bytes; no bytes
// mark the end of its input.
type ExecInput struct {
	ID   uint32
	Data []byte
}

// Encode is the frame body of in.
func (in ExecInput) Encode() []byte {
	b := make([]byte, 4+len(in.Data))
	binary.BigEndian.PutUint32(b, in.ID)
	copy(b[4:], in.Data)
	return b
}

// DecodeExecInput parses an EXEC_STDIN frame body: an exec id other than
// 0 and at most MaxStdinChunk bytes of input.
func DecodeExecInput(body []byte) (ExecInput, error) {
	if len(body) < 4 {
		return ExecInput{}, fmt.Errorf("%w: EXEC_STDIN body of %d bytes", ErrBadFrame, len(body))
	}
	in := ExecInput{ID: binary.BigEndian.Uint32(body), Data: body[4:]}
	if in.ID == 0 {
		return ExecInput{}, fmt.Errorf("%w: EXEC_STDIN for exec 0", ErrBadFrame)
	}
	if len(in.Data) > MaxStdinChunk {
		return ExecInput{}, fmt.Errorf("%w: EXEC_STDIN of %d bytes, the limit is %d", ErrBadFrame, len(in.Data), MaxStdinChunk)
	}
	return in, nil
}

// ExecResize is the new size of an exec's terminal (Exec.TTY).
type ExecResize struct {
	ID   uint32 `json:"id"`
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Size is the new window size.
func (r *ExecResize) Size() WindowSize { return WindowSize{Rows: r.Rows, Cols: r.Cols} }

// Validate checks an ExecResize: an exec id other than 0 and a valid size.
func (r *ExecResize) Validate() error {
	if r.ID == 0 {
		return errors.New("channel: EXEC_RESIZE for exec 0")
	}
	ws := r.Size()
	return ws.Validate()
}

// ExecOutput is a piece of an exec's output: on the wire the exec id
// (4 bytes big-endian), the stream (1 stdout, 2 stderr) and the bytes.
type ExecOutput struct {
	ID     uint32
	Stream byte
	Data   []byte
}

// Encode is the frame body of o.
func (o ExecOutput) Encode() []byte {
	b := make([]byte, 5+len(o.Data))
	binary.BigEndian.PutUint32(b, o.ID)
	b[4] = o.Stream
	copy(b[5:], o.Data)
	return b
}

// DecodeExecOutput parses an EXEC_OUT frame body.
func DecodeExecOutput(body []byte) (ExecOutput, error) {
	if len(body) < 5 {
		return ExecOutput{}, fmt.Errorf("%w: EXEC_OUT body of %d bytes", ErrBadFrame, len(body))
	}
	o := ExecOutput{ID: binary.BigEndian.Uint32(body), Stream: body[4], Data: body[5:]}
	if o.Stream != 1 && o.Stream != 2 {
		return ExecOutput{}, fmt.Errorf("%w: EXEC_OUT stream %d", ErrBadFrame, o.Stream)
	}
	return o, nil
}

// ExecExit ends an exec: its exit code (0..255), or Error when it could
// not start (then Code is 127 for a command not found, else 126).
type ExecExit struct {
	ID    uint32 `json:"id"`
	Code  int    `json:"code"`
	Error string `json:"error,omitempty"`
}

// Reattach is sent by a host process that takes over a running sandbox
// whose previous host process died (the channel socket was reconnected).
// The agent answers REATTACHED with the same nonce, then STATUS; the host
// discards whatever reached it before REATTACHED (the rest of frames that
// were in flight when the old host died) and reads frames from there.
type Reattach struct {
	Nonce string `json:"nonce"` // 32 hex digits
}

// Validate checks the nonce's form.
func (r *Reattach) Validate() error {
	if len(r.Nonce) != 32 || strings.Trim(r.Nonce, "0123456789abcdef") != "" {
		return errors.New("reattach: nonce: want 32 lowercase hex digits")
	}
	return nil
}

// Marker is the exact REATTACHED frame for r, which the host looks for.
func (r Reattach) Marker() []byte {
	var b bytes.Buffer
	_ = WriteJSON(&b, TypeReattached, r)
	return b.Bytes()
}

// Status says, after REATTACHED, where the workload is: "running", or
// "exited" with Code when its EXIT was already sent (and maybe lost with
// the old host process). A pod's agent sets Pod and lists every container
// whose CONTAINER_STARTED it sent: "running", or "exited" with the Code
// of the CONTAINER_EXIT it sent (and maybe lost with the old host
// process); frames held while no host was there follow STATUS.
type Status struct {
	State      string            `json:"state"`
	Code       int               `json:"code"`
	Pod        bool              `json:"pod,omitempty"`
	Containers []ContainerStatus `json:"containers,omitempty"`
	// Version is the agent's protocol version (Version), from version 7
	// on; absent, the agent speaks 6 or older: a host taking it over
	// sends it no frame of a later version (FrameVersion).
	Version int `json:"version,omitempty"`
}

// FrameVersion is the protocol version that added host frame t (0 for
// those older than version 7, which every agent a host can take over
// knows).
func FrameVersion(t Type) int {
	switch t {
	case TypeExecSignal, TypeContainerRemove, TypeContainerStdin, TypeContainerResize:
		return 7
	}
	return 0
}

// ContainerStatus is where one container of a pod stands (Status).
type ContainerStatus struct {
	Index int    `json:"index"`
	State string `json:"state"` // running, exited
	Code  int    `json:"code"`
}

// Validate checks a Status: a known state, exit codes of 0..255, each
// container's index in 0..MaxContainers-1 at most once.
func (st *Status) Validate() error {
	okState := func(s string, code int) bool {
		return s == "running" || (s == "exited" && code >= 0 && code <= 255)
	}
	if !okState(st.State, st.Code) {
		return fmt.Errorf("channel: status %q with code %d", st.State, st.Code)
	}
	if len(st.Containers) > 0 && !st.Pod {
		return errors.New("channel: status: containers of a sandbox that is not a pod")
	}
	if st.Version != 0 && (st.Version < 7 || st.Version > Version) {
		return fmt.Errorf("channel: status: an agent of protocol version %d (this host speaks %d)", st.Version, Version)
	}
	seen := map[int]bool{}
	for _, c := range st.Containers {
		if c.Index < 0 || c.Index >= MaxContainers || seen[c.Index] {
			return fmt.Errorf("channel: status: container index %d out of range or repeated", c.Index)
		}
		seen[c.Index] = true
		if !okState(c.State, c.Code) {
			return fmt.Errorf("channel: status: container %d %q with code %d", c.Index, c.State, c.Code)
		}
	}
	return nil
}

// Ping is a liveness probe (PING) and its answer (PONG).
type Ping struct {
	Seq uint64 `json:"seq"`
}

// Ready is the agent's first message: it has booted and opened the port,
// and waits for its Identity before it makes any key.
type Ready struct {
	Version int `json:"version"`
}

// Identity is what makes this guest a machine of its own before it makes
// its key: fresh entropy from the host, which the agent adds to the kernel's
// pool and then forces a CRNG reseed with (RNDADDENTROPY, RNDRESEEDCRNG: a
// guest resumed from a shared snapshot would otherwise draw the same random
// bytes as its siblings), the host's wall-clock time and the sandbox id
// (the guest's hostname; START must name the same sandbox). The agent makes
// its key only after all are applied.
type Identity struct {
	Entropy   []byte `json:"entropy"`    // MinIdentityEntropy..MaxIdentityEntropy bytes, base64 in JSON
	UnixNano  int64  `json:"unix_nano"`  // the host's wall clock
	SandboxID string `json:"sandbox_id"` // as in Start
}

// Bounds of Identity.Entropy.
const (
	MinIdentityEntropy = 32
	MaxIdentityEntropy = 512
)

// Validate checks an Identity.
func (id *Identity) Validate() error {
	if len(id.Entropy) < MinIdentityEntropy || len(id.Entropy) > MaxIdentityEntropy {
		return fmt.Errorf("identity: %d bytes of entropy, want %d..%d", len(id.Entropy), MinIdentityEntropy, MaxIdentityEntropy)
	}
	if id.UnixNano <= 0 {
		return fmt.Errorf("identity: time %d is not after 1970", id.UnixNano)
	}
	if !safeName(id.SandboxID) {
		return fmt.Errorf("identity: sandbox id %q: want 1..128 characters from [A-Za-z0-9._-]", id.SandboxID)
	}
	return nil
}

// Hello is the agent's first message: its ephemeral public key (enclave/wrap).
type Hello struct {
	Version   int    `json:"version"`
	PublicKey []byte `json:"public_key"` // base64 in JSON
}

// Secret is one released secret, wrapped to the guest key by attestd.
type Secret struct {
	Name    string `json:"name"`
	Wrapped []byte `json:"wrapped"`
}

// Start tells the agent to open the secrets and run the workload.
type Start struct {
	SandboxID string   `json:"sandbox_id"`
	Secrets   []Secret `json:"secrets,omitempty"`
	// Args replaces the image's entrypoint+cmd when not empty.
	Args []string `json:"args,omitempty"`
	// Env entries ("KEY=VALUE") are set over the image's environment, a
	// key given here replacing the image's; WorkingDir and User replace
	// the image's when not empty (docker run -e, -w, --user; User is
	// USER[:GROUP], numbers or names from the image's /etc/passwd and
	// /etc/group).
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Network is "" (no network), NetworkUser or NetworkTap: the agent
	// loads the network modules and configures eth0 before the workload
	// starts, for QEMU's user-mode network (GuestAddr, GuestGateway,
	// GuestDNS) or, for a tap, with Address (an IPv4 prefix, the pod
	// interface's) and Gateway (its default route; "" for none), and MAC
	// (the interface's Ethernet address, which eth0 is given: a clone's
	// device has its template's; "" leaves eth0's as it is).
	Network string `json:"network,omitempty"`
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	MAC     string `json:"mac,omitempty"`
	// Mounts are added to the workload's root, in order, before it starts.
	Mounts []Mount `json:"mounts,omitempty"`
	// Stdin gives the workload a pipe as stdin, fed by the host's STDIN
	// frames until an empty one (end of input); else stdin is /dev/null.
	// With TTY, the input goes to the terminal instead.
	Stdin bool `json:"stdin,omitempty"`
	// Pod makes the sandbox a pod (container.go): START runs no workload,
	// the host adds containers with CONTAINER_START, and the "workload"
	// ends only when the host stops it.
	Pod bool `json:"pod,omitempty"`
	// TTY, when set, gives the workload a terminal of this initial size
	// (docker run -t): a pseudo-terminal whose slave is its stdin, stdout
	// and stderr and its controlling terminal, in a session of its own.
	// Its output (stdout and stderr merged, as a terminal merges them)
	// comes back in STDOUT frames; RESIZE frames change its size.
	TTY *WindowSize `json:"tty,omitempty"`
}

// WindowSize is a terminal's size in characters: Start.TTY and the body
// of a RESIZE frame.
type WindowSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// MaxWindowSize bounds WindowSize.Rows and Cols.
const MaxWindowSize = 10000

// Validate checks a size: rows and columns 1..MaxWindowSize.
func (w *WindowSize) Validate() error {
	if w.Rows < 1 || w.Rows > MaxWindowSize || w.Cols < 1 || w.Cols > MaxWindowSize {
		return fmt.Errorf("channel: terminal size %dx%d: want rows and columns 1..%d", w.Rows, w.Cols, MaxWindowSize)
	}
	return nil
}

// Mount is a volume of the workload: a read-only erofs disk (the virtio
// block device whose serial is Serial), a tmpfs of Size bytes (0: the
// kernel's default) or a writable ext4 scratch disk of Size bytes (found
// by its Serial), mounted at Target in the workload's root.
type Mount struct {
	Type   string `json:"type"` // MountDisk, MountTmpfs or MountScratch
	Serial string `json:"serial,omitempty"`
	Target string `json:"target"`
	Size   int64  `json:"size,omitempty"`
}

// Mount types.
const (
	MountDisk    = "disk"
	MountTmpfs   = "tmpfs"
	MountScratch = "scratch"
	// MaxMounts bounds Start.Mounts: 8 volumes, 8 tmpfs, 4 scratch disks.
	MaxMounts = 20
)

// NetworkUser is Start.Network for QEMU user-mode networking (slirp),
// whose fixed addresses the agent configures; NetworkTap for a tap joined
// to a pod's interface, whose address Start carries.
const (
	NetworkUser  = "user"
	NetworkTap   = "tap"
	GuestAddr    = "10.0.2.15/24"
	GuestGateway = "10.0.2.2"
	GuestDNS     = "10.0.2.3"
)

// Bounds of Start's workload inputs (the launcher's are as strict).
const (
	MaxEnv        = 128
	MaxEnvBytes   = 64 << 10 // all entries together
	MaxWorkingDir = 4096
	MaxUser       = 256
)

// Abort tells the agent not to run anything and to power off.
type Abort struct {
	Reason string `json:"reason"`
}

// Stop asks the agent to end the running workload: SIGTERM to its process
// group, then, GraceSeconds later, SIGKILL to every process. The workload's
// exit status comes back as usual (EXIT). The host sends it while the
// workload runs (e.g. on Ctrl-C of a foreground launcher).
type Stop struct {
	GraceSeconds int `json:"grace_seconds"`
}

// MaxStopGraceSeconds bounds Stop.GraceSeconds.
const MaxStopGraceSeconds = 3600

// Validate checks the grace period.
func (s *Stop) Validate() error {
	if s.GraceSeconds < 0 || s.GraceSeconds > MaxStopGraceSeconds {
		return fmt.Errorf("stop: grace_seconds %d, want 0..%d", s.GraceSeconds, MaxStopGraceSeconds)
	}
	return nil
}

// Started confirms the workload process was created.
type Started struct {
	PID int `json:"pid"`
}

// Exit is the workload's exit status: its exit code, or 128+signal.
type Exit struct {
	Code int `json:"code"`
}

// Error is a failure the agent reports instead of (or after) running the workload.
type Error struct {
	Message string `json:"message"`
}

// ErrFrameTooLarge is returned for a length field over MaxFrameSize.
var ErrFrameTooLarge = errors.New("channel: frame too large")

// ErrBadFrame is returned for a malformed frame.
var ErrBadFrame = errors.New("channel: malformed frame")

// ReadFrame reads one frame. It returns io.EOF only at a clean frame
// boundary; a frame cut short returns io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader) (Type, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: zero length", ErrBadFrame)
	}
	if n > MaxFrameSize {
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxFrameSize)
	}
	if _, err := io.ReadFull(r, hdr[4:5]); err != nil {
		return 0, nil, unexpected(err)
	}
	t := Type(hdr[4])
	if !t.Known() {
		return 0, nil, fmt.Errorf("%w: unknown type %d", ErrBadFrame, hdr[4])
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, unexpected(err)
	}
	return t, body, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// WriteFrame writes one frame in a single Write call.
func WriteFrame(w io.Writer, t Type, body []byte) error {
	if len(body)+1 > MaxFrameSize {
		return fmt.Errorf("%w: %s body of %d bytes, limit %d", ErrFrameTooLarge, t, len(body), MaxFrameSize-1)
	}
	buf := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)+1))
	buf[4] = byte(t)
	copy(buf[5:], body)
	_, err := w.Write(buf)
	return err
}

// WriteJSON marshals v and writes it as a frame of type t.
func WriteJSON(w io.Writer, t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("channel: encoding %s: %w", t, err)
	}
	return WriteFrame(w, t, b)
}

// Decode unmarshals a JSON frame body strictly (unknown fields are errors)
// into v.
func Decode(t Type, body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrBadFrame, t, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: %s body: trailing data", ErrBadFrame, t)
	}
	return nil
}

// MaxSecrets bounds the number of secrets in one Start message.
const MaxSecrets = 256

// Validate checks a Start message: a sandbox id of 1..128 characters from
// [A-Za-z0-9._-], secret names that are safe file names (1..128 characters
// from [A-Za-z0-9._-], not "." or "..", unique), at most MaxSecrets secrets
// and no NUL byte in the arguments.
func (s *Start) Validate() error {
	if !safeName(s.SandboxID) {
		return fmt.Errorf("channel: sandbox id %q: want 1..128 characters from [A-Za-z0-9._-]", s.SandboxID)
	}
	if len(s.Secrets) > MaxSecrets {
		return fmt.Errorf("channel: %d secrets, the limit is %d", len(s.Secrets), MaxSecrets)
	}
	seen := make(map[string]bool, len(s.Secrets))
	for i, sec := range s.Secrets {
		if !safeName(sec.Name) || sec.Name == "." || sec.Name == ".." {
			return fmt.Errorf("channel: secret %d name %q: want a file name of 1..128 characters from [A-Za-z0-9._-]", i, sec.Name)
		}
		if seen[sec.Name] {
			return fmt.Errorf("channel: secret %q given twice", sec.Name)
		}
		seen[sec.Name] = true
	}
	for i, a := range s.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("channel: argument %d contains a NUL byte", i)
		}
	}
	return s.validateWorkload()
}

// validateWorkload checks Env, WorkingDir, User, Network, TTY and Mounts.
func (s *Start) validateWorkload() error {
	if len(s.Env) > MaxEnv {
		return fmt.Errorf("channel: %d environment variables, the limit is %d", len(s.Env), MaxEnv)
	}
	total := 0
	for i, kv := range s.Env {
		total += len(kv)
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("channel: environment entry %d: want KEY=VALUE without NUL bytes", i)
		}
	}
	if total > MaxEnvBytes {
		return fmt.Errorf("channel: environment of %d bytes, the limit is %d", total, MaxEnvBytes)
	}
	if d := s.WorkingDir; d != "" && (len(d) > MaxWorkingDir || d[0] != '/' || strings.IndexByte(d, 0) >= 0) {
		return errors.New("channel: working directory: want an absolute path without NUL bytes, at most 4096 bytes")
	}
	if len(s.User) > MaxUser || strings.IndexByte(s.User, 0) >= 0 {
		return errors.New("channel: user: want at most 256 bytes without NUL")
	}
	if err := s.validateNetwork(); err != nil {
		return err
	}
	if s.TTY != nil {
		if err := s.TTY.Validate(); err != nil {
			return err
		}
	}
	if len(s.Mounts) > MaxMounts {
		return fmt.Errorf("channel: %d mounts, the limit is %d", len(s.Mounts), MaxMounts)
	}
	for i, m := range s.Mounts {
		t := m.Target
		if len(t) < 2 || len(t) > MaxWorkingDir || t[0] != '/' || strings.IndexByte(t, 0) >= 0 {
			return fmt.Errorf("channel: mount %d: target: want an absolute path other than / without NUL bytes", i)
		}
		switch {
		case m.Type == MountDisk && safeName(m.Serial) && len(m.Serial) <= 20 && m.Size == 0:
		case m.Type == MountTmpfs && m.Serial == "" && m.Size >= 0:
		case m.Type == MountScratch && safeName(m.Serial) && len(m.Serial) <= 20 && m.Size > 0:
		default:
			return fmt.Errorf("channel: mount %d: want a disk or scratch disk with a serial of 1..20 of [A-Za-z0-9._-], or a tmpfs with a size >= 0", i)
		}
	}
	return nil
}

// validateNetwork checks Network, Address and Gateway.
func (s *Start) validateNetwork() error {
	switch s.Network {
	case "", NetworkUser:
		if s.Address != "" || s.Gateway != "" || s.MAC != "" {
			return fmt.Errorf("channel: an address, gateway and MAC are for network %q only", NetworkTap)
		}
		return nil
	case NetworkTap:
	default:
		return fmt.Errorf("channel: network %q: want \"\", %q or %q", s.Network, NetworkUser, NetworkTap)
	}
	p, err := netip.ParsePrefix(s.Address)
	if err != nil || !p.Addr().Is4() || p.Bits() < 1 || p.Bits() > 32 {
		return fmt.Errorf("channel: address %.64q: want an IPv4 address with its prefix length (a.b.c.d/n)", s.Address)
	}
	if s.Gateway != "" {
		g, err := netip.ParseAddr(s.Gateway)
		if err != nil || !g.Is4() {
			return fmt.Errorf("channel: gateway %.64q: want an IPv4 address", s.Gateway)
		}
	}
	if s.MAC != "" {
		m, err := net.ParseMAC(s.MAC)
		if err != nil || len(m) != 6 || m[0]&1 != 0 || s.MAC != m.String() {
			return fmt.Errorf("channel: MAC %.64q: want a unicast Ethernet address (aa:bb:cc:dd:ee:ff, lower case)", s.MAC)
		}
	}
	return nil
}

func safeName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Paths shared by the builders (kvm) and the agent. The base initramfs
// holds /init and /.bulwark/{base.json,modules/}. The image reaches the
// guest as a read-only erofs disk (kvm.BuildImageDisk) whose root holds the
// image's files under DiskRootfs and its config at DiskConfig; the agent
// mounts it at ImageMount and its root filesystem, the disk under a tmpfs
// upper layer, at RootfsDir.
const (
	BaseManifestPath = "/.bulwark/base.json"
	ModulesDir       = "/.bulwark/modules"
	DiskRootfs       = "/rootfs"
	DiskConfig       = "/config.json"
	ImageMount       = "/run/bulwark/image"
	RootfsDir        = "/rootfs"
)

// BaseManifest lists the kernel modules of the base initramfs, in load
// order (dependencies first), as file names under ModulesDir.
type BaseManifest struct {
	KernelVersion string   `json:"kernel_version"`
	Modules       []string `json:"modules"`
	// DiskModules are loaded, in order, when the image disk is mounted
	// (virtio_blk and dependencies not in Modules): a template's guest must
	// not have probed the disk slot before a clone points it at its own
	// image.
	DiskModules []string `json:"disk_modules,omitempty"`
	// NetModules are loaded, in order, when the workload has a network
	// (virtio_net and dependencies not in Modules).
	NetModules []string `json:"net_modules,omitempty"`
	// ScratchModules are loaded, in order, when the workload has a
	// scratch disk (ext4 and dependencies not in Modules).
	ScratchModules []string `json:"scratch_modules,omitempty"`
}

// ImageConfig is the part of the OCI image config the agent applies.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}
