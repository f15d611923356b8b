package store

import "context"

// OpenEmbeddedUnbatched opens an embedded store that commits (and fsyncs)
// every write alone: the benchmarks' baseline.
func OpenEmbeddedUnbatched(ctx context.Context, dir string) (Store, error) {
	s, err := OpenEmbedded(ctx, dir, Options{})
	if err != nil {
		return nil, err
	}
	unclassified(s).(*embedded).unbatched = true
	return s, nil
}
