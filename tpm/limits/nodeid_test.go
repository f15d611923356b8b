package limits

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestNodeID(t *testing.T) {
	ek := []byte("an EK public area")
	want := fmt.Sprintf("sha256:%x", sha256.Sum256(ek))
	if got := NodeID(ek); got != want {
		t.Fatalf("NodeID = %s, want %s", got, want)
	}
	if NodeID([]byte("another")) == want {
		t.Fatal("different EKs share a node id")
	}
}
