package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// Files of a managed swtpm, relative to its directory.
const (
	managedStateDir   = "state"       // the TPM's NV state (tpm2-00.permall)
	managedCADir      = "ca"          // swtpm_localca's CA (keys and certificates)
	managedSocket     = "tpm.sock"    // raw TPM commands (unix socket, mode 0600)
	managedCtrlSocket = "ctrl.sock"   // swtpm's control channel
	managedPIDFile    = "swtpm.pid"   // the daemon's pid
	managedLog        = "swtpm.log"   // the daemon's log
	managedSetupLog   = "setup.log"   // swtpm_setup's log
	managedStartLock  = "swtpm.lock"  // held while starting or stopping the daemon
	managedOpLock     = "client.lock" // held by a client for each TPM operation
	caRootCert        = "swtpm-localca-rootca-cert.pem"
	caIssuerCert      = "issuercert.pem"
	managedConfigName = "swtpm_setup.conf"
)

// Managed describes a running managed swtpm.
type Managed struct {
	Dir    string // absolute state directory
	PID    int    // the swtpm daemon
	Socket string // unix socket speaking raw TPM 2.0 commands
	// Started is true when this call started the daemon, false when it
	// reused one already running.
	Started bool
}

// ManagedCA returns the paths of the CA certificates that issued a managed
// swtpm's EK certificate (swtpm_localca): the self-signed root to configure
// as a trusted EK root in attestd, and the intermediate that signs EK
// certificates (the TPM stores only its leaf certificate).
func ManagedCA(dir string) (root, intermediate string) {
	return filepath.Join(dir, managedCADir, caRootCert), filepath.Join(dir, managedCADir, caIssuerCert)
}

// StartManaged makes sure the managed swtpm whose state lives in dir is
// running, and returns it. On first use it creates the TPM with
// swtpm_setup (EK and platform certificates from a CA of its own in
// dir/ca), then starts `swtpm socket --daemon` on a unix socket in dir. The
// daemon outlives the process, like a host TPM outlives the launcher, so
// PCR values persist until StopManaged (the equivalent of a reboot). A lock
// file serializes concurrent starters.
func StartManaged(ctx context.Context, dir string, log *slog.Logger) (*Managed, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("managed swtpm: %w", err)
	}
	unlock, err := fsutil.Lock(ctx, filepath.Join(dir, managedStartLock))
	if err != nil {
		return nil, fmt.Errorf("managed swtpm: locking %s: %w", dir, err)
	}
	defer unlock()
	sock := filepath.Join(dir, managedSocket)
	if pid, ok := runningSwtpm(dir); ok {
		return &Managed{Dir: dir, PID: pid, Socket: sock}, nil
	}
	swtpm, err := exec.LookPath("swtpm")
	if err != nil {
		return nil, errors.New("managed swtpm: swtpm not found: apt-get install swtpm swtpm-tools")
	}
	state := filepath.Join(dir, managedStateDir)
	if _, err := os.Stat(filepath.Join(state, "tpm2-00.permall")); errors.Is(err, os.ErrNotExist) {
		log.Info("creating managed swtpm", "dir", dir)
		if err := setupManaged(ctx, dir); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("managed swtpm: %w", err)
	}
	for _, f := range []string{managedSocket, managedCtrlSocket, managedPIDFile} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	cmd := exec.CommandContext(ctx, swtpm, "socket", "--tpm2",
		"--tpmstate", "dir="+state+",mode=0600",
		"--server", "type=unixio,path="+sock+",mode=0600",
		"--ctrl", "type=unixio,path="+filepath.Join(dir, managedCtrlSocket)+",mode=0600",
		"--flags", "not-need-init,startup-clear",
		"--pid", "file="+filepath.Join(dir, managedPIDFile),
		"--log", "file="+filepath.Join(dir, managedLog),
		"--daemon")
	detach(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("managed swtpm: starting swtpm: %v: %s%s", err, bytes.TrimSpace(out), logTail(filepath.Join(dir, managedLog)))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pid, ok := runningSwtpm(dir); ok && canDial(ctx, sock) {
			log.Info("started managed swtpm", "dir", dir, "pid", pid)
			return &Managed{Dir: dir, PID: pid, Socket: sock, Started: true}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("managed swtpm: daemon did not come up within 10s%s", logTail(filepath.Join(dir, managedLog)))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// setupManaged creates the TPM state with an EK certificate chain from a
// local CA. Configuration files are written into dir so nothing global
// (/etc/swtpm*, /var/lib/swtpm-localca) is read or touched.
func setupManaged(ctx context.Context, dir string) error {
	setup, err := exec.LookPath("swtpm_setup")
	if err != nil {
		return errors.New("managed swtpm: swtpm_setup not found: apt-get install swtpm-tools")
	}
	localca, err := exec.LookPath("swtpm_localca")
	if err != nil {
		return errors.New("managed swtpm: swtpm_localca not found: apt-get install swtpm-tools")
	}
	ca := filepath.Join(dir, managedCADir)
	state := filepath.Join(dir, managedStateDir)
	for _, d := range []string{ca, state} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("managed swtpm: %w", err)
		}
	}
	files := map[string]string{
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, caIssuerCert), filepath.Join(ca, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer Bulwark\n--platform-version 2.1\n--platform-model swtpm\n",
		managedConfigName: fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			localca, filepath.Join(dir, "swtpm-localca.conf"), filepath.Join(dir, "swtpm-localca.options")),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("managed swtpm: %w", err)
		}
	}
	logf := filepath.Join(dir, managedSetupLog)
	cmd := exec.CommandContext(ctx, setup, "--tpm2", "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", "--pcr-banks", "sha256",
		"--config", filepath.Join(dir, managedConfigName), "--logfile", logf, "--not-overwrite")
	if out, err := cmd.CombinedOutput(); err != nil {
		// Leave no half-made TPM behind: the next start tries again.
		_ = os.RemoveAll(state)
		return fmt.Errorf("managed swtpm: swtpm_setup: %v: %s%s", err, bytes.TrimSpace(out), logTail(logf))
	}
	return nil
}

