// Package tpm is Bulwark's client side of a TPM 2.0: it opens a TPM by a
// spec string (device, managed swtpm, swtpm/simulator server, in-process
// simulator) and does what the launcher and attestd's vault need: EK and EK
// certificate, a persistent attestation key, PCR read/extend, quotes,
// credential activation, sealing to PCRs and a TPM-held signing key.
//
// The TPM-less verifier side (VerifyQuote, MakeCredential, EK certificate
// checks) is in the tpm/verify subpackage, which needs no cgo.
package tpm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultDevice is the kernel's TPM resource manager device.
const DefaultDevice = "/dev/tpmrm0"

// Persistent handles Bulwark uses (owner hierarchy range 0x81000000..).
const (
	// EKHandle is where TCG provisioning guidance puts the RSA EK; Bulwark
	// uses a key found there only if it is the standard RSA-2048 EK.
	EKHandle uint32 = 0x81010001
	// AKHandle holds Bulwark's attestation key.
	AKHandle uint32 = 0x81008001
	// SignerHandle holds Bulwark's general signing key (tpm: signing keys).
	SignerHandle uint32 = 0x81008002
	// EKCertIndex is the NV index of the RSA-2048 EK certificate.
	EKCertIndex uint32 = 0x01c00002
)

// Kind says what sort of TPM a spec names.
type Kind string

// Kinds of TPM.
const (
	KindDevice    Kind = "device"    // a character device such as /dev/tpmrm0
	KindSocket    Kind = "socket"    // a unix socket speaking raw TPM commands
	KindManaged   Kind = "swtpm"     // a managed swtpm daemon with state in a directory
	KindTCP       Kind = "tcp"       // a TPM simulator protocol server (swtpm, ms-tpm-20-ref)
	KindSimulator Kind = "simulator" // the in-process reference simulator (cgo)
)

// Spec is a parsed TPM spec.
type Spec struct {
	Kind Kind
	// Path is the device or socket path, or the managed swtpm's directory.
	Path string
	// Addr is host:port for KindTCP.
	Addr string
}

func (s Spec) String() string {
	switch s.Kind {
	case KindManaged:
		return "swtpm:" + s.Path
	case KindTCP:
		return "tcp:" + s.Addr
	case KindSimulator:
		return "sim"
	}
	return s.Path
}

// ParseSpec parses a TPM spec:
//
//	/dev/tpmrm0     a TPM device (any path; a unix socket path speaks raw TPM commands)
//	swtpm:DIR       a managed swtpm whose state is in DIR (started if needed)
//	tcp:HOST:PORT   a swtpm or reference simulator server you run yourself
//	sim             the in-process reference simulator (needs cgo; a fresh TPM each time)
//	""              /dev/tpmrm0 if present, else the managed swtpm in
//	                the state directory (see internal/statedir) under swtpm/
//
// getenv finds the state directory for the default; nil means os.Getenv.
func ParseSpec(spec string, getenv func(string) string) (Spec, error) {
	switch {
	case spec == "":
		if _, err := os.Stat(DefaultDevice); err == nil {
			return Spec{Kind: KindDevice, Path: DefaultDevice}, nil
		}
		dir, err := statedir.Dir(getenv)
		if err != nil {
			return Spec{}, err
		}
		return Spec{Kind: KindManaged, Path: filepath.Join(dir, "swtpm")}, nil
	case spec == "sim":
		return Spec{Kind: KindSimulator}, nil
	case strings.HasPrefix(spec, "swtpm:"):
		dir := strings.TrimPrefix(spec, "swtpm:")
		if dir == "" {
			return Spec{}, fmt.Errorf("TPM spec %q: swtpm: needs a state directory, e.g. swtpm:/var/lib/bulwark/swtpm", spec)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return Spec{}, err
		}
		return Spec{Kind: KindManaged, Path: abs}, nil
	case strings.HasPrefix(spec, "tcp:"):
		addr := strings.TrimPrefix(spec, "tcp:")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return Spec{}, fmt.Errorf("TPM spec %q: want tcp:HOST:PORT: %v", spec, err)
		}
		return Spec{Kind: KindTCP, Addr: addr}, nil
	case strings.HasPrefix(spec, "/") || strings.HasPrefix(spec, "."):
		fi, err := os.Stat(spec)
		if err != nil {
			return Spec{}, fmt.Errorf("TPM spec %q: %w", spec, err)
		}
		if fi.Mode()&os.ModeSocket != 0 {
			return Spec{Kind: KindSocket, Path: spec}, nil
		}
		if fi.Mode()&os.ModeCharDevice == 0 {
			return Spec{}, fmt.Errorf("TPM spec %q: not a character device or socket", spec)
		}
		return Spec{Kind: KindDevice, Path: spec}, nil
	}
	return Spec{}, fmt.Errorf("TPM spec %q not understood: use a device path (/dev/tpmrm0), swtpm:DIR, tcp:HOST:PORT or sim", spec)
}

