package evidence

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"
)

// firmwareTestdata is go-attestation's test data directory, read from the
// module cache.
func firmwareTestdata(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-attestation").Output()
	if err != nil {
		t.Skipf("go-attestation module source not available: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "attest", "testdata")
}

// replayedPCRs computes the SHA-256 PCR values a log's digests extend to
// (what a TPM that measured it would quote).
func replayedPCRs(t *testing.T, raw []byte) map[int][]byte {
	t.Helper()
	el, err := attest.ParseEventLog(raw)
	if err != nil {
		t.Fatalf("the firmware event log does not parse: %v", err)
	}
	pcrs := map[int][]byte{}
	for _, ev := range el.Events(attest.HashSHA256) {
		if ev.Type.String() == "EV_NO_ACTION" {
			continue
		}
		cur, ok := pcrs[ev.Index]
		if !ok {
			cur = make([]byte, 32)
		}
		h := sha256.New()
		h.Write(cur)
		h.Write(ev.Digest)
		pcrs[ev.Index] = h.Sum(nil)
	}
	return pcrs
}

// secureBootName is the name of the SecureBoot variable in its
// UEFI_VARIABLE_DATA, UTF-16LE; one byte of data follows it.
var secureBootName = []byte{'S', 0, 'e', 0, 'c', 0, 'u', 0, 'r', 0, 'e', 0, 'B', 0, 'o', 0, 'o', 0, 't', 0}

func sum256(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestFirmwareEventDataBound: a real firmware log whose SecureBoot
// variable data was changed while its digest was kept still replays to
// the same PCRs, and is refused; every genuine log in go-attestation's
// test data (those with SHA-256 digests) is still accepted, and the
// SecureBoot state read from the accepted events is the one measured.
func TestFirmwareEventDataBound(t *testing.T) {
	dir := firmwareTestdata(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("test data missing: %v", err)
	}
	tampered := 0
	for _, ent := range entries {
		name := ent.Name()
		if !strings.HasSuffix(name, "_eventlog") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			el, err := attest.ParseEventLog(raw)
			if err != nil {
				t.Skipf("go-attestation does not parse it: %v", err)
			}
			sha256Events := el.Events(attest.HashSHA256)
			if len(sha256Events) == 0 || len(sha256Events[0].Digest) != sha256.Size {
				t.Skip("no SHA-256 digests (attestd replays the SHA-256 bank only)")
			}
			// Every genuine event's data hashes to its digest.
			if err := checkEventData(sha256Events); err != nil {
				t.Fatalf("genuine log: %v", err)
			}
			pcrs := replayedPCRs(t, raw)
			evs, err := ReplayFirmwareLog(raw, pcrs)
			if err != nil && strings.Contains(err.Error(), "does not replay") {
				// replayedPCRs does not model this log (a startup locality,
				// a bank go-attestation prefers): its data was checked above.
				t.Logf("not replayed here: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("genuine log refused: %v", err)
			}
			// Find the SecureBoot variable's event and change its data.
			var sb *attest.Event
			for i := range evs {
				e := &evs[i]
				if e.Index == 7 && e.Type == 0x80000001 && len(e.Data) > 0 && bytes.HasSuffix(e.Data[:len(e.Data)-1], secureBootName) {
					sb = e
				}
			}
			if sb == nil {
				t.Logf("no SecureBoot variable event with one byte of data; only the genuine log checked")
				return
			}
			before := sb.Data[len(sb.Data)-1]
			if st, err := attest.ParseSecurebootState(evs); err == nil && st.Enabled != (before == 1) {
				t.Fatalf("ParseSecurebootState says enabled=%v, the variable's data is %d", st.Enabled, before)
			}
			if bytes.Count(raw, sb.Data) != 1 {
				t.Fatalf("the SecureBoot event's data occurs %d times in the log", bytes.Count(raw, sb.Data))
			}
			off := bytes.Index(raw, sb.Data) + len(sb.Data) - 1
			bad := bytes.Clone(raw)
			bad[off] ^= 1 // SecureBoot 0 <-> 1; the digest is kept
			if again := replayedPCRs(t, bad); !maps.EqualFunc(again, pcrs, bytes.Equal) {
				t.Fatal("the tampered log no longer replays to the same PCRs: the test changed a digest")
			}
			evs, err = ReplayFirmwareLog(bad, pcrs)
			var refused *Error
			if !errors.As(err, &refused) || refused.Check != CheckFirmwareLog || refused.Invalid || !strings.HasPrefix(err.Error(), "firmware_event_log: ") ||
				!strings.Contains(err.Error(), "EV_EFI_VARIABLE_DRIVER_CONFIG") {
				t.Fatalf("SecureBoot data changed from %d, digest kept: %v (events returned: %d)", before, err, len(evs))
			}
			t.Logf("SecureBoot %d -> %d with its digest kept: %v", before, before^1, err)
			tampered++
		})
	}
	if tampered == 0 {
		t.Fatal("no log with a SecureBoot variable event was tampered with")
	}
}

// TestCheckEventData: the data of each event type whose digest covers it
// must hash to that digest (SHA-256, SHA-1, SHA-384); other types are not
// checked; a pre-fix shim's one extra authority byte is accepted.
func TestCheckEventData(t *testing.T) {
	data := []byte("variable data")
	s256 := sha256.Sum256(data)
	s1 := sha1.Sum(data)
	s384 := sha512.Sum384(data)
	short := sha256.Sum256(data[:len(data)-1])
	for _, tc := range []struct {
		name string
		ev   attest.Event
		ok   bool
	}{
		{"driver config, SHA-256", attest.Event{Type: 0x80000001, Data: data, Digest: s256[:]}, true},
		{"driver config, SHA-1", attest.Event{Type: 0x80000001, Data: data, Digest: s1[:]}, true},
		{"driver config, SHA-384", attest.Event{Type: 0x80000001, Data: data, Digest: s384[:]}, true},
		{"driver config, data changed", attest.Event{Type: 0x80000001, Data: []byte("variable dat4"), Digest: s256[:]}, false},
		{"separator, data changed", attest.Event{Type: 0x4, Data: []byte{1, 0, 0, 0}, Digest: s256[:]}, false},
		{"GPT, data changed", attest.Event{Type: 0x80000006, Data: nil, Digest: s256[:]}, false},
		{"authority, data changed", attest.Event{Type: 0x800000e0, Data: []byte("x"), Digest: s256[:]}, false},
		{"authority with a shim's extra byte", attest.Event{Type: 0x800000e0, Data: data, Digest: short[:]}, true},
		{"digest of unknown length", attest.Event{Type: 0x80000001, Data: data, Digest: []byte{1, 2, 3}}, false},
		{"boot application: digest of the image, not the data", attest.Event{Type: 0x80000003, Data: data, Digest: make([]byte, 32)}, true},
		{"grub kernel command line", attest.Event{Index: 8, Type: 0xd, Data: []byte("kernel_cmdline: root=/dev/sda1 ro"), Digest: sum256("root=/dev/sda1 ro")}, true},
		{"grub command, NUL-terminated", attest.Event{Index: 8, Type: 0xd, Data: []byte("grub_cmd: linux /vmlinuz\x00"), Digest: sum256("linux /vmlinuz")}, true},
		{"grub command, NUL measured", attest.Event{Index: 8, Type: 0xd, Data: []byte("grub_cmd: linux /vmlinuz\x00"), Digest: sum256("linux /vmlinuz\x00")}, true},
		{"older grub's kernel command line", attest.Event{Index: 8, Type: 0xd, Data: []byte("grub_kernel_cmdline root=/dev/sda1"), Digest: sum256("root=/dev/sda1")}, true},
		{"grub kernel command line, data changed", attest.Event{Index: 8, Type: 0xd, Data: []byte("kernel_cmdline: root=/dev/sda1 init=/bin/sh"), Digest: sum256("root=/dev/sda1 ro")}, false},
		{"grub kernel command line, prefix dropped from the digest's text", attest.Event{Index: 8, Type: 0xd, Data: []byte("kernel_cmdline: ro"), Digest: sum256("kernel_cmdline: ro")}, false},
		{"PCR 8 EV_IPL not from grub: not interpreted", attest.Event{Index: 8, Type: 0xd, Data: data, Digest: make([]byte, 32)}, true},
		{"PCR 9 file name: digest of the file", attest.Event{Index: 9, Type: 0xd, Data: []byte("kernel_cmdline: x"), Digest: make([]byte, 32)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEventData([]attest.Event{tc.ev})
			if (err == nil) != tc.ok {
				t.Fatalf("%v, want ok=%v", err, tc.ok)
			}
		})
	}
}
