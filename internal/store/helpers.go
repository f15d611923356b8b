package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"time"
)

// ConsumeChallenge completes enrollment: if node id has a pending challenge,
// unexpired at now, whose secret hash equals SHA-256(secret) (compared in
// constant time), the challenge is cleared and the node becomes NodeActive,
// atomically. Errors: ErrNotFound, ErrChallenge (no challenge or wrong
// secret), ErrChallengeExpired, or ErrChallenge for a revoked node.
func ConsumeChallenge(ctx context.Context, n Nodes, id string, secret []byte, now time.Time) (Node, error) {
	sum := sha256.Sum256(secret)
	return n.UpdateNode(ctx, id, func(node *Node) error {
		if node.State == NodeRevoked {
			return fmt.Errorf("node %s is revoked: %w", id, ErrChallenge)
		}
		c := node.Challenge
		if c == nil {
			return fmt.Errorf("node %s has no pending credential challenge: %w", id, ErrChallenge)
		}
		if !now.Before(c.Expires) {
			return fmt.Errorf("credential challenge of node %s: %w", id, ErrChallengeExpired)
		}
		if subtle.ConstantTimeCompare(c.SecretHash, sum[:]) != 1 {
			return fmt.Errorf("credential challenge of node %s: %w", id, ErrChallenge)
		}
		node.Challenge = nil
		node.State = NodeActive
		return nil
	})
}
