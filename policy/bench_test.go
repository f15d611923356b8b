package policy

import (
	"context"
	"testing"
)

// BenchmarkEvaluate judges an allowed launch against the fixture policy:
// two signature verifications (kernel, image), cmdline params, a host PCR
// and three CEL rules. BenchmarkEvaluateDigestsOnly is the baseline
// without signatures or rules, so the cost of those is visible.
func BenchmarkEvaluate(b *testing.B) {
	f := newEvalFixture(b)
	ev := f.evidence(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if v := f.set.Evaluate(ctx, ev); !v.Allow {
			b.Fatal(v.Reasons)
		}
	}
}

func BenchmarkEvaluateDigestsOnly(b *testing.B) {
	p, err := Parse("t.yaml", []byte(minimal), LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	set, _ := NewSet(p)
	f := newEvalFixture(b)
	ev := f.evidence(b)
	ev.Event.Policy, ev.Event.Kernel, ev.Event.Initrd, ev.Event.Image, ev.Event.Cmdline, ev.Event.CmdlineDigest = "t", dA, "", "", "console=ttyS0", ""
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if v := set.Evaluate(ctx, ev); !v.Allow {
			b.Fatal(v.Reasons)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	doc := []byte(minimal)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("t.yaml", doc, LoadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
