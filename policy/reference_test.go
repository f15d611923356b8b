package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

func TestReferenceAllowsExactlyTheArtifacts(t *testing.T) {
	k := newTestKey(t)
	signer, err := ParsePublicKey("release", []byte(k.pem))
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd := []byte("kernel"), []byte("initrd")
	image := digestOf([]byte("manifest"))
	cmdline := `console=ttyS0 foo=a:#b'{}*&! panic=-1` // YAML-special, but one the kernel splits as we do
	for _, withSigner := range []bool{false, true} {
		rv := ReferenceValues{Name: "ref", Kernel: digestOf(kernel), Initrd: digestOf(initrd), Cmdlines: []string{cmdline},
			Image: image, Secrets: []string{"db-password"}, Sources: map[string]string{"kernel": "vmlinuz\n# evil"}, Now: time.Now()}
		if withSigner {
			rv.Signers = []*Signer{signer}
		}
		out, err := Reference(rv)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse("ref.yaml", out, LoadOptions{})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		set, _ := NewSet(p)
		payload := cosignPayload("r", image)
		good := Evidence{Event: measure.LaunchEvent{Policy: "ref", Kernel: digestOf(kernel), Initrd: digestOf(initrd), Cmdline: cmdline, Image: image},
			Signatures: []ArtifactSignature{
				{Artifact: "kernel", Signature: k.signBlob(t, kernel)},
				{Artifact: "initrd", Signature: k.signBlob(t, initrd)},
				{Artifact: "image", Signature: k.signBlob(t, payload), Payload: payload},
			}}
		if v := set.Evaluate(context.Background(), good); !v.Allow || strings.Join(v.Secrets, ",") != "db-password" {
			t.Fatalf("signer=%v: reference policy denies its own artifacts: %q\n%s", withSigner, v.Reasons, out)
		}
		for name, mut := range map[string]func(*Evidence){
			"kernel":  func(e *Evidence) { e.Event.Kernel = dA },
			"initrd":  func(e *Evidence) { e.Event.Initrd = dA },
			"no init": func(e *Evidence) { e.Event.Initrd = "" },
			"cmdline": func(e *Evidence) { e.Event.Cmdline += " " },
			"image":   func(e *Evidence) { e.Event.Image = dA },
			"args":    func(e *Evidence) { e.Event.Args = []string{"sh"} },
		} {
			ev := good
			ev.Event = good.Event
			mut(&ev)
			if v := set.Evaluate(context.Background(), ev); v.Allow {
				t.Errorf("signer=%v: reference policy allows another %s", withSigner, name)
			}
		}
		if withSigner {
			ev := good
			ev.Signatures = nil
			if v := set.Evaluate(context.Background(), ev); v.Allow || len(v.Reasons) != 3 {
				t.Errorf("unsigned artifacts: %q", v.Reasons)
			}
		}
	}
}

func TestReferenceDefaults(t *testing.T) {
	out, err := Reference(ReferenceValues{Kernel: dA})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("default.yaml", out, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "default" || p.Cmdline.Params == nil || p.Initrd != nil || p.Image != nil {
		t.Fatalf("%+v\n%s", p, out)
	}
	if _, err := Reference(ReferenceValues{Name: "Bad Name", Kernel: dA}); err == nil {
		t.Fatal("bad name accepted")
	}
	if _, err := Reference(ReferenceValues{Kernel: "sha256:nope"}); err == nil {
		t.Fatal("bad digest accepted")
	}
	if _, err := Reference(ReferenceValues{Kernel: dA, Cmdlines: []string{"quiet\u00a0init=/bin/sh"}}); err == nil || !strings.Contains(err.Error(), "cmdline.exact[0]: kernel command line byte 5") {
		t.Fatalf("a command line the kernel splits differently: %v", err)
	}
}
