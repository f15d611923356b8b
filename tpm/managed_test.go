package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

func TestParseSpec(t *testing.T) {
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	regular := filepath.Join(tmp, "file")
	os.WriteFile(regular, nil, 0o600)
	env := func(k string) string {
		if k == "BULWARK_STATE" {
			return "/srv/bw"
		}
		return ""
	}
	cases := []struct {
		spec    string
		want    Spec
		wantErr string
	}{
		{"sim", Spec{Kind: KindSimulator}, ""},
		{"swtpm:/x/y", Spec{Kind: KindManaged, Path: "/x/y"}, ""},
		{"swtpm:", Spec{}, "needs a state directory"},
		{"tcp:127.0.0.1:2321", Spec{Kind: KindTCP, Addr: "127.0.0.1:2321"}, ""},
		{"tcp:localhost", Spec{}, "want tcp:HOST:PORT"},
		{"/dev/null", Spec{Kind: KindDevice, Path: "/dev/null"}, ""},
		{sock, Spec{Kind: KindSocket, Path: sock}, ""},
		{regular, Spec{}, "not a character device or socket"},
		{"/nonexistent/tpm", Spec{}, "no such file"},
		{"mssim:foo", Spec{}, "not understood"},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			got, err := ParseSpec(c.spec, env)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("ParseSpec(%q) = %v, %v; want error containing %q", c.spec, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ParseSpec(%q) = %+v, %v; want %+v", c.spec, got, err, c.want)
			}
		})
	}
	def, err := ParseSpec("", env)
	if err != nil {
		t.Fatal(err)
	}
	if _, statErr := os.Stat(DefaultDevice); statErr == nil {
		if def.Kind != KindDevice {
			t.Fatalf("default with %s present = %+v", DefaultDevice, def)
		}
	} else if def != (Spec{Kind: KindManaged, Path: "/srv/bw/swtpm"}) {
		t.Fatalf("default = %+v, want the managed swtpm in the state dir", def)
	}
}

func TestSimulatorNeedsCgo(t *testing.T) {
	if simulatorAvailable {
		t.Skip("built with cgo")
	}
	if _, err := Open(context.Background(), "sim"); err == nil || !strings.Contains(err.Error(), "cgo") {
		t.Fatalf("Open(sim) without cgo: %v", err)
	}
}

