// Package gather collects queued writes into one group commit, for both
// stores' committers.
package gather

import (
	"time"
)

// Queued adds to a group commit whatever is already queued on ops, up to
// max operations. It never waits for more.
func Queued[T any](group []T, ops <-chan T, max int) []T {
	for len(group) < max {
		select {
		case op, ok := <-ops:
			if !ok {
				return group
			}
			group = append(group, op)
		default:
			return group
		}
	}
	return group
}

// Within adds to a group commit what arrives on ops within d, and
// stops early once the group has enough operations.
func Within[T any](group []T, ops <-chan T, d time.Duration, enough int) []T {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(group) < enough {
		select {
		case op, ok := <-ops:
			if !ok {
				return group
			}
			group = append(group, op)
		case <-t.C:
			return group
		}
	}
	return group
}
