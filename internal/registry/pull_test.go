package registry

import (
	"errors"
	"strings"
	"testing"
)

// TestParseRef: by digest is accepted with or without a registry host;
// a tag, written or implied (:latest), needs AllowTag.
func TestParseRef(t *testing.T) {
	const d = "sha256:4bbe6483e9375d9d75b4d79c7ac43af31e2d453c703549bab0ec7702670850ee"
	for _, tc := range []struct {
		ref      string
		allowTag bool
		err      error
		want     string // substring of the error, when not err
	}{
		{"registry.example/app@" + d, false, nil, ""},
		{"app@" + d, false, nil, ""}, // Docker Hub by default: still a digest
		{"127.0.0.1:5000/app@" + d, false, nil, ""},
		{"registry.example/app:1.2", false, ErrTagNeedsFlag, ""},
		{"registry.example/app", false, ErrTagNeedsFlag, ""},
		{"registry.example/app:1.2", true, nil, ""},
		{"UPPER/Case@@x", true, nil, "not an image reference"},
	} {
		_, err := parseRef(tc.ref, Options{AllowTag: tc.allowTag})
		switch {
		case tc.want != "":
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", tc.ref, err, tc.want)
			}
		case !errors.Is(err, tc.err) || (tc.err == nil && err != nil):
			t.Errorf("%s (allow tag %v): %v, want %v", tc.ref, tc.allowTag, err, tc.err)
		}
	}
}
