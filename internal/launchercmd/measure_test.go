package launchercmd

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// opensslFileDigest is the independent digest of a file.
func opensslFileDigest(t *testing.T, alg, path string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not found: apt-get install openssl")
	}
	out, err := exec.Command("openssl", "dgst", "-"+alg, "-r", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return alg + ":" + strings.Fields(string(out))[0]
}

func writeRandomFile(t *testing.T, name string, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMeasureCommand(t *testing.T) {
	kernel := writeRandomFile(t, "vmlinux", 3<<20+11)
	initrd := writeRandomFile(t, "initrd.cpio", 70001)
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	manifestDigest, _ := img.Digest()
	configDigest, _ := img.ConfigName()
	cmdline := "console=ttyS0 panic=-1"

	for _, alg := range []string{"sha256", "sha384"} {
		t.Run(alg, func(t *testing.T) {
			stdout, stderr, code := runLauncher(t, nil, "measure", "--json", "--kernel", kernel, "--initrd", initrd,
				"--cmdline", cmdline, "--image", dir, "--alg", alg, "--policy", "demo")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var out struct {
				Alg    string `json:"alg"`
				Kernel struct {
					Digest string `json:"digest"`
					Size   int64  `json:"size"`
				} `json:"kernel"`
				Initrd struct {
					Digest string `json:"digest"`
				} `json:"initrd"`
				Cmdline struct {
					Digest string `json:"digest"`
				} `json:"cmdline"`
				Image struct {
					ManifestDigest string `json:"manifest_digest"`
					ConfigDigest   string `json:"config_digest"`
					Layers         []struct {
						Digest string `json:"digest"`
					} `json:"layers"`
				} `json:"image"`
				Event        measure.LaunchEvent `json:"event"`
				EventContent string              `json:"event_content"`
				EventDigest  string              `json:"event_digest"`
				PCR          int                 `json:"pcr"`
			}
			if err := json.Unmarshal([]byte(stdout), &out); err != nil {
				t.Fatalf("%v\n%s", err, stdout)
			}
			cmdFile := filepath.Join(t.TempDir(), "cmdline")
			os.WriteFile(cmdFile, []byte(cmdline), 0o644)
			for _, c := range []struct{ name, got, want string }{
				{"kernel", out.Kernel.Digest, opensslFileDigest(t, alg, kernel)},
				{"initrd", out.Initrd.Digest, opensslFileDigest(t, alg, initrd)},
				{"cmdline", out.Cmdline.Digest, opensslFileDigest(t, alg, cmdFile)},
				{"image", out.Image.ManifestDigest, manifestDigest.String()},
				{"image config", out.Image.ConfigDigest, configDigest.String()},
				{"event kernel", out.Event.Kernel, out.Kernel.Digest},
				{"event image", out.Event.Image, manifestDigest.String()},
				{"event policy", out.Event.Policy, "demo"},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %s, want %s", c.name, c.got, c.want)
				}
			}
			if len(out.Image.Layers) != 2 || out.PCR != limits.DefaultLaunchPCR || out.Alg != alg {
				t.Errorf("layers %d pcr %d alg %s", len(out.Image.Layers), out.PCR, out.Alg)
			}
			// The event digest is the hash of the content TLV, computed here
			// independently; the content decodes to the printed event.
			content, err := hex.DecodeString(out.EventContent)
			if err != nil {
				t.Fatal(err)
			}
			contentFile := filepath.Join(t.TempDir(), "content")
			os.WriteFile(contentFile, content, 0o644)
			if want := opensslFileDigest(t, alg, contentFile); out.EventDigest != want {
				t.Errorf("event digest %s, want %s", out.EventDigest, want)
			}
			ev, err := measure.UnmarshalLaunchEvent(content[5:])
			if err != nil {
				t.Fatal(err)
			}
			if ev.CmdlineDigest != out.Cmdline.Digest || ev.Initrd != out.Initrd.Digest || ev.ImageConfig != configDigest.String() {
				t.Errorf("event content %+v", ev)
			}
		})
	}

	// The table names every digest too.
	stdout, stderr, code := runLauncher(t, nil, "measure", "--kernel", kernel, "--cmdline", cmdline, "--image", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	sum := sha256.Sum256([]byte(cmdline))
	for _, want := range []string{opensslFileDigest(t, "sha256", kernel), "sha256:" + hex.EncodeToString(sum[:]), manifestDigest.String(), configDigest.String(), "event digest (sha256, extended into PCR 13): sha256:", "initrd            (none)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
}

func TestMeasureCommandErrors(t *testing.T) {
	kernel := writeRandomFile(t, "k", 100)
	img, _ := random.Image(100, 1)
	dir := filepath.Join(t.TempDir(), "oci")
	lp, _ := layout.Write(dir, empty.Index)
	lp.AppendImage(img)
	ls, _ := img.Layers()
	ld, _ := ls[0].Digest()
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", ld.Hex), []byte("tampered"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"measure", "--help"}, 0, "--kernel"},
		{"no kernel", []string{"measure"}, 2, "--kernel FILE is required"},
		{"bad alg", []string{"measure", "--kernel", kernel, "--alg", "md5"}, 2, "unsupported digest algorithm"},
		{"pcr 0", []string{"measure", "--kernel", kernel, "--pcr", "0"}, 2, "--pcr 0: want 1..23"},
		{"extra args", []string{"measure", "--kernel", kernel, "x"}, 2, "unexpected arguments"},
		{"platform without image", []string{"measure", "--kernel", kernel, "--platform", "linux/arm64"}, 2, "need --image"},
		{"missing kernel", []string{"measure", "--kernel", kernel + ".nope"}, 1, "kernel: measure"},
		{"missing initrd", []string{"measure", "--kernel", kernel, "--initrd", "/nonexistent"}, 1, "initrd:"},
		{"tampered image", []string{"measure", "--kernel", kernel, "--image", dir}, 1, "layer 0 (" + ld.String() + ")"},
		{"nul in cmdline", []string{"measure", "--kernel", kernel, "--cmdline", "a\x00b"}, 1, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runLauncher(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
}
