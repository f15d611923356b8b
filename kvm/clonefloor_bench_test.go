package kvm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// timeline records when named steps of a sandbox start happened, relative
// to its start: the sandbox's own log lines (Config.Logger, debug level:
// QEMU started, QMP connected, device state loaded, ...), chosen guest
// console lines (the agent's "identity applied", "image disk mounted") as
// they arrive, and marks the caller adds.
type timeline struct {
	mu    sync.Mutex
	t0    time.Time
	marks []timeMark
	line  []byte // the console's unfinished line
	all   bytes.Buffer
	// consoleSteps are the substrings of console lines to mark.
	consoleSteps []string
}

type timeMark struct {
	name string
	at   time.Duration
}

func newTimeline(consoleSteps ...string) *timeline {
	return &timeline{t0: time.Now(), consoleSteps: consoleSteps}
}

func (tl *timeline) mark(name string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.marks = append(tl.marks, timeMark{name, time.Since(tl.t0)})
}

// Write is the guest console.
func (tl *timeline) Write(p []byte) (int, error) {
	now := time.Since(tl.t0)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.line = append(tl.line, p...)
	fmt.Fprintf(&tl.all, "[%6.1f] %s", float64(now.Microseconds())/1000, p)
	for {
		i := bytes.IndexByte(tl.line, '\n')
		if i < 0 {
			break
		}
		l := string(tl.line[:i])
		tl.line = tl.line[i+1:]
		for _, st := range tl.consoleSteps {
			if strings.Contains(l, st) {
				tl.marks = append(tl.marks, timeMark{"guest: " + st, now})
			}
		}
	}
	return len(p), nil
}

// timelineHandler is a slog handler that marks every record's message.
type timelineHandler struct{ tl *timeline }

func (h timelineHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h timelineHandler) Handle(_ context.Context, r slog.Record) error {
	h.tl.mark(r.Message)
	return nil
}
func (h timelineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h timelineHandler) WithGroup(string) slog.Handler      { return h }

// at is the time of the first mark named name, or -1.
func (tl *timeline) at(name string) time.Duration {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, m := range tl.marks {
		if m.name == name {
			return m.at
		}
	}
	return -1
}

// cloneSteps are the steps of a clone's start, in order, as marked.
var cloneSteps = []string{
	"starting QEMU",                // confinement and cgroup made, exec next
	"QEMU started",                 // fork+exec of the jailer returned
	"QEMU exec'ed",                 // the jailer made QEMU's root and exec'ed it
	"QMP connected",                // greeting read, capabilities negotiated
	"template device state loaded", // migrate-incoming completed
	"guest continued",              // chardev checked, cont returned
	"sandbox started",              // IDENTITY sent: Start returns
	"guest: identity applied",      // the agent mixed in the entropy, set the clock
	"HELLO",                        // the guest key arrived
	"guest: image disk mounted",    // erofs + overlay + pseudo filesystems
	"STARTED",                      // StartWorkload returned: the workload runs
}

// startCloneTimed starts a clone of tpl on disk, marks its steps on a new
// timeline, and returns it with the sandbox (running its workload).
func startCloneTimed(b *testing.B, e *testEnv, tpl *Template, disk *ImageDisk, name string) (*Sandbox, *timeline) {
	ctx := context.Background()
	tl := newTimeline("identity applied", "image disk mounted")
	cfg := templateConfig(b, e)
	cfg.Image, cfg.Template, cfg.Name = disk.File, tpl, name
	cfg.Logger = slog.New(timelineHandler{tl})
	cfg.Console = tl
	tl.t0 = time.Now()
	sb, err := Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := sb.GuestKey(ctx); err != nil {
		sb.Close()
		b.Fatal(err)
	}
	tl.mark("HELLO")
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		sb.Close()
		b.Fatal(err)
	}
	tl.mark("STARTED")
	return sb, tl
}