// TestManagedIdentityAndReuse: a managed swtpm keeps one identity across
// opens, a second process reuses the running daemon and sees its PCRs, and
// after StopManaged the next open is a reboot of the same TPM.
func TestManagedIdentityAndReuse(t *testing.T) {
	needSwtpm(t)
	if testing.Short() {
		t.Skip("creates a TPM with swtpm_setup (seconds)")
	}
	dir := filepath.Join(t.TempDir(), "swtpm")
	t.Cleanup(func() { _ = StopManaged(dir) })
	ctx := ctxT(t)

	tp1, err := Open(ctx, "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	m1 := *tp1.Managed()
	if !m1.Started {
		t.Fatal("first open did not start the daemon")
	}
	ek1, err := tp1.EKPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	if err := tp1.Extend(ctx, 16, d[:]); err != nil {
		t.Fatal(err)
	}
	pcr, _ := tp1.ReadPCRs(ctx, 16)
	nonce := bytes.Repeat([]byte{4}, 16)
	q1, err := tp1.Quote(ctx, []int{16}, nonce)
	if err != nil {
		t.Fatal(err)
	}
	ak1, _ := tp1.AK(ctx)
	tp1.Close()

	tp2, err := Open(ctx, "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := tp2.Managed(); m.Started || m.PID != m1.PID {
		t.Fatalf("second open: %+v, want reuse of pid %d", m, m1.PID)
	}
	ek2, _ := tp2.EKPublic(ctx)
	if !bytes.Equal(ek1, ek2) {
		t.Fatal("EK changed between opens")
	}
	tp2.Close()

	// Another process: same daemon, same EK, same PCR 16.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper process: %v: %s", err, out)
	}
	fields := strings.Fields(string(out))
	ekHash := sha256.Sum256(ek1)
	if len(fields) != 3 || fields[0] != strconv.Itoa(m1.PID) || fields[1] != hex.EncodeToString(ekHash[:]) || fields[2] != hex.EncodeToString(pcr[16]) {
		t.Fatalf("helper saw %q, want pid %d, EK %x, PCR16 %x", out, m1.PID, ekHash, pcr[16])
	}

	// Stop: the daemon goes away; the next open starts it again with the
	// same identity and fresh PCRs (a reboot).
	if err := StopManaged(dir); err != nil {
		t.Fatal(err)
	}
	if processAlive(m1.PID) {
		t.Fatalf("pid %d still alive after StopManaged", m1.PID)
	}
	if err := StopManaged(dir); err != nil {
		t.Fatalf("second StopManaged: %v", err)
	}
	tp3, err := Open(ctx, "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tp3.Close()
	if m := tp3.Managed(); !m.Started || m.PID == m1.PID {
		t.Fatalf("open after stop: %+v", m)
	}
	ek3, _ := tp3.EKPublic(ctx)
	if !bytes.Equal(ek1, ek3) {
		t.Fatal("EK changed across a restart")
	}
	pcr3, _ := tp3.ReadPCRs(ctx, 16)
	if bytes.Equal(pcr3[16], pcr[16]) || !bytes.Equal(pcr3[16], make([]byte, 32)) {
		t.Fatalf("PCR 16 after restart = %x, want zeros", pcr3[16])
	}
	// The AK persisted too, and the verifier sees the restart as a reset.
	q3, err := tp3.Quote(ctx, []int{16}, nonce)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := verify.VerifyQuote(ak1.Public, q1.Quoted, q1.Signature, nonce, q1.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := verify.VerifyQuote(ak1.Public, q3.Quoted, q3.Signature, nonce, q3.PCRs)
	if err != nil {
		t.Fatalf("quote after restart with the AK from before: %v", err)
	}
	if r3.Clock().ResetCount <= r1.Clock().ResetCount {
		t.Fatalf("resetCount %d after restart, %d before", r3.Clock().ResetCount, r1.Clock().ResetCount)
	}
	// The daemon dying under an open TPM: the next operation restarts it.
	if err := StopManaged(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := tp3.ReadPCRs(ctx, 16); err != nil {
		t.Fatalf("operation after the daemon stopped: %v", err)
	}
}

// TestManagedConcurrentStart: two processes opening a fresh managed swtpm
// at once end up with one daemon.
func TestManagedConcurrentStart(t *testing.T) {
	needSwtpm(t)
	if testing.Short() {
		t.Skip("creates a TPM with swtpm_setup (seconds)")
	}
	dir := filepath.Join(t.TempDir(), "swtpm")
	t.Cleanup(func() { _ = StopManaged(dir) })
	exe, _ := os.Executable()
	ctx := ctxT(t)
	outs := make([][]byte, 2)
	errs := make([]error, 2)
	done := make(chan int)
	for i := range 2 {
		go func() {
			cmd := exec.CommandContext(ctx, exe)
			cmd.Env = append(os.Environ(), helperEnv+"="+dir)
			outs[i], errs[i] = cmd.Output()
			done <- i
		}()
	}
	<-done
	<-done
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("helper %d: %v", i, errs[i])
		}
	}
	if string(outs[0]) != string(outs[1]) {
		t.Fatalf("two starters saw different TPMs: %q vs %q", outs[0], outs[1])
	}
}

// startSwtpmTCP starts a plain swtpm server on TCP (not managed), in
// t.TempDir(), stopped in Cleanup. It returns the command port.
func startSwtpmTCP(t *testing.T) int {
	t.Helper()
	needSwtpm(t)
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		pidFile := filepath.Join(dir, "pid")
		cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
			"--server", fmt.Sprintf("type=tcp,port=%d", port), "--ctrl", fmt.Sprintf("type=tcp,port=%d", port+1),
			"--flags", "not-need-init,startup-clear", "--pid", "file="+pidFile, "--daemon")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("swtpm on port %d: %v: %s", port, err, out)
			continue
		}
		var pid int
		for i := 0; i < 200; i++ {
			if b, err := os.ReadFile(pidFile); err == nil {
				if pid, _ = strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
					break
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if pid == 0 {
			t.Fatal("swtpm wrote no pid file")
		}
		t.Cleanup(func() { _ = terminate(pid, 5*time.Second) })
		return port
	}
	t.Fatal("could not start swtpm on a free port")
	return 0
}

