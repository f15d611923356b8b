package measure

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-eventlog/cel"
	pb "github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func testEvent(id string) *LaunchEvent {
	cmdline := "console=ttyS0 panic=-1"
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i + 1)
	}
	return &LaunchEvent{
		SandboxID:      id,
		Policy:         "demo",
		Kernel:         DigestBytes(SHA256, []byte("kernel")),
		Initrd:         DigestBytes(SHA256, []byte("initrd")),
		Cmdline:        cmdline,
		CmdlineDigest:  DigestCmdline(SHA256, cmdline),
		Image:          DigestBytes(SHA256, []byte("manifest")),
		ImageConfig:    DigestBytes(SHA256, []byte("config")),
		Args:           []string{"echo", "hi"},
		GuestPublicKey: key,
		Time:           time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

// TestEncodingCoversEveryField fails when LaunchEvent gains a field that the
// canonical encoding does not measure.
func TestEncodingCoversEveryField(t *testing.T) {
	var names []string
	rt := reflect.TypeFor[LaunchEvent]()
	for i := 0; i < rt.NumField(); i++ {
		names = append(names, rt.Field(i).Name)
	}
	if !slices.Equal(names, eventFieldNames) {
		t.Fatalf("LaunchEvent fields %v, canonical encoding covers %v: extend MarshalCanonical, UnmarshalLaunchEvent, eventFieldNames and docs/eventlog.md", names, eventFieldNames)
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*LaunchEvent)
	}{
		{"full", func(*LaunchEvent) {}},
		{"minimal", func(e *LaunchEvent) {
			e.Policy, e.Initrd, e.Image, e.ImageConfig, e.Args, e.GuestPublicKey = "", "", "", "", nil, nil
			e.Time = time.Time{}
		}},
		{"sha384 cmdline", func(e *LaunchEvent) { e.CmdlineDigest = DigestCmdline(SHA384, e.Cmdline) }},
		{"empty args kept apart", func(e *LaunchEvent) { e.Args = []string{"", ""} }},
		{"pre-1970 time", func(e *LaunchEvent) { e.Time = time.Date(1900, 5, 6, 7, 8, 9, 999999999, time.UTC) }},
		{"v2 image disk", func(e *LaunchEvent) { e.ImageDisk = DigestBytes(SHA256, []byte("disk")) }},
		{"v3 workload", func(e *LaunchEvent) {
			env := []string{"B=2", "A=1=one"}
			e.EnvKeys, e.EnvDigest = EnvKeys(env), EnvDigest(SHA256, env)
			e.WorkingDir, e.User = "/srv/www", "app:1000"
			e.Network, e.Ports = NetworkUser, []string{"127.0.0.1:8080:80/tcp", "0.0.0.0:2222:22/tcp"}
			e.Volumes = []string{"ro:/data:" + DigestBytes(SHA256, []byte("vol")), "tmpfs:/scratch:0", "tmpfs:/cache:67108864", "scratch:/work:1073741824"}
		}},
		{"v3 tap network", func(e *LaunchEvent) { e.Network = NetworkTap }},
		{"v3 user only, with a clone", func(e *LaunchEvent) {
			e.ImageDisk = DigestBytes(SHA256, []byte("disk"))
			e.TemplateRecipe = DigestBytes(SHA256, []byte("recipe"))
			e.TemplateRAM = DigestBytes(SHA256, []byte("ram"))
			e.TemplateState = DigestBytes(SHA384, []byte("state"))
			e.User = "1000"
		}},
		{"v2 clone", func(e *LaunchEvent) {
			e.ImageDisk = DigestBytes(SHA256, []byte("disk"))
			e.TemplateRecipe = DigestBytes(SHA256, []byte("recipe"))
			e.TemplateRAM = DigestBytes(SHA256, []byte("ram"))
			e.TemplateState = DigestBytes(SHA384, []byte("state"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testEvent("sb-1")
			tc.mod(e)
			b, err := e.MarshalCanonical()
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalLaunchEvent(b)
			if err != nil {
				t.Fatal(err)
			}
			b2, _ := got.MarshalCanonical()
			if !bytes.Equal(b, b2) {
				t.Fatal("re-encoding differs")
			}
			if !got.Time.Equal(e.Time) {
				t.Fatalf("time %v, want %v", got.Time, e.Time)
			}
			got.Time, e.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
			}
		})
	}
}

func TestCanonicalTimeIgnoresZoneAndMonotonic(t *testing.T) {
	e1 := testEvent("a")
	e1.Time = time.Now()
	e2 := testEvent("a")
	e2.Time = e1.Time.Round(0).In(time.FixedZone("X", 3600))
	b1, _ := e1.MarshalCanonical()
	b2, _ := e2.MarshalCanonical()
	if !bytes.Equal(b1, b2) {
		t.Fatal("same instant in another zone encodes differently")
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		mod        func(*LaunchEvent)
	}{
		{"no sandbox id", "sandbox_id is empty", func(e *LaunchEvent) { e.SandboxID = "" }},
		{"sandbox id charset", "only letters", func(e *LaunchEvent) { e.SandboxID = "a/b" }},
		{"long sandbox id", "longer than", func(e *LaunchEvent) { e.SandboxID = strings.Repeat("a", 129) }},
		{"no kernel", "kernel", func(e *LaunchEvent) { e.Kernel = "" }},
		{"uppercase hex", "not lowercase hex", func(e *LaunchEvent) { e.Kernel = e.Kernel[:7] + strings.ToUpper(e.Kernel[7:]) }},
		{"bad alg", "unsupported algorithm", func(e *LaunchEvent) { e.Initrd = "md5:00" }},
		{"short digest", "hex digits", func(e *LaunchEvent) { e.Image = "sha256:abcd" }},
		{"cmdline digest mismatch", "not the digest of cmdline", func(e *LaunchEvent) { e.Cmdline += " quiet" }},
		{"image without config", "both", func(e *LaunchEvent) { e.ImageConfig = "" }},
		{"nul in cmdline", "NUL", func(e *LaunchEvent) {
			e.Cmdline = "a\x00b"
			e.CmdlineDigest = DigestCmdline(SHA256, e.Cmdline)
		}},
		{"invalid utf8 policy", "UTF-8", func(e *LaunchEvent) { e.Policy = "\xff" }},
		{"too many args", "args", func(e *LaunchEvent) { e.Args = make([]string, maxArgs+1) }},
		{"huge key", "guest_public_key", func(e *LaunchEvent) { e.GuestPublicKey = make([]byte, maxGuestPubKey+1) }},
		{"image disk without image", "image_disk without an image", func(e *LaunchEvent) {
			e.Image, e.ImageConfig, e.ImageDisk = "", "", DigestBytes(SHA256, []byte("disk"))
		}},
		{"bad image disk digest", "image_disk", func(e *LaunchEvent) { e.ImageDisk = "sha256:00" }},
		{"template without its state", "all be set", func(e *LaunchEvent) {
			e.TemplateRecipe, e.TemplateRAM = DigestBytes(SHA256, []byte("r")), DigestBytes(SHA256, []byte("m"))
		}},
		{"template ram only", "all be set", func(e *LaunchEvent) { e.TemplateRAM = DigestBytes(SHA256, []byte("m")) }},
		{"env keys without digest", "env_keys and env_digest", func(e *LaunchEvent) { e.EnvKeys = []string{"A"} }},
		{"env digest without keys", "env_keys and env_digest", func(e *LaunchEvent) { e.EnvDigest = DigestBytes(SHA256, nil) }},
		{"env keys unsorted", "not sorted", func(e *LaunchEvent) {
			e.EnvKeys, e.EnvDigest = []string{"B", "A"}, DigestBytes(SHA256, nil)
		}},
		{"env key repeated", "not sorted", func(e *LaunchEvent) {
			e.EnvKeys, e.EnvDigest = []string{"A", "A"}, DigestBytes(SHA256, nil)
		}},
		{"env key with =", "env_keys[0]", func(e *LaunchEvent) {
			e.EnvKeys, e.EnvDigest = []string{"A=B"}, DigestBytes(SHA256, nil)
		}},
		{"too many env keys", "env_keys", func(e *LaunchEvent) {
			e.EnvKeys, e.EnvDigest = make([]string, MaxEnv+1), DigestBytes(SHA256, nil)
		}},
		{"relative working dir", "working_dir", func(e *LaunchEvent) { e.WorkingDir = "srv" }},
		{"unclean working dir", "working_dir", func(e *LaunchEvent) { e.WorkingDir = "/srv/../etc" }},
		{"user with a space", "user", func(e *LaunchEvent) { e.User = "app user" }},
		{"unknown network", "network", func(e *LaunchEvent) { e.Network = "none" }},
		{"ports without network", "ports without user-mode", func(e *LaunchEvent) { e.Ports = []string{"0.0.0.0:80:80/tcp"} }},
		{"ports with a tap", "ports without user-mode", func(e *LaunchEvent) { e.Network, e.Ports = NetworkTap, []string{"0.0.0.0:80:80/tcp"} }},
		{"port not canonical", "canonical", func(e *LaunchEvent) { e.Network, e.Ports = NetworkUser, []string{"80:80"} }},
		{"volume size not canonical", "volumes[0]", func(e *LaunchEvent) { e.Volumes = []string{"tmpfs:/x:00"} }},
		{"volume in /proc", "which the sandbox provides", func(e *LaunchEvent) { e.Volumes = []string{"tmpfs:/proc/x:0"} }},
		{"volume over the secrets", "which the sandbox provides", func(e *LaunchEvent) { e.Volumes = []string{"tmpfs:/run/secrets:0"} }},
		{"volume at the root", "root itself", func(e *LaunchEvent) { e.Volumes = []string{"tmpfs:/:0"} }},
		{"volume bad digest", "volumes[0]", func(e *LaunchEvent) { e.Volumes = []string{"ro:/data:sha256:00"} }},
		{"volume unknown kind", "kind", func(e *LaunchEvent) { e.Volumes = []string{"rw:/data:0"} }},
		{"volume twice", "mounted twice", func(e *LaunchEvent) { e.Volumes = []string{"tmpfs:/a:0", "tmpfs:/a:1"} }},
		{"too many tmpfs", "more than 8 tmpfs", func(e *LaunchEvent) {
			for i := range 9 {
				e.Volumes = append(e.Volumes, fmt.Sprintf("tmpfs:/t%d:0", i))
			}
		}},
		{"scratch too small", "16m to 1024g", func(e *LaunchEvent) { e.Volumes = []string{"scratch:/s:1048576"} }},
		{"scratch too large", "16m to 1024g", func(e *LaunchEvent) { e.Volumes = []string{fmt.Sprintf("scratch:/s:%d", int64(MaxScratchBytes)+1<<20)} }},
		{"scratch not whole MiB", "whole number of MiB", func(e *LaunchEvent) { e.Volumes = []string{"scratch:/s:16777217"} }},
		{"scratch size not canonical", "not a number of bytes", func(e *LaunchEvent) { e.Volumes = []string{"scratch:/s:016777216"} }},
		{"scratch over /usr", "system directory", func(e *LaunchEvent) { e.Volumes = []string{"scratch:/usr:16777216"} }},
		{"scratch over /run", "system directory", func(e *LaunchEvent) { e.Volumes = []string{"scratch:/run:16777216"} }},
		{"scratch over the secrets", "which the sandbox provides", func(e *LaunchEvent) { e.Volumes = []string{"scratch:/run/secrets/x:16777216"} }},
		{"scratch and tmpfs at one path", "mounted twice", func(e *LaunchEvent) { e.Volumes = []string{"tmpfs:/a:0", "scratch:/a:16777216"} }},
		{"too many scratch disks", "more than 4 scratch", func(e *LaunchEvent) {
			for i := range MaxScratch + 1 {
				e.Volumes = append(e.Volumes, fmt.Sprintf("scratch:/s%d:16777216", i))
			}
		}},
		{"too many ports", "ports", func(e *LaunchEvent) {
			e.Network, e.Ports = NetworkUser, slices.Repeat([]string{"0.0.0.0:80:80/tcp"}, MaxPorts+1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testEvent("sb")
			tc.mod(e)
			_, err := e.MarshalCanonical()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestUnmarshalLaunchEventRejects(t *testing.T) {
	good, err := testEvent("sb").MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"empty", "truncated", nil},
		{"trailing byte", "trailing", append(slices.Clone(good), 0)},
		{"truncated", "runs past the end", good[:len(good)-1]},
		{"bad version", "version", append([]byte{fieldVersion, 0, 0, 0, 1, 4}, good[6:]...)},
		// Nor is a version 3 encoding of an event without version 3 values.
		{"version 3 without its fields", "not in canonical form", func() []byte {
			b := append([]byte{fieldVersion, 0, 0, 0, 1, 3}, good[6:]...)
			for _, f := range []byte{fieldImageDisk, fieldTemplateRecipe, fieldTemplateRAM, fieldTemplateState,
				fieldEnvKeys, fieldEnvDigest, fieldWorkingDir, fieldUser, fieldNetwork, fieldPorts, fieldVolumes} {
				b = appendTLV(b, f, nil)
			}
			return b
		}()},
		{"version 3 missing its volumes", "volumes", func() []byte {
			b := append([]byte{fieldVersion, 0, 0, 0, 1, 3}, good[6:]...)
			for _, f := range []byte{fieldImageDisk, fieldTemplateRecipe, fieldTemplateRAM, fieldTemplateState,
				fieldEnvKeys, fieldEnvDigest, fieldWorkingDir} {
				b = appendTLV(b, f, nil)
			}
			return appendTLV(appendTLV(appendTLV(b, fieldUser, []byte("app")), fieldNetwork, nil), fieldPorts, nil)
		}()},
		// A version 2 encoding of an event without version 2 values is
		// not canonical (it has a version 1 encoding).
		{"version 2 without its fields", "not in canonical form", func() []byte {
			b := append([]byte{fieldVersion, 0, 0, 0, 1, 2}, good[6:]...)
			for _, f := range []byte{fieldImageDisk, fieldTemplateRecipe, fieldTemplateRAM, fieldTemplateState} {
				b = appendTLV(b, f, nil)
			}
			return b
		}()},
		// Version 1 bytes followed by version 2 fields: trailing.
		{"version 2 fields in version 1", "trailing", appendTLV(slices.Clone(good), fieldImageDisk, []byte(DigestBytes(SHA256, []byte("d"))))},
		{"swapped field order", "want field type", swapFirstFields(good)},
		{"time nanos out of range", "out of range", func() []byte {
			b := slices.Clone(good)
			binary.BigEndian.PutUint32(b[len(b)-4:], 1e9)
			return b
		}()},
		{"time beyond year 9999", "year", func() []byte {
			b := slices.Clone(good)
			binary.BigEndian.PutUint64(b[len(b)-12:], 1<<63-1)
			return b
		}()},
		{"huge length", "runs past the end", []byte{fieldVersion, 0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := UnmarshalLaunchEvent(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// swapFirstFields exchanges the sandbox_id and policy field TLVs.
func swapFirstFields(b []byte) []byte {
	r := &tlvReader{b: b}
	r.next() // version
	s1 := r.off
	r.next()
	s2 := r.off
	r.next()
	s3 := r.off
	out := slices.Clone(b[:s1])
	out = append(out, b[s2:s3]...)
	out = append(out, b[s1:s2]...)
	return append(out, b[s3:]...)
}

// extendByHand is the TPM's PCR_Extend, written out independently.
func extendByHand(h crypto.Hash, pcr, digest []byte) []byte {
	hh := h.New()
	hh.Write(pcr)
	hh.Write(digest)
	return hh.Sum(nil)
}

func buildLog(t testing.TB, n int, algs ...Alg) *Log {
	t.Helper()
	l := &Log{}
	for i := 0; i < n; i++ {
		if _, err := l.Append(testEvent(fmt.Sprintf("sb-%d", i)), limits.DefaultLaunchPCR, algs, nil); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func TestLogReplay(t *testing.T) {
	for _, tc := range []struct {
		name string
		algs []Alg
		n    int
	}{
		{"empty", nil, 0},
		{"one sha256", nil, 1},
		{"three sha256", []Alg{SHA256}, 3},
		{"two banks", []Alg{SHA384, SHA256}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := buildLog(t, tc.n, tc.algs...)
			enc := l.Encode()
			banks := tc.algs
			if len(banks) == 0 {
				banks = []Alg{SHA256}
			}
			for _, a := range banks {
				// Independent computation: hash the content TLV ourselves and
				// extend from zero by hand.
				want := make([]byte, a.Size())
				for i := 0; i < tc.n; i++ {
					content, _ := EventContent(testEvent(fmt.Sprintf("sb-%d", i)))
					var d []byte
					if a == SHA256 {
						s := sha256.Sum256(content)
						d = s[:]
					} else {
						s := sha512.Sum384(content)
						d = s[:]
					}
					want = extendByHand(a.Hash(), want, d)
				}
				parsed, err := ParseLog(enc)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Replay(parsed, limits.DefaultLaunchPCR, a)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s replay %x, want %x", a, got, want)
				}
				vl, err := VerifyLog(enc, limits.DefaultLaunchPCR, a, want)
				if err != nil {
					t.Fatal(err)
				}
				if tc.n > 0 {
					last, err := vl.Last()
					if err != nil || last.SandboxID != fmt.Sprintf("sb-%d", tc.n-1) {
						t.Fatalf("Last = %v, %v", last, err)
					}
					ev, err := vl.BySandbox("sb-0")
					if err != nil || ev.SandboxID != "sb-0" {
						t.Fatalf("BySandbox = %v, %v", ev, err)
					}
				}
				// A PCR value that is not the replay must be refused.
				bad := slices.Clone(want)
				bad[0] ^= 1
				if _, err := VerifyLog(enc, limits.DefaultLaunchPCR, a, bad); err == nil {
					t.Fatal("VerifyLog accepted a wrong PCR value")
				}
			}
		})
	}
}

func TestVerifyLogRefusesOtherPCRsAndMissingBank(t *testing.T) {
	l := &Log{}
	if _, err := l.Append(testEvent("a"), 14, nil, nil); err != nil {
		t.Fatal(err)
	}
	enc := l.Encode()
	if _, err := VerifyLog(enc, limits.DefaultLaunchPCR, SHA256, make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "PCR 14") {
		t.Fatalf("got %v", err)
	}
	l = buildLog(t, 1, SHA384)
	zero := make([]byte, 32)
	if _, err := VerifyLog(l.Encode(), limits.DefaultLaunchPCR, SHA256, zero); err == nil || !strings.Contains(err.Error(), "no sha256 digest") {
		t.Fatalf("got %v", err)
	}
	vl, err := VerifyLog(nil, limits.DefaultLaunchPCR, SHA256, zero)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vl.Last(); err == nil {
		t.Fatal("Last of an empty log succeeded")
	}
	if _, err := vl.BySandbox("x"); err == nil {
		t.Fatal("BySandbox found an absent sandbox")
	}
}

func TestAppendExtendsBeforeRecording(t *testing.T) {
	l := &Log{}
	var got []string
	ext := func(a Alg, pcr int, d []byte) error {
		got = append(got, fmt.Sprintf("%s/%d/%x", a, pcr, d))
		return nil
	}
	rec, err := l.Append(testEvent("a"), 13, []Alg{SHA256, SHA384}, ext)
	if err != nil {
		t.Fatal(err)
	}
	d256, _ := EventDigest(testEvent("a"), SHA256)
	d384, _ := EventDigest(testEvent("a"), SHA384)
	want := []string{fmt.Sprintf("sha256/13/%x", d256), fmt.Sprintf("sha384/13/%x", d384)}
	if !slices.Equal(got, want) || !bytes.Equal(rec.DigestFor(SHA256), d256) {
		t.Fatalf("extends %v, want %v", got, want)
	}
	failing := func(Alg, int, []byte) error { return fmt.Errorf("tpm gone") }
	if _, err := l.Append(testEvent("b"), 13, nil, failing); err == nil || l.Len() != 1 {
		t.Fatalf("failed extend: err %v, len %d", err, l.Len())
	}
	if _, err := l.Append(testEvent("b"), 24, nil, nil); err == nil {
		t.Fatal("PCR 24 accepted")
	}
	if _, err := l.Append(testEvent("b"), 13, []Alg{SHA256, SHA256}, nil); err == nil {
		t.Fatal("duplicate bank accepted")
	}
	// The record keeps its own copy of the event.
	e := testEvent("c")
	rec, _ = l.Append(e, 13, nil, nil)
	e.Args[0] = "rm"
	if rec.Event.Args[0] != "echo" {
		t.Fatal("record aliases the caller's event")
	}
}

func TestParseLogRejects(t *testing.T) {
	good := buildLog(t, 2).Encode()
	first := buildLog(t, 1).Encode()
	rec0Len := len(first)
	// Offsets inside record 0: recnum TLV 13 bytes, pcr TLV 6, digests TLV 5+5+32.
	const digestsAt, digestAt, contentAt = 19, 29, 61
	mut := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"trailing byte", "truncated TLV header", append(slices.Clone(good), 0)},
		{"truncated", "runs past the end", good[:len(good)-3]},
		{"oversized", "more than", make([]byte, MaxLogSize+1)},
		{"recnum out of sequence", "out of sequence", mut(func(b []byte) []byte { b[12] = 1; return b })},
		{"records swapped", "out of sequence", append(slices.Clone(good[rec0Len:]), good[:rec0Len]...)},
		{"nv index type", "not a PCR", mut(func(b []byte) []byte { b[13] = 2; return b })},
		{"pcr 24", "invalid PCR index", mut(func(b []byte) []byte { b[18] = 24; return b })},
		{"unknown digest alg", "unsupported algorithm", mut(func(b []byte) []byte { b[digestsAt+5] = 0x04; return b })},
		{"digest flipped", "does not match the event content", mut(func(b []byte) []byte { b[digestAt+3] ^= 1; return b })},
		{"content flipped", "", mut(func(b []byte) []byte { b[len(first)-20] ^= 1; return b })},
		{"unknown content type", "unknown content type", mut(func(b []byte) []byte { b[contentAt] = 80; return b })},
		{"duplicate bank", "repeated", func() []byte {
			rec := buildLog(t, 1).Encode()
			d := rec[digestsAt+5 : contentAt]
			var out []byte
			out = append(out, rec[:digestsAt]...)
			out = appendTLV(out, celTypeDigests, append(slices.Clone(d), d...))
			return append(out, rec[contentAt:]...)
		}()},
		{"no digests", "none", func() []byte {
			rec := buildLog(t, 1).Encode()
			var out []byte
			out = append(out, rec[:digestsAt]...)
			out = appendTLV(out, celTypeDigests, nil)
			return append(out, rec[contentAt:]...)
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLog(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// TestInteropWithGoEventlog checks our encoding against go-eventlog's own
// CEL implementation: it decodes our logs, verifies our digests with our
// content type, replays them, and encodes byte-identical records.
func TestInteropWithGoEventlog(t *testing.T) {
	l := buildLog(t, 3)
	enc := l.Encode()
	theirs, err := cel.DecodeToCEL(bytes.NewBuffer(slices.Clone(enc)))
	if err != nil {
		t.Fatal(err)
	}
	if len(theirs.Records()) != 3 {
		t.Fatalf("go-eventlog sees %d records", len(theirs.Records()))
	}
	for i, r := range theirs.Records() {
		if r.RecNum != uint64(i) || r.Index != limits.DefaultLaunchPCR || r.IndexType != cel.PCRType || r.Content.Type != LaunchEventContentType {
			t.Fatalf("record %d: %+v", i, r)
		}
		ev, err := UnmarshalLaunchEvent(r.Content.Value)
		if err != nil {
			t.Fatal(err)
		}
		if err := cel.VerifyDigests(LaunchContent{ev}, r.Digests); err != nil {
			t.Fatal(err)
		}
	}
	pcr, _ := Replay(l, limits.DefaultLaunchPCR, SHA256)
	bank := register.PCRBank{TCGHashAlgo: pb.HashAlgo_SHA256, PCRs: []register.PCR{{Index: limits.DefaultLaunchPCR, Digest: pcr, DigestAlg: crypto.SHA256}}}
	if err := theirs.Replay(bank); err != nil {
		t.Fatalf("go-eventlog replay: %v", err)
	}
	bank.PCRs[0].Digest = make([]byte, 32)
	if err := theirs.Replay(bank); err == nil {
		t.Fatal("go-eventlog replay accepted a zero PCR")
	}
	// go-eventlog's AppendEvent with our content type encodes the same bytes.
	mine := &Log{}
	lib := cel.NewPCR()
	for i := 0; i < 3; i++ {
		e := testEvent(fmt.Sprintf("sb-%d", i))
		mine.Append(e, limits.DefaultLaunchPCR, nil, nil)
		if err := lib.AppendEvent(LaunchContent{e}, []crypto.Hash{crypto.SHA256}, limits.DefaultLaunchPCR, func(crypto.Hash, int, []byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := lib.EncodeCEL(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), mine.Encode()) {
		t.Fatal("go-eventlog encodes the same records differently")
	}
}

// annotatedDump renders an encoded log as commented hex, one TLV per line.
func annotatedDump(b []byte) string {
	var s strings.Builder
	r := &tlvReader{b: b}
	names := map[byte]string{celTypeRecnum: "recnum", celTypePCR: "pcr", celTypeDigests: "digests", LaunchEventContentType: "content: launch event"}
	fields := map[byte]string{fieldVersion: "version", fieldSandboxID: "sandbox_id", fieldPolicy: "policy", fieldKernel: "kernel",
		fieldInitrd: "initrd", fieldCmdline: "cmdline", fieldCmdlineDigest: "cmdline_digest", fieldImage: "image",
		fieldImageConfig: "image_config", fieldArgs: "args", fieldGuestPublicKey: "guest_public_key", fieldTime: "time"}
	line := func(indent string, typ byte, v []byte, name string, hexValue bool) {
		fmt.Fprintf(&s, "%s%02x %08x", indent, typ, len(v))
		if hexValue && len(v) > 0 {
			fmt.Fprintf(&s, " %x", v)
		}
		fmt.Fprintf(&s, "  # %s\n", name)
	}
	for !r.done() {
		typ, v, _ := r.next()
		switch typ {
		case celTypeDigests:
			line("", typ, v, names[typ], false)
			dr := &tlvReader{b: v}
			for !dr.done() {
				t, d, _ := dr.next()
				a, _ := algFromTPM(uint16(t))
				line("  ", t, d, a.String()+" digest of the content TLV", true)
			}
		case LaunchEventContentType:
			line("", typ, v, names[typ], false)
			fr := &tlvReader{b: v}
			for !fr.done() {
				t, fv, _ := fr.next()
				if t == fieldArgs {
					line("  ", t, fv, fields[t], false)
					ar := &tlvReader{b: fv}
					for !ar.done() {
						at, av, _ := ar.next()
						line("    ", at, av, fmt.Sprintf("arg %q", av), true)
					}
					continue
				}
				note := fields[t]
				if t != fieldGuestPublicKey && t != fieldTime && t != fieldVersion {
					note += fmt.Sprintf(" %q", fv)
				}
				line("  ", t, fv, note, true)
			}
		default:
			line("", typ, v, names[typ], true)
		}
	}
	return s.String()
}

func exampleLog(t *testing.T) (*Log, string) {
	e := &LaunchEvent{
		SandboxID:     "00112233445566778899aabbccddeeff",
		Policy:        "demo",
		Kernel:        DigestBytes(SHA256, []byte("kernel")),
		Cmdline:       "console=ttyS0",
		CmdlineDigest: DigestCmdline(SHA256, "console=ttyS0"),
		Args:          []string{"echo", "hi"},
		GuestPublicKey: []byte{
			0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
			0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20},
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	l := &Log{}
	if _, err := l.Append(e, limits.DefaultLaunchPCR, nil, nil); err != nil {
		t.Fatal(err)
	}
	enc := l.Encode()
	pcr, _ := Replay(l, limits.DefaultLaunchPCR, SHA256)
	d, _ := EventDigest(e, SHA256)
	var s strings.Builder
	fmt.Fprintf(&s, "# One record, %d bytes. Columns: type, length (4 bytes, big-endian), value.\n", len(enc))
	s.WriteString(annotatedDump(enc))
	fmt.Fprintf(&s, "# event digest (sha256 of the content TLV): %x\n", d)
	fmt.Fprintf(&s, "# PCR 13 (sha256) after replay from zero:    %x\n", pcr)
	fmt.Fprintf(&s, "# the whole log as one hex string:\n%s\n", hex.EncodeToString(enc))
	return l, s.String()
}

// TestGoldenExample keeps testdata/eventlog_example.txt (quoted in
// docs/eventlog.md) in step with the code. Regenerate with -update.
func TestGoldenExample(t *testing.T) {
	_, got := exampleLog(t)
	path := filepath.Join("testdata", "eventlog_example.txt")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./measure -run TestGoldenExample -update)", err)
	}
	if got != string(want) {
		t.Fatalf("example log changed; if intended, run with -update and update docs/eventlog.md\n got:\n%s\nwant:\n%s", got, want)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "eventlog.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, want) {
		t.Fatal("docs/eventlog.md does not quote testdata/eventlog_example.txt verbatim: paste it in")
	}
	// The example parses back and its hex line is the log.
	lines := strings.Split(strings.TrimSpace(got), "\n")
	raw, err := hex.DecodeString(lines[len(lines)-1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseLog(raw); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseLog(f *testing.F) {
	f.Add([]byte{})
	f.Add(buildLog(f, 1).Encode())
	f.Add(buildLog(f, 2, SHA256, SHA384).Encode())
	f.Add(logWithEnd(f).Encode())
	f.Add([]byte{0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 13})
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLog(b)
		if err != nil {
			return
		}
		// Whatever parses must re-encode to the same bytes and replay.
		if !bytes.Equal(l.Encode(), b) {
			t.Fatalf("parsed log re-encodes differently")
		}
		for _, a := range []Alg{SHA256, SHA384} {
			Replay(l, limits.DefaultLaunchPCR, a)
		}
	})
}

func FuzzUnmarshalLaunchEvent(f *testing.F) {
	good, _ := testEvent("sb").MarshalCanonical()
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte{1, 0, 0, 0, 1, 1})
	v3 := testEvent("sb")
	v3.EnvKeys, v3.EnvDigest, v3.User, v3.Network, v3.Ports = []string{"A"}, EnvDigest(SHA256, []string{"A=1"}), "app", NetworkUser, []string{"0.0.0.0:80:80/tcp"}
	if b, err := v3.MarshalCanonical(); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalLaunchEvent(b)
		if err != nil {
			return
		}
		again, err := e.MarshalCanonical()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded event does not re-encode to its input: %v", err)
		}
	})
}
