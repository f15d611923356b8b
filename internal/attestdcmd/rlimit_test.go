package attestdcmd

import (
	"errors"
	"strings"
	"testing"
)

// ensureFileLimit raises a soft limit that is too low to the hard limit,
// leaves one that is high enough, and refuses (saying what to do) when the
// hard limit is too low as well.
func TestEnsureFileLimit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxConns   int
		soft, hard uint64
		setErr     error
		wantSet    uint64 // 0: not set
		wantAfter  uint64
		wantErr    string
	}{
		{"high enough", 10000, 20000, 20000, nil, 0, 20000, ""},
		{"exactly enough", 10000, 10000 + fdMargin, 20000, nil, 0, 10000 + fdMargin, ""},
		{"raised to the hard limit", 10000, 1024, 524288, nil, 524288, 524288, ""},
		{"hard limit too low", 10000, 1024, 4096, nil, 0, 1024, "the open-file limit (RLIMIT_NOFILE) is 1024, at most 4096 (hard limit): --max-conns 10000 needs 10512"},
		{"hard limit too low says what to lower to", 10000, 1024, 4096, nil, 0, 1024, "lower --max-conns to 3584 or less"},
		{"hard limit below the margin", 1, 16, 64, nil, 0, 16, "lower --max-conns to 0 or less"},
		{"raise fails", 10000, 1024, 524288, errors.New("operation not permitted"), 524288, 1024, "raising the open-file limit (RLIMIT_NOFILE) from 1024 to 524288"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var set uint64
			fl := fileLimit{
				get: func() (uint64, uint64, error) { return tc.soft, tc.hard, nil },
				set: func(v uint64) error { set = v; return tc.setErr },
			}
			before, after, err := ensureFileLimit(tc.maxConns, fl)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if set != tc.wantSet || before != tc.soft || after != tc.wantAfter {
				t.Fatalf("set %d, before %d, after %d; want set %d, before %d, after %d", set, before, after, tc.wantSet, tc.soft, tc.wantAfter)
			}
		})
	}
}

// fitFileLimit lowers the default --max-conns to what the hard limit fits,
// never an explicit one, and never below minDefaultConns.
func TestFitFileLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		explicit  bool
		hard      uint64
		wantConns int
		wantErr   bool
	}{
		{"default fits", false, 20000, 10000, false},
		{"default lowered to fit 4096", false, 4096, 4096 - fdMargin, false},
		{"explicit is never lowered", true, 4096, 10000, true},
		{"too low even for the minimum", false, fdMargin + minDefaultConns - 1, 10000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			soft := uint64(1024)
			fl := fileLimit{
				get: func() (uint64, uint64, error) { return soft, tc.hard, nil },
				set: func(v uint64) error { soft = v; return nil },
			}
			conns, _, after, err := fitFileLimit(10000, tc.explicit, fl)
			if conns != tc.wantConns || (err != nil) != tc.wantErr {
				t.Fatalf("conns %d err %v, want %d error %v", conns, err, tc.wantConns, tc.wantErr)
			}
			if err == nil && after < uint64(conns)+fdMargin {
				t.Fatalf("limit %d does not fit %d connections", after, conns)
			}
		})
	}
}