// TestTCPAndTpm2Tools opens a swtpm server by tcp:HOST:PORT and checks our
// PCR extends against an independent client, tpm2-tools' tpm2_pcrread.
func TestTCPAndTpm2Tools(t *testing.T) {
	port := startSwtpmTCP(t)
	ctx := ctxT(t)
	tp, err := Open(ctx, fmt.Sprintf("tcp:127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	before, err := tp.ReadPCRs(ctx, limits.DefaultLaunchPCR)
	if err != nil {
		t.Fatal(err)
	}
	var ds [][]byte
	for i := range 3 {
		d := sha256.Sum256([]byte{byte(i)})
		ds = append(ds, d[:])
		if err := tp.Extend(ctx, limits.DefaultLaunchPCR, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	want := extendExpected(before[limits.DefaultLaunchPCR], ds...)
	ours, _ := tp.ReadPCRs(ctx, limits.DefaultLaunchPCR)
	if !bytes.Equal(ours[limits.DefaultLaunchPCR], want) {
		t.Fatalf("our PCR read %x, computed %x", ours[limits.DefaultLaunchPCR], want)
	}
	// And the quote over it verifies (first ECDSA quote on swtpm may need a retry).
	nonce := bytes.Repeat([]byte{3}, 20)
	if _, err := tp.Quote(ctx, []int{limits.DefaultLaunchPCR}, nonce); err != nil {
		t.Fatal(err)
	}

	if _, err := exec.LookPath("tpm2_pcrread"); err != nil {
		t.Skip("tpm2_pcrread not installed: apt-get install tpm2-tools")
	}
	outFile := filepath.Join(t.TempDir(), "pcr.bin")
	cmd := exec.CommandContext(ctx, "tpm2_pcrread", "-T", fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port),
		fmt.Sprintf("sha256:%d", limits.DefaultLaunchPCR), "-o", outFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrread: %v: %s", err, out)
	}
	theirs, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(theirs, want) {
		t.Fatalf("tpm2_pcrread says %x, we computed %x", theirs, want)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := ctxT(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := Open(ctx, "tcp:"+addr); err == nil {
		t.Fatal("opened a closed port")
	}
	if _, err := Open(ctx, "bogus"); err == nil {
		t.Fatal("opened a bogus spec")
	}
	// A managed dir whose daemon cannot start (dir is a file) fails clearly.
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, nil, 0o600)
	if _, err := Open(ctx, "swtpm:"+f); err == nil {
		t.Fatal("opened a managed swtpm in a regular file")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed out instead of failing: %v", err)
	}
}

// TestUnixSocketSpec opens a swtpm we started ourselves on a unix socket by
// its path (raw TPM commands), not as a managed swtpm.
func TestUnixSocketSpec(t *testing.T) {
	needSwtpm(t)
	dir := t.TempDir()
	sock, pidFile := filepath.Join(dir, "tpm.sock"), filepath.Join(dir, "pid")
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--flags", "not-need-init,startup-clear", "--pid", "file="+pidFile, "--daemon")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swtpm: %v: %s", err, out)
	}
	var pid int
	for i := 0; i < 200 && pid == 0; i++ {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(10 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("swtpm wrote no pid file")
	}
	t.Cleanup(func() { _ = terminate(pid, 5*time.Second) })
	ctx := ctxT(t)
	tp, err := Open(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if tp.Spec().Kind != KindSocket {
		t.Fatalf("kind %s", tp.Spec().Kind)
	}
	d := sha256.Sum256([]byte("s"))
	if err := tp.Extend(ctx, 16, d[:]); err != nil {
		t.Fatal(err)
	}
	v, err := tp.ReadPCRs(ctx, 16)
	if err != nil || !bytes.Equal(v[16], extendExpected(make([]byte, 32), d[:])) {
		t.Fatalf("PCR 16 = %x, %v", v[16], err)
	}
}
