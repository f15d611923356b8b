package simplesigning

import (
	"errors"
	"strings"
	"testing"
)

func TestBuildParse(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	p, err := Parse(Build(d, "registry.example/app"))
	if err != nil || p.Critical.Image.DockerManifestDigest != d || p.Critical.Identity.DockerReference != "registry.example/app" || p.Critical.Type != Type {
		t.Fatalf("%+v %v", p, err)
	}
	for _, bad := range []string{
		`{"critical":{"identity":{"docker-reference":""},"image":{"docker-manifest-digest":"` + d + `"},"type":"x"}}`,
		`{"critical":{"identity":{"docker-reference":""},"image":{"docker-manifest-digest":"sha256:1"},"type":"` + Type + `"}}`,
		`{"critical":{}, "extra":1}`,
		`{}`,
		strings.Repeat(" ", MaxSize+1),
	} {
		var pe *Error
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrType) || !errors.As(err, &pe) {
			t.Errorf("%.60q: %v, want an *Error matching ErrType", bad, err)
		}
	}
}
