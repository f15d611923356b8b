package ociimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"os/exec"
	"slices"
)

func TestBuildIsDeterministicAndReadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app", "hello.txt"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Layers: []Layer{
			{Dir: dir, Entries: []Entry{{Path: "gone", Mode: 0o644, Data: []byte("x")}}},
			{Entries: []Entry{{Path: "gone", Whiteout: true}, {Path: "bin/sh", Mode: fs.ModeSymlink | 0o777, Linkname: "busybox"}}},
		},
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"cat /app/hello.txt"},
		Env:        []string{"A=1"},
		WorkingDir: "/app",
	}
	a, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds differ: %s vs %s", da, db)
	}

	out := filepath.Join(t.TempDir(), "img")
	digest, err := WriteLayout(out, a, "demo:latest")
	if err != nil {
		t.Fatal(err)
	}
	if digest != da.String() {
		t.Fatalf("WriteLayout digest %s, want %s", digest, da)
	}
	if _, err := WriteLayout(out, a, ""); err == nil {
		t.Fatal("WriteLayout overwrote a non-empty directory")
	}
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := p.Image(da)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, spec.Entrypoint) || cf.Config.WorkingDir != "/app" || cf.Architecture != "amd64" {
		t.Fatalf("config not kept: %+v", cf.Config)
	}
	// The flattened filesystem has the file and the symlink but not the whited-out entry.
	tr := tar.NewReader(mutate.Extract(img))
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = true
	}
	if !seen["app/hello.txt"] || !seen["bin/sh"] || seen["gone"] {
		t.Fatalf("flattened filesystem wrong: %v", seen)
	}
}

func TestRejectsPathsOutsideRoot(t *testing.T) {
	if _, err := Build(Spec{Layers: []Layer{{Entries: []Entry{{Path: "../etc/passwd", Mode: 0o644}}}}}); err == nil {
		t.Fatal("accepted a path outside the root")
	}
	if _, err := Build(Spec{}); err == nil {
		t.Fatal("accepted an image without layers")
	}
}

// TestLayerDir: a layer's Dir must be a directory; a symlink to one is
// followed. A file, a symlink to a file or a missing path is an error, never
// an empty layer.
func TestLayerDir(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "dir")
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app", "hello.txt"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"dirlink": dir, "filelink": file, "dangling": filepath.Join(base, "nothing")} {
		if err := os.Symlink(target, filepath.Join(base, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, dir string
		wantErr   string // "" = the layer holds app/ and app/hello.txt
	}{
		{"directory", dir, ""},
		{"symlink to a directory", filepath.Join(base, "dirlink"), ""},
		{"directory with trailing slash", dir + "/", ""},
		{"regular file", file, "is a regular file, not a directory"},
		{"symlink to a file", filepath.Join(base, "filelink"), "not a directory"},
		{"missing", filepath.Join(base, "nothing-here"), "no such file"},
		{"dangling symlink", filepath.Join(base, "dangling"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := layerTar(Layer{Dir: tc.dir})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.dir) {
					t.Fatalf("layerTar(%s): err %v, want one naming the path and containing %q", tc.dir, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			tr := tar.NewReader(bytes.NewReader(data))
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, h.Name)
			}
			if want := []string{"app/", "app/hello.txt"}; !reflect.DeepEqual(names, want) {
				t.Fatalf("layer entries %q, want %q", names, want)
			}
		})
	}
}

