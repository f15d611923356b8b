package embedded_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	"github.com/jackc/pgx/v5"
)

// sizeFleet is the fleet the size benchmarks model: each host attests,
// and releases its secrets, once a minute.
const sizeFleet = 10_000

// fleetAttestation is one attestation as attestd records it: a
// time-ordered id, a sandbox id, a 32-byte HPKE guest key, one reason and
// two granted secrets.
func fleetAttestation(node string, at time.Time) store.Attestation {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(at.UnixMilli())<<16)
	rand.Read(b[6:])
	g := make([]byte, 32)
	rand.Read(g)
	return store.Attestation{ID: "att-" + hex.EncodeToString(b[:]), NodeID: node, Policy: "web@3", Allow: true,
		Reasons: []string{"all checks passed"}, SandboxID: "sb-" + hex.EncodeToString(g[:8]), GuestPublicKey: g,
		Secrets: []string{"db-password", "tls-key"}, CreatedAt: at, ReleaseExpires: at.Add(5 * time.Minute)}
}

// writeFleet records n attestations of the given nodes, spread over the
// minute from at, and consumes each one's release window, 64 at a time
// (as attestd's handlers do, sharing group commits).
func writeFleet(b testing.TB, s store.Store, nodes []string, n int, at time.Time) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 64 {
				t := at.Add(time.Duration(i) * time.Minute / time.Duration(n))
				a := fleetAttestation(nodes[i%len(nodes)], t)
				if _, err := s.RecordAttestation(ctx, a); err != nil {
					errs <- err
					return
				}
				if _, _, err := s.ConsumeRelease(ctx, a.ID, t.Add(time.Second)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

func fleetNodes(b testing.TB, s store.Store, n int) []string {
	var ids []string
	for range n {
		nd := storetest.NewNode(b)
		if err := s.CreateNode(context.Background(), nd); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, nd.ID)
	}
	return ids
}

// BenchmarkStoreSize reports what 10,000 attestations (each a verdict, its
// release and their two audit records) add to the store: the embedded
// file's pages in use and its size on disk, and PostgreSQL's tables with
// their indexes.
func BenchmarkStoreSize(b *testing.B) {
	const n = 10_000
	b.Run("embedded", func(b *testing.B) {
		for range b.N {
			s, err := embedded.Open(context.Background(), b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			nodes := fleetNodes(b, s, 100)
			_, used0, err := embedded.Size(s)
			if err != nil {
				b.Fatal(err)
			}
			writeFleet(b, s, nodes, n, time.Now())
			file, used, err := embedded.Size(s)
			if err != nil {
				b.Fatal(err)
			}
			s.Close()
			b.ReportMetric(float64(used-used0)/1e6, "MB-per-10k")
			b.ReportMetric(float64(used-used0)/n, "bytes/attestation")
			b.ReportMetric(float64(file)/1e6, "file-MB")
		}
	})
	b.Run("postgres", func(b *testing.B) {
		for range b.N {
			dsn := pgtest.DSN(b)
			s, err := postgres.Open(context.Background(), dsn, store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			nodes := fleetNodes(b, s, 100)
			before := pgSize(b, dsn)
			writeFleet(b, s, nodes, n, time.Now())
			after := pgSize(b, dsn)
			s.Close()
			b.ReportMetric(float64(after-before)/1e6, "MB-per-10k")
			b.ReportMetric(float64(after-before)/n, "bytes/attestation")
		}
	})
}

// BenchmarkRetentionSteadyState runs a 10,000-host fleet (one attestation
// and release per host a minute) through the embedded store for
// simulated time, with a retention of 5 simulated minutes purged each
// simulated minute as attestd does, and reports the file's size after
// 2 and after 6 retention periods, and per attestation retained: under retention the file stops
// growing once the first period's pages are free to reuse. Times are
// injected (no sleeping); each minute's 10,000 attestations are written
// for real.
func BenchmarkRetentionSteadyState(b *testing.B) {
	const retention = 5 * time.Minute
	const minutes = 30
	key := storetest.SealKey(b)
	for range b.N {
		s, err := embedded.Open(context.Background(), b.TempDir(), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		nodes := fleetNodes(b, s, 100)
		start := time.Now().Add(-minutes * time.Minute)
		var at2, maxFile int64
		var file int64
		for m := range minutes {
			now := start.Add(time.Duration(m) * time.Minute)
			writeFleet(b, s, nodes, sizeFleet, now)
			if _, err := store.Retain(context.Background(), s, now.Add(-retention), store.RetainOptions{Signer: key}); err != nil {
				b.Fatal(err)
			}
			if file, _, err = embedded.Size(s); err != nil {
				b.Fatal(err)
			}
			maxFile = max(maxFile, file)
			if m+1 == int(2*retention/time.Minute) {
				at2 = file
			}
		}
		if _, err := store.VerifyAudit(context.Background(), s, store.VerifyOptions{SealKey: &key.PublicKey}); err != nil {
			b.Fatal(err)
		}
		s.Close()
		b.ReportMetric(float64(at2)/1e6, "file-MB-after-2-periods")
		b.ReportMetric(float64(file)/1e6, "file-MB-after-6-periods")
		b.ReportMetric(float64(maxFile)/float64(sizeFleet*retention/time.Minute), "file-bytes/retained-attestation")
		b.ReportMetric(float64(maxFile)/1e6, "max-file-MB")
		b.ReportMetric(float64(sizeFleet*retention/time.Minute), "attestations-retained")
	}
}

func pgSize(b testing.TB, dsn string) int64 {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int64
	if _, err := conn.Exec(context.Background(), `CHECKPOINT`); err != nil {
		b.Log(fmt.Sprintf("CHECKPOINT: %v", err))
	}
	err = conn.QueryRow(context.Background(), `SELECT pg_total_relation_size('attestations') + pg_total_relation_size('audit') + pg_total_relation_size('nodes')`).Scan(&n)
	if err != nil {
		b.Fatal(err)
	}
	return n
}
