package embedded_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
)

// TestMain stops the PostgreSQL server the benchmarks compare against.
func TestMain(m *testing.M) { pgtest.Main(m) }

// benchParallelism × GOMAXPROCS goroutines issue requests at once, as
// attestd's gRPC handlers do under load.
const benchParallelism = 32

type benchStore struct {
	name string
	open func(b *testing.B) store.Store
}

func benchStores() []benchStore {
	return []benchStore{
		{"embedded-unbatched", func(b *testing.B) store.Store {
			s, err := embedded.OpenUnbatched(context.Background(), b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"embedded", func(b *testing.B) store.Store {
			s, err := embedded.Open(context.Background(), b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"postgres", func(b *testing.B) store.Store {
			s, err := postgres.Open(context.Background(), pgtest.DSN(b), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
}

// runBench runs op over every store and reports ops/s, and each store's
// throughput relative to the unbatched embedded baseline of the same run.
func runBench(b *testing.B, setup func(b *testing.B, s store.Store, n int) func(i int) error) {
	var baseline float64
	for _, bs := range benchStores() {
		b.Run(bs.name, func(b *testing.B) {
			s := bs.open(b)
			defer s.Close()
			op := setup(b, s, b.N)
			var next atomic.Int64
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := op(int(next.Add(1) - 1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			el := time.Since(start)
			b.StopTimer()
			rate := float64(b.N) / el.Seconds()
			b.ReportMetric(rate, "ops/s")
			if bs.name == "embedded-unbatched" {
				baseline = rate
			} else if baseline > 0 {
				b.ReportMetric(rate/baseline, "x-unbatched")
			}
		})
	}
}

func nonceValue(i int) []byte {
	v := make([]byte, 32)
	rand.Read(v[:24])
	binary.BigEndian.PutUint64(v[24:], uint64(i))
	return v
}

// BenchmarkConsumeNonce: the life of a quote nonce, concurrently: issue it
// (Challenge) and consume it (Attest). The embedded store keeps nonces in
// memory (see IssueNonce); PostgreSQL writes both durably.
func BenchmarkConsumeNonce(b *testing.B) {
	runBench(b, func(b *testing.B, s store.Store, n int) func(int) error {
		ctx := context.Background()
		return func(i int) error {
			now := time.Now()
			v := nonceValue(i)
			if err := s.IssueNonce(ctx, store.Nonce{Value: v, NodeID: "sha256:bench", Expires: now.Add(500 * time.Millisecond)}); err != nil {
				return err
			}
			return s.ConsumeNonce(ctx, v, "sha256:bench", now)
		}
	})
}

// BenchmarkAppendAudit: concurrent appends to the hash chain.
func BenchmarkAppendAudit(b *testing.B) {
	runBench(b, func(b *testing.B, s store.Store, n int) func(int) error {
		return func(i int) error {
			_, err := s.AppendAudit(context.Background(), store.AuditEntry{Kind: store.KindRelease, NodeID: "sha256:bench", Subject: fmt.Sprint(i), Details: []byte(`{"secrets":["db"]}`)})
			return err
		}
	})
}

// BenchmarkRecordAttestation: what one verified attestation costs the
// store: the verdict, the node's last verdict and its audit record, in one
// durable transaction.
func BenchmarkRecordAttestation(b *testing.B) {
	runBench(b, func(b *testing.B, s store.Store, n int) func(int) error {
		node := storetest.NewNode(b)
		if err := s.CreateNode(context.Background(), node); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		return func(i int) error {
			_, err := s.RecordAttestation(context.Background(), store.Attestation{
				ID: fmt.Sprintf("att-%d", i), NodeID: node.ID, Policy: "bench", Allow: true, Reasons: []string{"ok"},
				SandboxID: "sb", GuestPublicKey: make([]byte, 32), Secrets: []string{"db"}, CreatedAt: now, ReleaseExpires: now.Add(time.Minute),
			})
			return err
		}
	})
}

// BenchmarkAttestationFlow: every store write of one attestation and its
// release, as attestd does them: issue a nonce (Challenge), consume it and
// record the verdict with its audit record (Attest), consume the release
// window with its audit record (Release). ops/s = attestations/s.
func BenchmarkAttestationFlow(b *testing.B) {
	runBench(b, func(b *testing.B, s store.Store, n int) func(int) error {
		node := storetest.NewNode(b)
		ctx := context.Background()
		if err := s.CreateNode(ctx, node); err != nil {
			b.Fatal(err)
		}
		return func(i int) error {
			now := time.Now()
			v := nonceValue(i)
			if err := s.IssueNonce(ctx, store.Nonce{Value: v, NodeID: node.ID, Expires: now.Add(time.Minute)}); err != nil {
				return err
			}
			if err := s.ConsumeNonce(ctx, v, node.ID, now); err != nil {
				return err
			}
			id := fmt.Sprintf("att-%d", i)
			if _, err := s.RecordAttestation(ctx, store.Attestation{
				ID: id, NodeID: node.ID, Policy: "bench", Allow: true, Reasons: []string{"ok"},
				SandboxID: "sb", GuestPublicKey: make([]byte, 32), Secrets: []string{"db"}, CreatedAt: now, ReleaseExpires: now.Add(time.Minute),
			}); err != nil {
				return err
			}
			_, _, err := s.ConsumeRelease(ctx, id, now)
			return err
		}
	})
}
