package kvm

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BenchmarkCloneVsColdBoot measures a sandbox's start to its workload
// running with its image mounted (StartWorkload returned: the agent mounted
// the disk and started the process), for a clone of a template and for a
// cold boot of the same recipe and image, interleaved in one loop. Reports
// clone-ms, cold-ms, speedup (goal >= 5, clone <= 500 ms), and
// template-load-ms: LoadTemplate (RAM and state into sealed memfds while
// hashed), paid once per loaded template, not per clone.
func BenchmarkCloneVsColdBoot(b *testing.B) {
	dir, e := sharedTemplate(b)
	t0 := time.Now()
	tpl, err := LoadTemplate(dir)
	if err != nil {
		b.Fatal(err)
	}
	loadDur := time.Since(t0)
	defer tpl.Close()
	disk := buildDisk(b, testImage(b, v1.Config{Cmd: []string{"/bin/true"}}))
	b.Logf("accelerator %s", tpl.Info.Recipe.Accel)
	ctx := context.Background()
	run := func(clone bool) time.Duration {
		cfg := templateConfig(b, e)
		cfg.Image = disk.File
		if clone {
			cfg.Template = tpl
		}
		t0 := time.Now()
		sb, err := Start(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer sb.Close()
		if err := sb.StartWorkload(ctx, nil, nil); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		if code, err := sb.Wait(ctx); err != nil || code != 0 {
			b.Fatalf("workload: %d, %v", code, err)
		}
		return d
	}
	var clones, colds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			clones = append(clones, run(true))
			colds = append(colds, run(false))
		} else {
			colds = append(colds, run(false))
			clones = append(clones, run(true))
		}
	}
	b.StopTimer()
	cloneMs, coldMs := medianMs(clones), medianMs(colds)
	b.ReportMetric(cloneMs, "clone-ms")
	b.ReportMetric(coldMs, "cold-ms")
	b.ReportMetric(coldMs/cloneMs, "speedup")
	b.ReportMetric(float64(loadDur.Milliseconds()), "template-load-ms")
	b.ReportMetric(0, "ns/op")
}

func medianMs(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// BenchmarkCloneDensity starts BULWARK_BENCH_CLONES (default 100) clones
// of one template, each running an idle workload, and with all of them up
// measures: host memory per clone (the PSS of each QEMU plus all of the
// template memfd's resident pages, shared among them, over the clones), the total, the round trip of
// a channel ping to every clone (p50/p99), and the CPU the idle clones
// use. The baseline is one cold-booted sandbox of the same recipe, idle,
// measured in the same run (its QEMU's PSS).
func BenchmarkCloneDensity(b *testing.B) {
	n := 100
	if v := os.Getenv("BULWARK_BENCH_CLONES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("BULWARK_BENCH_CLONES=%q: want a positive number", v)
		}
	}
	dir, e := sharedTemplate(b)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer tpl.Close()
	disk := buildDisk(b, testImage(b, v1.Config{Cmd: []string{"/bin/sleep", "100000"}}))
	ctx := context.Background()
	start := func(clone bool, name string) *Sandbox {
		cfg := templateConfig(b, e)
		cfg.Image, cfg.Name = disk.File, name
		if clone {
			cfg.Template = tpl
		}
		sb, err := Start(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := sb.StartWorkload(ctx, nil, nil); err != nil {
			sb.Close()
			b.Fatal(err)
		}
		return sb
	}
	for i := 0; i < b.N; i++ {
		// Baseline: one cold boot, idle.
		cold := start(false, "cold")
		time.Sleep(3 * time.Second) // let its boot settle before reading its memory
		coldPSS := pssKiB(b, cold.PID())
		cold.Close()

		sbs := make([]*Sandbox, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		t0 := time.Now()
		for j := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				sbs[j] = start(true, fmt.Sprintf("density-%03d", j))
			}()
		}
		wg.Wait()
		startAll := time.Since(t0)
		defer func() {
			for _, sb := range sbs {
				if sb != nil {
					sb.Close()
				}
			}
		}()
		time.Sleep(5 * time.Second) // idle
		var pss int64
		cpu0 := int64(0)
		for _, sb := range sbs {
			pss += pssKiB(b, sb.PID())
			cpu0 += cpuTicks(b, sb.PID())
		}
		idle0 := time.Now()
		var pings []time.Duration
		for round := 0; round < 5; round++ {
			for _, sb := range sbs {
				d, err := sb.Ping(ctx)
				if err != nil {
					b.Fatal(err)
				}
				pings = append(pings, d)
			}
		}
		time.Sleep(5 * time.Second)
		cpu1 := int64(0)
		for _, sb := range sbs {
			cpu1 += cpuTicks(b, sb.PID())
		}
		window := time.Since(idle0).Seconds()
		// An upper bound: the template's pages count once in full on top of
		// the PSS, which already holds each clone's share of those it maps.
		shared := residentKiB(b, tpl.ram)
		perClone := float64(pss+shared) / float64(n) / 1024
		slices.Sort(pings)
		b.ReportMetric(float64(n), "clones")
		b.ReportMetric(startAll.Seconds(), "start-all-s")
		b.ReportMetric(perClone, "MiB/clone")
		b.ReportMetric(float64(coldPSS)/1024, "cold-MiB")
		b.ReportMetric(float64(pss+shared)/1024/1024, "total-GiB")
		b.ReportMetric(float64(pings[len(pings)/2].Microseconds())/1000, "ping-p50-ms")
		b.ReportMetric(float64(pings[len(pings)*99/100].Microseconds())/1000, "ping-p99-ms")
		b.ReportMetric(float64(cpu1-cpu0)/clockTicks/window/float64(n)*100, "idle-cpu-%/clone")
		b.ReportMetric(0, "ns/op")
	}
}

// pssKiB is a process's proportional set size (smaps_rollup).
func pssKiB(b *testing.B, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	b.Fatalf("no Pss in /proc/%d/smaps_rollup", pid)
	return 0
}

const clockTicks = 100 // USER_HZ

// cpuTicks is a process's user+system CPU time in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 { return cpuTicksT(b, pid) }

func cpuTicksT(b testing.TB, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(st)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// residentKiB is the memory a memfd's pages hold (its allocated blocks).
func residentKiB(b *testing.B, f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		b.Fatal("no stat")
	}
	return st.Blocks * 512 / 1024
}