// BenchmarkCloneSteps breaks a clone's start (kvm.Start → StartWorkload
// returned, as in BenchmarkCloneVsColdBoot) into its steps: for each step
// the median time since Start was called, over b.N clones, logged as a
// table and reported as <step>-ms metrics. Also reports QEMU's CPU time
// up to STARTED (cpu-ms): near the wall time, the start is CPU-bound.
func BenchmarkCloneSteps(b *testing.B) {
	dir, e := sharedTemplate(b)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer tpl.Close()
	disk := buildDisk(b, testImage(b, v1.Config{Cmd: []string{"/bin/true"}}))
	at := map[string][]time.Duration{}
	var cpu []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sb, tl := startCloneTimed(b, e, tpl, disk, fmt.Sprintf("steps-%d", i))
		cpu = append(cpu, time.Duration(cpuTicksT(b, sb.PID()))*time.Second/clockTicks)
		for _, st := range cloneSteps {
			at[st] = append(at[st], tl.at(st))
		}
		if code, err := sb.Wait(context.Background()); err != nil || code != 0 {
			b.Fatalf("workload: %d, %v", code, err)
		}
		sb.Close()
		if os.Getenv("BULWARK_BENCH_CONSOLE") != "" {
			fmt.Fprintf(os.Stderr, "console:\n%s\n", tl.all.String())
		}
	}
	b.StopTimer()
	var tab strings.Builder
	prev := 0.0
	for _, st := range cloneSteps {
		ms := medianMs(at[st])
		fmt.Fprintf(&tab, "\n%-32s %7.1f ms  (+%6.1f)  all: %v", st, ms, ms-prev, roundAll(at[st]))
		prev = ms
		b.ReportMetric(ms, strings.ReplaceAll(strings.TrimPrefix(st, "guest: "), " ", "-")+"-ms")
	}
	fmt.Fprintf(os.Stderr, "clone steps, median since Start (n=%d), load %s:%s\n", b.N, loadavg(), tab.String())
	b.ReportMetric(medianMs(cpu), "cpu-ms")
	b.ReportMetric(0, "ns/op")
}

func roundAll(ds []time.Duration) []time.Duration {
	out := slices.Clone(ds)
	for i := range out {
		out[i] = out[i].Round(time.Millisecond)
	}
	return out
}

// smapsUse is one process's memory by kind of mapping, in KiB.
type smapsUse struct {
	rss, pss, private map[string]int64
}

// smapsKind names what a mapping of a QEMU process holds.
func smapsKind(header string, tbSizeMiB int) string {
	f := strings.Fields(header)
	perms, name := f[1], ""
	if len(f) >= 6 {
		name = strings.Join(f[5:], " ")
	}
	switch {
	case strings.Contains(name, "bulwark-template-ram"):
		return "guest-ram"
	case strings.HasPrefix(perms, "rwx") && name == "":
		return "tcg-cache"
	case strings.HasSuffix(name, "qemu-system-x86_64"):
		return "qemu-binary"
	case strings.Contains(name, ".so"):
		return "libraries"
	case name == "[heap]":
		return "heap"
	case name == "" || name == "[stack]" || strings.HasPrefix(name, "[anon"):
		return "other-anon"
	}
	return "other"
}

func readSmaps(b testing.TB, pid, tbSizeMiB int) smapsUse {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		b.Fatal(err)
	}
	u := smapsUse{map[string]int64{}, map[string]int64{}, map[string]int64{}}
	kind := ""
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") || strings.Contains(f[0], "-") {
			kind = smapsKind(l, tbSizeMiB)
			continue
		}
		if len(f) < 2 {
			continue
		}
		var n int64
		fmt.Sscan(f[1], &n)
		switch f[0] {
		case "Rss:":
			u.rss[kind] += n
		case "Pss:":
			u.pss[kind] += n
		case "Private_Clean:", "Private_Dirty:":
			u.private[kind] += n
		}
	}
	return u
}

// cloneVariant is a way of running clones to compare: the translation
// cache size and QEMU's environment.
type cloneVariant struct {
	name   string
	tbSize int
	env    []string
	noTHP  bool
	kernel bool // QEMU loads the kernel and initramfs (as before 2026-12-05)
}