// Options configure Open. The zero value is ready to use.
type Options struct {
	// Logger receives progress messages (e.g. starting the managed swtpm).
	Logger *slog.Logger
	// Getenv finds the state directory for the default spec; nil means os.Getenv.
	Getenv func(string) string
}

// TPM is an open TPM. It is safe for concurrent use: operations are
// serialized, and for a managed swtpm also across processes (a lock file
// held for each operation, since swtpm has no resource manager). Close it
// when done.
type TPM struct {
	spec Spec
	log  *slog.Logger

	mu      sync.Mutex
	closed  bool
	sim     transport.TPMCloser // KindSimulator: the one connection
	managed *Managed
	started bool // KindTCP: TPM2_Startup done
}

// Open opens the TPM named by spec (see ParseSpec).
func Open(ctx context.Context, spec string) (*TPM, error) {
	return OpenWith(ctx, spec, Options{})
}

// OpenWith opens the TPM named by spec with options.
func OpenWith(ctx context.Context, spec string, opts Options) (*TPM, error) {
	s, err := ParseSpec(spec, opts.Getenv)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &TPM{spec: s, log: log}
	switch s.Kind {
	case KindSimulator:
		t.sim, err = openSimulator(ctx)
		if err != nil {
			return nil, err
		}
	case KindManaged:
		t.managed, err = StartManaged(ctx, s.Path, log)
		if err != nil {
			return nil, err
		}
	}
	// Check that the TPM answers.
	if err := t.do(ctx, func(tp transport.TPM) error {
		_, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 1}.Execute(tp)
		return err
	}); err != nil {
		t.Close()
		return nil, fmt.Errorf("TPM %s: %w", s, err)
	}
	return t, nil
}

// Spec returns the parsed spec the TPM was opened with.
func (t *TPM) Spec() Spec { return t.spec }

// Managed returns the managed swtpm behind t, or nil for other kinds.
func (t *TPM) Managed() *Managed { return t.managed }

// Close releases the TPM. A managed swtpm keeps running (see StopManaged).
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.sim != nil {
		return t.sim.Close()
	}
	return nil
}

// ErrClosed is returned by operations on a closed TPM.
var ErrClosed = errors.New("tpm: closed")

// do runs one operation: f's commands reach the TPM without interleaving
// with other operations of this process or, for a managed swtpm, of other
// processes.
func (t *TPM) do(ctx context.Context, f func(tp transport.TPM) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var tp transport.TPM
	switch t.spec.Kind {
	case KindSimulator:
		tp = t.sim
	case KindDevice:
		dev, err := linuxtpm.Open(t.spec.Path)
		if err != nil {
			return fmt.Errorf("opening %s: %w", t.spec.Path, err)
		}
		defer dev.Close()
		tp = dev
	case KindSocket:
		s, stop, err := dialStream(ctx, "unix", t.spec.Path, false)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", t.spec.Path, err)
		}
		defer s.Close()
		defer stop()
		tp = s
	case KindTCP:
		s, stop, err := dialStream(ctx, "tcp", t.spec.Addr, true)
		if err != nil {
			return fmt.Errorf("connecting to %s: %w", t.spec.Addr, err)
		}
		defer s.Close()
		defer stop()
		tp = s
		if !t.started {
			if err := startup(s); err != nil {
				return err
			}
			t.started = true
		}
	case KindManaged:
		unlock, err := fsutil.Lock(ctx, filepath.Join(t.managed.Dir, managedOpLock))
		if err != nil {
			return fmt.Errorf("managed swtpm: %w", err)
		}
		defer unlock()
		s, stop, err := dialStream(ctx, "unix", t.managed.Socket, false)
		if err != nil {
			// The daemon may have been stopped since: start it again (a
			// "reboot" of this TPM: PCRs start over).
			t.log.Warn("managed swtpm not reachable, restarting it", "dir", t.managed.Dir, "err", err)
			m, err2 := StartManaged(ctx, t.managed.Dir, t.log)
			if err2 != nil {
				return err2
			}
			t.managed = m
			s, stop, err = dialStream(ctx, "unix", t.managed.Socket, false)
			if err != nil {
				return fmt.Errorf("managed swtpm: connecting: %w", err)
			}
		}
		defer s.Close()
		defer stop()
		tp = s
	default:
		return fmt.Errorf("tpm: unknown kind %q", t.spec.Kind)
	}
	return f(&retryTPM{t: tp, ctx: ctx})
}

// startup sends TPM2_Startup(CLEAR) to a server TPM that may need it; one
// that is already started answers TPM_RC_INITIALIZE, which is fine.
func startup(tp transport.TPM) error {
	_, err := tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(tp)
	if err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
		return fmt.Errorf("TPM2_Startup: %w", err)
	}
	return nil
}
