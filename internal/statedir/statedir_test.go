package statedir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	root := os.Geteuid() == 0
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"override", map[string]string{"BULWARK_STATE": "/srv/bw", "XDG_STATE_HOME": "/x"}, "/srv/bw"},
		{"xdg", map[string]string{"XDG_STATE_HOME": "/x", "HOME": "/home/u"}, "/x/bulwark"},
		{"relative xdg ignored", map[string]string{"XDG_STATE_HOME": "x", "HOME": "/home/u"}, "/home/u/.local/state/bulwark"},
		{"home", map[string]string{"HOME": "/home/u"}, "/home/u/.local/state/bulwark"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Dir(env(c.env))
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			if root && c.name != "override" {
				want = "/var/lib/bulwark"
			}
			if got != want {
				t.Fatalf("Dir = %q, want %q", got, want)
			}
		})
	}
	rel, err := Dir(env(map[string]string{"BULWARK_STATE": "rel"}))
	if err != nil || !filepath.IsAbs(rel) {
		t.Fatalf("relative override = %q, %v; want absolute", rel, err)
	}
}
