package measure

import (
	"strings"
	"testing"
)

func TestParsePort(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"8080:80", "0.0.0.0:8080:80/tcp", ""},
		{"127.0.0.1:8080:80/tcp", "127.0.0.1:8080:80/tcp", ""},
		{"65535:1", "0.0.0.0:65535:1/tcp", ""},
		{"80", "0.0.0.0:0:80/tcp", ""},
		{"0:80", "0.0.0.0:0:80/tcp", ""},
		{"127.0.0.1:0:80", "127.0.0.1:0:80/tcp", ""},
		{"8080:80/udp", "", "only tcp"},
		{"a:b:c:d", "", "want [[HOSTIP:]HOSTPORT:]GUESTPORT"},
		{"::1:80:80", "", "want [[HOSTIP:]HOSTPORT:]GUESTPORT"},
		{"localhost:80:80", "", "not an IPv4 address"},
		{"80:0", "", "guest port 0"},
		{"0", "", "guest port 0"},
		{"65536:80", "", "0..65535"},
		{"080:80", "", "0..65535"},
		{"+80:80", "", "0..65535"},
		{"80:", "", "0..65535"},
		{"", "", "0..65535"},
	} {
		p, err := ParsePort(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePort(%q) = %v, %v; want error containing %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePort(%q) = %q, %v; want %q", tc.in, p, err, tc.want)
		}
	}
}

func TestCheckUser(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"0", true}, {"1000:1000", true}, {"app", true}, {"app:staff", true}, {"www-data", true}, {"4294967294", true},
		{"", false}, {":", false}, {"app:", false}, {":app", false}, {"4294967295", false}, {"-x", false},
		{"a b", false}, {"a/b", false}, {"a:b:c", false}, {"12ab", false}, {strings.Repeat("a", 33), false},
	} {
		if err := CheckUser(tc.in); (err == nil) != tc.ok {
			t.Errorf("CheckUser(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestEnvDigest(t *testing.T) {
	a := EnvDigest(SHA256, []string{"A=1", "B=2"})
	if b := EnvDigest(SHA256, []string{"B=2", "A=1"}); a != b {
		t.Errorf("order changes the digest: %s %s", a, b)
	}
	// Lengths keep entries apart: "A=1","B=2" is not "A=1B=2".
	if b := EnvDigest(SHA256, []string{"A=1B=2"}); a == b {
		t.Error("entries are not kept apart")
	}
	if b := EnvDigest(SHA256, []string{"A=1", "B=3"}); a == b {
		t.Error("a value does not change the digest")
	}
	if EnvDigest(SHA256, nil) != "" {
		t.Error("no env has a digest")
	}
	if got := EnvKeys([]string{"B=2", "A=1", "A=3"}); strings.Join(got, ",") != "A,B" {
		t.Errorf("EnvKeys = %q", got)
	}
}

// TestParseSize: sizes are bytes or k, m, g, t (powers of 1024), in
// canonical decimal, not negative, at most 1 PiB; scratch disk sizes are
// 16 MiB to 1 TiB in whole MiB.
func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: refused
	}{
		{"0", 0}, {"1", 1}, {"16m", 16 << 20}, {"16M", 16 << 20}, {"1g", 1 << 30}, {"2T", 2 << 40}, {"17000k", 17000 << 10},
		{"1024p", -1}, {"", -1}, {"m", -1}, {"-1", -1}, {"+1", -1}, {"01", -1}, {"1.5g", -1}, {"1 g", -1},
		{"1025t", -1}, {"1024t", 1 << 50}, {"99999999999999999999", -1},
	} {
		got, err := ParseSize(tc.in)
		if tc.want < 0 && err == nil || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		n  int64
		ok bool
	}{{MinScratchBytes, true}, {MaxScratchBytes, true}, {MinScratchBytes - 1<<20, false}, {MaxScratchBytes + 1<<20, false}, {MinScratchBytes + 512, false}} {
		if err := CheckScratchSize(tc.n); (err == nil) != tc.ok {
			t.Errorf("CheckScratchSize(%d) = %v", tc.n, err)
		}
	}
}
