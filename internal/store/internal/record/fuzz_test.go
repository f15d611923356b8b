package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
)

// FuzzAuditEntry: any caller-supplied entry is either rejected with
// ErrInvalid or stored so that its hash verifies after the embedded store's
// encoding round trip (the details survive byte for byte).
func FuzzAuditEntry(f *testing.F) {
	f.Add("admin", "sha256:n", "secret-a", []byte(`{"op":"put"}`), int64(1))
	f.Add("verdict", "", "", []byte(`{ "a" : [1,2,{"<":"&"}] }`), int64(0))
	f.Add("release", "n\x00", "\xff", []byte(`[]`), int64(-5))
	f.Add("enroll", "x", "y", []byte(`{"a":"\u00e9\ud800"}`), int64(1<<62))
	f.Fuzz(func(t *testing.T, kind, node, subject string, details []byte, tm int64) {
		e := store.AuditEntry{Time: time.Unix(0, tm), Kind: store.AuditKind(kind), NodeID: node, Subject: subject, Details: details}
		err := store.ValidateAuditEntry(&e, time.Now)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("rejection is not ErrInvalid: %v", err)
			}
			return
		}
		r := store.NextAuditRecord(nil, e)
		enc, err := json.Marshal(Audit{Seq: r.Seq, Time: store.Nanos(r.Time), Kind: string(r.Kind), Node: r.NodeID, Subject: r.Subject, Details: r.Details, Prev: r.Prev, Hash: r.Hash})
		if err != nil {
			t.Fatal(err)
		}
		var back Audit
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatal(err)
		}
		got := back.Record()
		if !bytes.Equal(got.ComputeHash(), r.Hash) {
			t.Fatalf("hash does not survive storage: %+v vs %+v", got, r)
		}
	})
}