func cloneVariants(b *testing.B) []cloneVariant {
	vs := []cloneVariant{
		{name: "before", tbSize: 16, kernel: true},
		{name: "tb16", tbSize: 16, noTHP: true},
		{name: "tb12", tbSize: 12, noTHP: true},
		{name: "tb10", tbSize: 10, noTHP: true},
		{name: "tb8", tbSize: 8, noTHP: true},
		{name: "tb16-thp", tbSize: 16},
		{name: "tb16-kernel", tbSize: 16, noTHP: true, kernel: true},
		{name: "tb16-arena1", tbSize: 16, noTHP: true, env: []string{"MALLOC_ARENA_MAX=1"}},
	}
	if v := os.Getenv("BULWARK_BENCH_VARIANTS"); v != "" {
		var sel []cloneVariant
		for _, name := range strings.Split(v, ",") {
			found := false
			for _, c := range vs {
				if c.name == name {
					sel, found = append(sel, c), true
				}
			}
			if !found {
				var tb int
				var env string
				if _, err := fmt.Sscanf(name, "tb%d-%s", &tb, &env); err == nil {
					sel = append(sel, cloneVariant{name: name, tbSize: tb, env: strings.Split(env, "+"), noTHP: true})
					continue
				}
				b.Fatalf("BULWARK_BENCH_VARIANTS: unknown variant %q", name)
			}
		}
		vs = sel
	}
	return vs
}

