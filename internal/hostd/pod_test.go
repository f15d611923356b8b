package hostd

import (
	"context"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAddContainerOptionsRefusesBadFields(t *testing.T) {
	good := func() *bulwarkv1.AddContainerRequest {
		return &bulwarkv1.AddContainerRequest{Id: "abc", Name: "web-1", Image: "/srv/image", Args: []string{"sh"},
			Env: []string{"A=1"}, WorkingDir: "/srv", User: "1000:1000"}
	}
	co, err := addContainerOptions(good())
	if err != nil {
		t.Fatalf("a good request is refused: %v", err)
	}
	if co.Name != "web-1" || co.Image != "/srv/image" || co.WorkingDir != "/srv" || co.User != "1000:1000" || len(co.Env) != 1 {
		t.Fatalf("options = %+v", co)
	}
	for _, tc := range []struct {
		field string
		edit  func(*bulwarkv1.AddContainerRequest)
	}{
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = "" }},
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = ".." }},
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = "a/b" }},
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = strings.Repeat("n", 129) }},
		{"image", func(r *bulwarkv1.AddContainerRequest) { r.Image = "" }},
		{"image", func(r *bulwarkv1.AddContainerRequest) { r.Image = "relative" }},
		{"image", func(r *bulwarkv1.AddContainerRequest) { r.Image = "/a\x00" }},
		{"args", func(r *bulwarkv1.AddContainerRequest) { r.Args = []string{"a\x00"} }},
		{"args", func(r *bulwarkv1.AddContainerRequest) { r.Args = make([]string, 257) }},
		{"args", func(r *bulwarkv1.AddContainerRequest) { r.Args = []string{strings.Repeat("a", 64<<10+1)} }},
		{"env", func(r *bulwarkv1.AddContainerRequest) { r.Env = []string{"NOEQUALS"} }},
		{"env", func(r *bulwarkv1.AddContainerRequest) { r.Env = []string{"=x"} }},
		{"working_dir", func(r *bulwarkv1.AddContainerRequest) { r.WorkingDir = "relative" }},
		{"user", func(r *bulwarkv1.AddContainerRequest) { r.User = "a\x00" }},
	} {
		req := good()
		tc.edit(req)
		_, err := addContainerOptions(req)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
			t.Errorf("%s: err = %v, want InvalidArgument naming the field", tc.field, err)
		}
	}
}

// The container RPCs refuse what names no pod's container before
// anything else: a bad name is InvalidArgument, an unknown sandbox
// NotFound, a bad signal InvalidArgument.
func TestContainerRPCsRefuse(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir(), TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background(), false) })
	ctx := context.Background()
	for _, tc := range []struct {
		what string
		call func() error
		code codes.Code
		msg  string
	}{
		{"inspect, bad name", func() error {
			_, err := s.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: "ab", Name: "a/b"})
			return err
		}, codes.InvalidArgument, "name:"},
		{"inspect, no sandbox", func() error {
			_, err := s.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: "ab", Name: "c"})
			return err
		}, codes.NotFound, ""},
		{"kill, bad signal", func() error {
			_, err := s.KillContainer(ctx, &bulwarkv1.KillContainerRequest{Id: "ab", Name: "c", Signal: 65})
			return err
		}, codes.InvalidArgument, "signal:"},
		{"add, bad image", func() error {
			_, err := s.AddContainer(ctx, &bulwarkv1.AddContainerRequest{Id: "ab", Name: "c", Image: "x"})
			return err
		}, codes.InvalidArgument, "image:"},
		{"add, no sandbox", func() error {
			_, err := s.AddContainer(ctx, &bulwarkv1.AddContainerRequest{Id: "ab", Name: "c", Image: "/x"})
			return err
		}, codes.NotFound, ""},
	} {
		err := tc.call()
		if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v %q", tc.what, err, tc.code, tc.msg)
		}
	}
}
