package kvm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fileDigest is "sha256:<hex>" of a file's bytes.
func fileDigest(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// templateConfig is the recipe the template tests share.
func templateConfig(t testing.TB, e *testEnv) Config {
	return Config{
		KernelPath: e.vmlinux, InitrdPath: e.basePath,
		KernelDigest: fileDigest(t, e.vmlinux), InitrdDigest: fileDigest(t, e.basePath),
		MemoryMiB: 256, BootTimeout: 90 * time.Second,
	}
}

var (
	tplOnce sync.Once
	tplDir  string
	tplErr  error
)

// sharedTemplate makes one template per test binary (under envDir, removed
// by TestMain) and returns its directory.
func sharedTemplate(t testing.TB) (string, *testEnv) {
	t.Helper()
	e := bootEnv(t)
	tplOnce.Do(func() {
		cfg := templateConfig(t, e)
		var console syncBuffer
		cfg.Console = &console
		dir := filepath.Join(envDir, "template")
		start := time.Now()
		if _, tplErr = CreateTemplate(context.Background(), cfg, dir, "test"); tplErr != nil {
			tplErr = fmt.Errorf("%w\nconsole:\n%s", tplErr, console.String())
			return
		}
		t.Logf("template made in %v", time.Since(start))
		tplDir = dir
	})
	if tplErr != nil {
		t.Fatal(tplErr)
	}
	return tplDir, e
}

// cloneRun starts a clone of tpl running img's command, waits for it and
// returns its stdout and guest key.
func cloneRun(t *testing.T, e *testEnv, tpl *Template, disk *ImageDisk, name string) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	cfg := templateConfig(t, e)
	cfg.Template, cfg.Image, cfg.Name = tpl, disk.File, name
	var stdout, console syncBuffer
	cfg.Stdout, cfg.Console = &stdout, &console
	sb, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	key, err := sb.GuestKey(ctx)
	if err != nil {
		t.Fatalf("%s: %v\nconsole:\n%s", name, err, console.String())
	}
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("%s: %v\nconsole:\n%s", name, err, console.String())
	}
	code, err := sb.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("%s: exit %d, %v\nconsole:\n%s", name, code, err, console.String())
	}
	return stdout.String(), key
}

// TestTemplateClones starts 20 clones of one template. Every clone must
// run the workload from its own image disk and have its own identity: its
// first /dev/urandom bytes, its guest key and its hostname differ from
// every other clone's. The template's RAM is the same bytes afterwards
// (clones map it privately) and cannot be written through its memfd.
func TestTemplateClones(t *testing.T) {
	dir, e := sharedTemplate(t)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	img := testImage(t, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; hostname; cat /opq/new"},
		Env:        []string{"PATH=/bin"},
	})
	disk := buildDisk(t, img)
	const clones = 20
	type result struct{ random, host, key string }
	results := make([]result, clones)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	start := time.Now()
	for i := range clones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("clone-%02d", i)
			out, key := cloneRun(t, e, tpl, disk, name)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || len(lines[0]) != 64 || lines[2] != "from layer 2" {
				t.Errorf("%s: output %q", name, out)
				return
			}
			results[i] = result{random: lines[0], host: lines[1], key: hex.EncodeToString(key)}
		}()
	}
	wg.Wait()
	t.Logf("%d clones in %v", clones, time.Since(start))
	if t.Failed() {
		return
	}
	seen := map[string]string{}
	for i, r := range results {
		if want := fmt.Sprintf("clone-%02d", i); r.host != want {
			t.Errorf("clone %d: hostname %q, want %q", i, r.host, want)
		}
		for what, v := range map[string]string{"urandom": r.random, "key": r.key} {
			if prev, dup := seen[what+v]; dup {
				t.Errorf("clone %d shares its first %s bytes with %s: %s", i, what, prev, v)
			}
			seen[what+v] = fmt.Sprintf("clone %d", i)
		}
	}
	// The template's pages are the bytes hashed, after all the clones.
	digest, err := copySparse(nil, tpl.ram, tpl.Info.RAM.Size)
	if err != nil {
		t.Fatal(err)
	}
	if digest != tpl.Info.RAM.Digest {
		t.Error("the template's RAM changed while clones ran")
	}
	if _, err := tpl.ram.WriteAt([]byte{1}, 4096); err == nil {
		t.Error("the template's RAM memfd is writable")
	}
	if err := tpl.ram.Truncate(0); err == nil {
		t.Error("the template's RAM memfd can shrink")
	}
}

// TestTemplateRefusesModified: a template whose RAM, device state or
// recipe changed after it was made is refused when loaded.
func TestTemplateRefusesModified(t *testing.T) {
	dir, _ := sharedTemplate(t)
	for _, tc := range []struct {
		name   string
		modify func(t *testing.T, d string)
	}{
		{"ram byte in a hole", func(t *testing.T, d string) { writeAt(t, filepath.Join(d, templateRAMFile), 200<<20, []byte{1}) }},
		{"ram byte in data", func(t *testing.T, d string) { flipFirstData(t, filepath.Join(d, templateRAMFile)) }},
		{"ram truncated", func(t *testing.T, d string) {
			if err := os.Truncate(filepath.Join(d, templateRAMFile), 128<<20); err != nil {
				t.Fatal(err)
			}
		}},
		{"state byte", func(t *testing.T, d string) { flipFirstData(t, filepath.Join(d, templateStateFile)) }},
		{"recipe", func(t *testing.T, d string) {
			p := filepath.Join(d, templateInfoFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"cpus": 1`, `"cpus": 2`, 1)), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := copyTemplate(t, dir)
			if _, err := LoadTemplate(d); err != nil {
				t.Fatalf("the unmodified copy: %v", err)
			}
			tc.modify(t, d)
			_, err := LoadTemplate(d)
			if !errors.Is(err, ErrTemplateModified) {
				t.Fatalf("got %v, want ErrTemplateModified", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestCloneRecipeMismatch: a clone whose launch differs from the
// template's recipe (memory, CPUs, kernel, command line) is refused before
// QEMU starts, naming what differs.
func TestCloneRecipeMismatch(t *testing.T) {
	dir, e := sharedTemplate(t)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	for _, tc := range []struct {
		name, want string
		mod        func(*Config)
	}{
		{"memory", "memory_mib 256 (template) vs 512", func(c *Config) { c.MemoryMiB = 512 }},
		{"cpus", "cpus 1 (template) vs 2", func(c *Config) { c.CPUs = 2 }},
		{"kernel", "kernel sha256:", func(c *Config) { c.KernelDigest = "sha256:" + strings.Repeat("0", 64) }},
		{"cmdline", "cmdline", func(c *Config) { c.Cmdline = tpl.Info.Recipe.Cmdline + " quiet" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := templateConfig(t, e)
			cfg.Template = tpl
			tc.mod(&cfg)
			sb, err := Start(context.Background(), cfg)
			if err == nil {
				sb.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "launcher template create") {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func copyTemplate(t *testing.T, dir string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "tpl")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{templateInfoFile, templateRAMFile, templateStateFile} {
		src, err := os.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(d, f))
		if err != nil {
			t.Fatal(err)
		}
		st, _ := src.Stat()
		if _, err := copySparse(dst, src, st.Size()); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
	return d
}

func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// flipFirstData inverts the first non-zero byte of p.
func flipFirstData(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b {
		if c != 0 {
			writeAt(t, p, int64(i), []byte{^c})
			return
		}
	}
	t.Fatal("no data in " + p)
}