// BenchmarkCloneMemoryVariants starts BULWARK_BENCH_PER_VARIANT (default
// 3) idle clones of each variant (translation cache size, QEMU's
// environment), interleaved, and once all are idle reports per variant:
// the median start (Start → workload running), and each clone's memory by
// kind of mapping (/proc/PID/smaps): PSS, and the private part (what this
// clone alone costs, whatever the number of clones).
func BenchmarkCloneMemoryVariants(b *testing.B) {
	per := 3
	if v := os.Getenv("BULWARK_BENCH_PER_VARIANT"); v != "" {
		fmt.Sscan(v, &per)
	}
	dir, e := sharedTemplate(b)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer tpl.Close()
	disk := buildDisk(b, testImage(b, v1.Config{Cmd: []string{"/bin/sleep", "100000"}}))
	vs := cloneVariants(b)
	defer func() { cloneTBSizeMiB, qemuEnv, cloneNoTHP, cloneKernel = tcgTBSizeMiB, nil, true, false }()
	for i := 0; i < b.N; i++ {
		type clone struct {
			v       int
			sb      *Sandbox
			start   time.Duration
			flushes int // translation cache flushes when the workload started
			code    int // translated code then (bytes)
		}
		var clones []clone
		defer func() {
			for _, c := range clones {
				c.sb.Close()
			}
		}()
		for r := 0; r < per; r++ {
			for vi, v := range vs {
				cloneTBSizeMiB, qemuEnv, cloneNoTHP, cloneKernel = v.tbSize, v.env, v.noTHP, v.kernel
				sb, tl := startCloneTimed(b, e, tpl, disk, fmt.Sprintf("mem-%s-%d", v.name, r))
				f, c := jitStats(infoJIT(b, sb))
				clones = append(clones, clone{vi, sb, tl.at("STARTED"), f, c})
			}
		}
		time.Sleep(5 * time.Second) // idle
		kinds := []string{"guest-ram", "tcg-cache", "qemu-binary", "libraries", "heap", "other-anon", "other"}
		var out strings.Builder
		fmt.Fprintf(&out, "uptime: %s", loadavg())
		for vi, v := range vs {
			var starts []time.Duration
			var flushes, code []int
			sum := map[string]smapsUse{}
			n := 0
			for _, c := range clones {
				if c.v != vi {
					continue
				}
				starts = append(starts, c.start)
				flushes, code = append(flushes, c.flushes), append(code, c.code)
				u := readSmaps(b, c.sb.PID(), v.tbSize)
				sum["x"] = addUse(sum["x"], u)
				n++
			}
			s := sum["x"]
			fmt.Fprintf(&out, "\n%-14s start median %6.0f ms %v; at start: cache flushes %v, code %v bytes", v.name, medianMs(starts), roundAll(starts), flushes, code)
			var tp, tpriv int64
			for _, k := range kinds {
				fmt.Fprintf(&out, "\n   %-12s rss %7.1f  pss %7.1f  private %7.1f MiB", k,
					float64(s.rss[k])/1024/float64(n), float64(s.pss[k])/1024/float64(n), float64(s.private[k])/1024/float64(n))
				tp += s.pss[k]
				tpriv += s.private[k]
			}
			fmt.Fprintf(&out, "\n   %-12s                pss %7.1f  private %7.1f MiB", "total", float64(tp)/1024/float64(n), float64(tpriv)/1024/float64(n))
			b.ReportMetric(float64(tpriv)/1024/float64(n), v.name+"-private-MiB")
			b.ReportMetric(medianMs(starts), v.name+"-start-ms")
		}
		fmt.Fprintln(os.Stderr, out.String())
		if p := os.Getenv("BULWARK_BENCH_SMAPS"); p != "" {
			for _, c := range clones {
				raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", c.sb.PID()))
				os.WriteFile(fmt.Sprintf("%s-%s-%d", p, vs[c.v].name, c.sb.PID()), raw, 0o644)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
}

func addUse(a, u smapsUse) smapsUse {
	if a.rss == nil {
		a = smapsUse{map[string]int64{}, map[string]int64{}, map[string]int64{}}
	}
	for k, v := range u.rss {
		a.rss[k] += v
	}
	for k, v := range u.pss {
		a.pss[k] += v
	}
	for k, v := range u.private {
		a.private[k] += v
	}
	return a
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// infoJIT is QEMU's "info jit": the translation cache's state (TBs
// translated since the last flush, code size, flushes).
func infoJIT(b testing.TB, sb *Sandbox) string {
	raw, err := sb.qmp.Execute(context.Background(), "human-monitor-command", map[string]any{"command-line": "info jit"})
	if err != nil {
		b.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		b.Fatal(err)
	}
	return out
}

// jitStats reads the flush count and the translated code's size from
// "info jit".
func jitStats(info string) (flushes, code int) {
	for _, l := range strings.Split(info, "\n") {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "TB flush count") && len(f) >= 4:
			flushes, _ = strconv.Atoi(f[3])
		case strings.HasPrefix(l, "gen code size") && len(f) >= 4:
			code, _ = strconv.Atoi(strings.Split(f[3], "/")[0])
		}
	}
	return flushes, code
}

// BenchmarkCloneJIT prints QEMU's "info jit" for one clone when its
// workload started and after 5 s idle, and for a cold boot of the same
// recipe when its workload started: how much guest code each translated.
func BenchmarkCloneJIT(b *testing.B) {
	dir, e := sharedTemplate(b)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer tpl.Close()
	disk := buildDisk(b, testImage(b, v1.Config{Cmd: []string{"/bin/sleep", "100000"}}))
	for i := 0; i < b.N; i++ {
		sb, _ := startCloneTimed(b, e, tpl, disk, "jit")
		fmt.Fprintf(os.Stderr, "clone, workload started:\n%s\n", infoJIT(b, sb))
		time.Sleep(5 * time.Second)
		fmt.Fprintf(os.Stderr, "clone, 5 s later:\n%s\n", infoJIT(b, sb))
		sb.Close()
		cfg := templateConfig(b, e)
		cfg.Image, cfg.Name = disk.File, "jit-cold"
		cold, err := Start(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := cold.StartWorkload(context.Background(), nil, nil); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stderr, "cold boot, workload started:\n%s\n", infoJIT(b, cold))
		cold.Close()
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkClonePerf profiles clones' starts with perf (system-wide, call
// graphs by DWARF unwinding, CLOCK_MONOTONIC) and sorts QEMU's CPU samples
// in each step of the start by what QEMU was doing: translating guest code
// (a frame under tb_gen_code: TCG's front end, optimizer, register
// allocation, code emission), running translated guest code (the sample
// in the anonymous translation cache), the dynamic loader (relocating
// QEMU's PIE binary and libraries), the host kernel (exec, page faults,
// syscalls), the jailer (before it execs QEMU), or the rest of QEMU (device emulation, helpers, main loop).
// Debian's QEMU exports its symbols (module support), so tb_gen_code is
// named without debug packages. Needs perf (linux-perf).
func BenchmarkClonePerf(b *testing.B) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		b.Skip("perf not installed")
	}
	dir, e := sharedTemplate(b)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer tpl.Close()
	disk := buildDisk(b, testImage(b, v1.Config{Cmd: []string{"/bin/true"}}))
	tmp := b.TempDir()
	type window struct {
		name     string
		from, to string
		ms       []time.Duration
		counts   map[string]int
	}
	wins := []*window{
		{name: "exec → QMP connected", from: "QEMU started", to: "QMP connected"},
		{name: "state loaded, cont, IDENTITY sent", from: "QMP connected", to: "sandbox started"},
		{name: "→ identity applied (guest)", from: "sandbox started", to: "guest: identity applied"},
		{name: "→ HELLO (key made)", from: "guest: identity applied", to: "HELLO"},
		{name: "→ image mounted (guest)", from: "guest: identity applied", to: "guest: image disk mounted"},
		{name: "mounted → workload started", from: "guest: image disk mounted", to: "STARTED"},
		{name: "identity applied → STARTED", from: "guest: identity applied", to: "STARTED"},
		{name: "all: QEMU started → STARTED", from: "QEMU started", to: "STARTED"},
	}
	for _, w := range wins {
		w.counts = map[string]int{}
	}
	for i := 0; i < b.N; i++ {
		data := filepath.Join(tmp, fmt.Sprintf("perf-%d.data", i))
		ctl, ack := filepath.Join(tmp, "ctl"), filepath.Join(tmp, "ack")
		os.Remove(ctl)
		os.Remove(ack)
		if err := unix.Mkfifo(ctl, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := unix.Mkfifo(ack, 0o600); err != nil {
			b.Fatal(err)
		}
		rec := exec.Command(perf, "record", "-a", "-k", "CLOCK_MONOTONIC", "--call-graph", "dwarf,8192", "-F", "997", "-m", "4096",
			"-D", "-1", "--control", "fifo:"+ctl+","+ack, "-o", data)
		var recErr bytes.Buffer
		rec.Stderr = &recErr
		if err := rec.Start(); err != nil {
			b.Fatal(err)
		}
		ctlW, err := os.OpenFile(ctl, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		ackR, err := os.Open(ack)
		if err != nil {
			b.Fatal(err)
		}
		command := func(c string) {
			if _, err := ctlW.WriteString(c + "\n"); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 16)
			if _, err := ackR.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
		command("enable")
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		sb, tl := startCloneTimed(b, e, tpl, disk, fmt.Sprintf("perf-%d", i))
		command("disable")
		ctlW.Close()
		ackR.Close()
		rec.Process.Signal(syscall.SIGINT)
		if err := rec.Wait(); err != nil && !strings.Contains(recErr.String(), "Captured and wrote") {
			b.Fatalf("perf record: %v\n%s", err, recErr.String())
		}
		if strings.Contains(recErr.String(), "lost") {
			fmt.Fprintf(os.Stderr, "perf record: %s\n", recErr.String())
		}
		pid := sb.PID()
		sb.Wait(context.Background())
		sb.Close()
		out, err := exec.Command(perf, "script", "-i", data, "--pid", strconv.Itoa(pid), "-F", "time,ip,sym,dso").Output()
		if err != nil {
			b.Fatalf("perf script: %v", err)
		}
		samples := parsePerfScript(string(out))
		// tl.t0 was taken just after ts (startCloneTimed): microseconds
		// apart, far below the steps.
		t0 := time.Duration(ts.Nano())
		for _, w := range wins {
			from, to := tl.at(w.from), tl.at(w.to)
			if from < 0 || to < 0 {
				b.Fatalf("no mark %q or %q", w.from, w.to)
			}
			if to < from { // the mount now often ends before HELLO
				continue
			}
			w.ms = append(w.ms, to-from)
			for _, smp := range samples {
				if smp.at >= t0+from && smp.at < t0+to {
					w.counts[smp.kind]++
				}
			}
		}
	}
	kinds := []string{"translating", "guest-code", "qemu-other", "kernel", "dynamic-loader", "jailer"}
	var out strings.Builder
	fmt.Fprintf(&out, "QEMU's CPU samples at 997 Hz (≈1 ms each) by activity, %d clones, load %s:\n%-36s %8s %7s", b.N, loadavg(), "step", "wall-ms", "samples")
	for _, k := range kinds {
		fmt.Fprintf(&out, " %14s", k)
	}
	for _, w := range wins {
		n := 0
		for _, c := range w.counts {
			n += c
		}
		if len(w.ms) == 0 {
			continue
		}
		fmt.Fprintf(&out, "\n%-36s %8.0f %7.0f", w.name, medianMs(w.ms), float64(n)/float64(len(w.ms)))
		for _, k := range kinds {
			pct := 0.0
			if n > 0 {
				pct = 100 * float64(w.counts[k]) / float64(n)
			}
			fmt.Fprintf(&out, " %13.0f%%", pct)
		}
		if w.to == "STARTED" && w.from == "QEMU started" && n > 0 {
			b.ReportMetric(100*float64(w.counts["translating"])/float64(n), "translating-%")
			b.ReportMetric(float64(w.counts["translating"])/float64(b.N), "translating-samples")
			b.ReportMetric(float64(n)/float64(b.N), "qemu-samples")
		}
	}
	fmt.Fprintln(os.Stderr, out.String())
	b.ReportMetric(0, "ns/op")
}

type perfSample struct {
	at   time.Duration // CLOCK_MONOTONIC
	kind string
}

// parsePerfScript reads `perf script -F time,ip,sym,dso` with call chains
// and classifies each sample (see BenchmarkClonePerf).
func parsePerfScript(out string) []perfSample {
	var samples []perfSample
	var cur *perfSample
	var frames []string
	flush := func() {
		if cur == nil {
			return
		}
		cur.kind = "qemu-other"
		switch {
		case len(frames) == 0:
		case slices.ContainsFunc(frames, func(f string) bool { return strings.Contains(f, " tb_gen_code ") }):
			cur.kind = "translating"
		case strings.Contains(frames[0], "[kernel.kallsyms]"):
			cur.kind = "kernel"
		case slices.ContainsFunc(frames, func(f string) bool { return strings.Contains(f, "ld-linux-x86-64") }):
			cur.kind = "dynamic-loader"
		case strings.Contains(frames[0], "[unknown]") || strings.Contains(frames[0], "//anon") || strings.Contains(frames[0], ".map)"):
			cur.kind = "guest-code" // perf names the anonymous executable cache /tmp/perf-PID.map
		case slices.ContainsFunc(frames, func(f string) bool { return strings.Contains(f, ".test)") || strings.Contains(f, "/launcher)") }):
			cur.kind = "jailer"
		}
		samples = append(samples, *cur)
		cur, frames = nil, nil
	}
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.TrimSpace(l) == "":
			flush()
		case strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "        "):
			frames = append(frames, strings.TrimSpace(l)+" ")
		default:
			flush()
			sec, frac, _ := strings.Cut(strings.TrimSuffix(strings.TrimSpace(l), ":"), ".")
			s, _ := strconv.ParseInt(sec, 10, 64)
			for len(frac) < 9 {
				frac += "0"
			}
			ns, _ := strconv.ParseInt(frac[:9], 10, 64)
			cur = &perfSample{at: time.Duration(s)*time.Second + time.Duration(ns)}
		}
	}
	flush()
	return samples
}