// fakeELF is a minimal 64-bit little-endian ELF file: a header and one
// program header, PT_INTERP when interp (a dynamically linked executable),
// else PT_LOAD.
func fakeELF(typ elf.Type, machine elf.Machine, interp bool) []byte {
	b := make([]byte, 64+56)
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS], b[elf.EI_DATA], b[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le := binary.LittleEndian
	le.PutUint16(b[16:], uint16(typ))
	le.PutUint16(b[18:], uint16(machine))
	le.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(b[24:], 0x401000) // entry
	le.PutUint64(b[32:], 64)       // program headers right after the header
	le.PutUint16(b[52:], 64)       // header size
	le.PutUint16(b[54:], 56)       // program header size
	le.PutUint16(b[56:], 1)        // one program header
	pt := elf.PT_LOAD
	if interp {
		pt = elf.PT_INTERP
	}
	le.PutUint32(b[64:], uint32(pt))
	// busybox's applet list, as the real binary holds it.
	return append(b, "\x00[\x00[[\x00cat\x00echo\x00ls\x00sh\x00test\x00true\x00"...)
}

// TestBusyboxLayerChecksTheBinary: --busybox-path must be a non-empty
// regular file holding a static x86-64 ELF executable; an empty or random
// file, a directory, a dynamically linked or foreign binary is refused
// instead of becoming /bin/busybox.
func TestBusyboxLayerChecksTheBinary(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{
		"static":     fakeELF(elf.ET_EXEC, elf.EM_X86_64, false),
		"static-pie": fakeELF(elf.ET_DYN, elf.EM_X86_64, false),
		"empty":      nil,
		"random":     []byte("#!/bin/sh\necho not busybox\n"),
		"truncated":  []byte(elf.ELFMAG + "\x02\x01"),
		"dynamic":    fakeELF(elf.ET_EXEC, elf.EM_X86_64, true),
		"arm64":      fakeELF(elf.ET_EXEC, elf.EM_AARCH64, false),
		"object":     fakeELF(elf.ET_REL, elf.EM_X86_64, false),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("static", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, wantErr string // wantErr "" = accepted
	}{
		{"static", ""},
		{"static-pie", ""},
		{"link", ""},
		{"empty", "is empty"},
		{"random", "is not an ELF executable"},
		{"truncated", "is not a valid ELF file"},
		{"dynamic", "is dynamically linked"},
		{"arm64", "is built for EM_AARCH64"},
		{"object", "is an ELF ET_REL, not an executable"},
		{"missing", "no such file"},
		{".", "is not a regular file"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			l, err := BusyboxLayer(path, "sh")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(l.Entries[1].Data, files["static"]) && !bytes.Equal(l.Entries[1].Data, files["static-pie"]) {
					t.Errorf("bin/busybox does not hold the binary")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "--busybox-path") {
				t.Fatalf("BusyboxLayer(%s): err %v, want one containing %q and naming --busybox-path", tc.file, err, tc.wantErr)
			}
		})
	}
	if _, err := os.Stat("/bin/busybox"); err == nil { // the real one, when installed (busybox-static)
		if _, err := BusyboxLayer("/bin/busybox", "sh"); err != nil {
			t.Errorf("/bin/busybox: %v", err)
		}
	}
}

// TestBusyboxApplets: the applet list read from the binary is what
// 'busybox --list' prints; a binary without one is refused, since no
// applet could be checked.
func TestBusyboxApplets(t *testing.T) {
	noList := filepath.Join(t.TempDir(), "nolist")
	b := fakeELF(elf.ET_EXEC, elf.EM_X86_64, false)
	if err := os.WriteFile(noList, b[:64+56], 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := BusyboxLayer(noList, "sh"); err == nil || !strings.Contains(err.Error(), "no applet list found") {
		t.Fatalf("binary without an applet list: %v", err)
	}
	if got := busyboxApplets(b); strings.Join(got, " ") != "[ [[ cat echo ls sh test true" {
		t.Errorf("fake list: %q", got)
	}
	const bb = "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Skip("no /bin/busybox to compare with (busybox-static)")
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Skipf("%s --list: %v", bb, err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := busyboxApplets(data), strings.Fields(string(out)); !slices.Equal(got, want) {
		t.Errorf("applets read from %s differ from its --list:\n got %d %q\nwant %d %q", bb, len(got), got, len(want), want)
	}
}
