package hostd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/internal/launch"
	"google.golang.org/protobuf/encoding/protojson"
)

// Sandbox statuses (bulwarkv1.Sandbox.Status).
const (
	StatusCreated = "created" // launching: not yet running
	StatusRunning = "running"
	StatusExited  = "exited" // the workload's exit status came back
	StatusFailed  = "failed" // the launch failed, or the sandbox ended without an exit status
	StatusLost    = "lost"   // its QEMU ended unwatched, or its launch was cut short
)

// On disk, each sandbox is a directory under SandboxesDir named by its id:
// sandbox.json (its record, rewritten atomically at each change) and
// output.log (the workload's output, outputlog.go).
const (
	recordFile = "sandbox.json"
	outputFile = "output.log"
	// maxRecordFile bounds a record read back at start.
	maxRecordFile = 1 << 20
)

// SandboxesDir is where the host service keeps its sandboxes.
func SandboxesDir(stateDir string) string { return filepath.Join(stateDir, "sandboxes") }

func writeRecord(dir string, sb *bulwarkv1.Sandbox) error {
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(sb)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, recordFile), append(b, '\n'), 0o600)
}

func readSandboxRecord(dir string) (*bulwarkv1.Sandbox, error) {
	b, err := fsutil.ReadFileLimit(filepath.Join(dir, recordFile), maxRecordFile)
	if err != nil {
		return nil, err
	}
	sb := &bulwarkv1.Sandbox{}
	if err := protojson.Unmarshal(b, sb); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, recordFile), err)
	}
	if sb.GetId() != filepath.Base(dir) || !launch.ValidSandboxID(sb.GetId()) {
		return nil, fmt.Errorf("%s: names sandbox %q, not its directory's", filepath.Join(dir, recordFile), sb.GetId())
	}
	return sb, nil
}

// loadRecords reads every sandbox record under root. Records of launches
// that were in progress when the last host service stopped are marked lost
// (and saved so), and any QEMU of theirs still found is killed, so none
// runs unowned; running ones are left for the service to take over.
func loadRecords(root string) ([]*bulwarkv1.Sandbox, []error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	var out []*bulwarkv1.Sandbox
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !launch.ValidSandboxID(e.Name()) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		sb, err := readSandboxRecord(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if sb.GetStatus() == StatusCreated {
			killLeftover(sb)
			sb.Status = StatusLost
			sb.ExitCode = -1
			sb.Error = "the host service stopped while the sandbox was being launched"
			if err := writeRecord(dir, sb); err != nil {
				errs = append(errs, err)
			}
		}
		out = append(out, sb)
	}
	return out, errs
}

// killLeftover kills the sandbox's QEMU if it still runs: every process
// whose command line names the sandbox as QEMU's -name (bulwark-ID; the
// jailer's command line carries QEMU's). Launches record QEMU's pid only
// once the workload runs, and a daemon sandbox's QEMU outlives its
// daemon, so the process table is searched rather than a recorded pid.
func killLeftover(sb *bulwarkv1.Sandbox) {
	name := []byte("bulwark-" + sb.GetId())
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(b, name) {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
	}
}
