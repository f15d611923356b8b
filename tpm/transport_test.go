package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// scriptedTPM answers each Send with the next response code in rcs.
type scriptedTPM struct {
	rcs   []uint32
	sends int
}

func (s *scriptedTPM) Send(cmd []byte) ([]byte, error) {
	rc := s.rcs[min(s.sends, len(s.rcs)-1)]
	s.sends++
	rsp := make([]byte, 10)
	binary.BigEndian.PutUint16(rsp, 0x8001)
	binary.BigEndian.PutUint32(rsp[2:], 10)
	binary.BigEndian.PutUint32(rsp[6:], rc)
	return rsp, nil
}

func TestRetryTPM(t *testing.T) {
	cases := []struct {
		name      string
		rcs       []uint32
		wantSends int
		wantRC    uint32
	}{
		{"success", []uint32{0}, 1, 0},
		{"retry then success", []uint32{rcRetry, rcRetry, 0}, 3, 0},
		{"yielded, testing", []uint32{rcYielded, rcTesting, 0}, 3, 0},
		{"real error not retried", []uint32{0x98e}, 1, 0x98e},
		{"gives up", []uint32{rcRetry}, 21, rcRetry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &scriptedTPM{rcs: c.rcs}
			rsp, err := (&retryTPM{t: s, ctx: context.Background()}).Send([]byte{0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x44})
			if err != nil {
				t.Fatal(err)
			}
			if s.sends != c.wantSends || binary.BigEndian.Uint32(rsp[6:]) != c.wantRC {
				t.Fatalf("sends %d rc %x, want %d %x", s.sends, binary.BigEndian.Uint32(rsp[6:]), c.wantSends, c.wantRC)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	s := &scriptedTPM{rcs: []uint32{rcRetry}}
	if _, err := (&retryTPM{t: s, ctx: ctx}).Send(make([]byte, 10)); !errors.Is(err, context.DeadlineExceeded) && s.sends != 21 {
		t.Fatalf("retry under an expiring context: %v after %d sends", err, s.sends)
	}
}