// StopManaged stops the managed swtpm daemon whose state lives in dir, if
// one runs; its state (and so the TPM's identity) stays. The next start is
// like a host reboot: PCRs are reset.
func StopManaged(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unlock, err := fsutil.Lock(ctx, filepath.Join(dir, managedStartLock))
	if err != nil {
		return fmt.Errorf("managed swtpm: locking %s: %w", dir, err)
	}
	defer unlock()
	pid, ok := runningSwtpm(dir)
	if !ok {
		return nil
	}
	if err := terminate(pid, 10*time.Second); err != nil {
		return fmt.Errorf("managed swtpm: stopping pid %d: %w", pid, err)
	}
	for _, f := range []string{managedSocket, managedCtrlSocket, managedPIDFile} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	return nil
}

// ManagedPID reports the pid of the managed swtpm daemon serving dir, if
// one is running.
func ManagedPID(dir string) (int, bool) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return 0, false
	}
	return runningSwtpm(dir)
}

// runningSwtpm reports the pid of the swtpm daemon serving dir, if its pid
// file names a live swtpm process whose command line names dir's socket.
func runningSwtpm(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, managedPIDFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if !processAlive(pid) {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	args := strings.Split(string(cmdline), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != "swtpm" ||
		!strings.Contains(string(cmdline), "path="+filepath.Join(dir, managedSocket)+",") {
		return 0, false
	}
	return pid, true
}

func canDial(ctx context.Context, sock string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := dialUnix(ctx, sock)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// dialUnix connects to a unix socket, retrying while the server's accept
// queue is full (swtpm serves one connection at a time and has a short
// backlog) or while it is not listening yet, for up to 5 seconds.
func dialUnix(ctx context.Context, sock string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// logTail returns the last lines of a log file, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return "\n" + path + ":\n" + string(bytes.TrimSpace(b))
}
