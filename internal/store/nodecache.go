package store

import (
	"bytes"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// nodeCache holds the embedded store's node records decoded, as committed:
// every attestation reads its node (GetNode) and rewrites it (the last
// verdict), and decoding the JSON record was a tenth of attestd's CPU.
//
// It is exact, not best effort: a write transaction collects the records
// it writes (txn.nodes) and they enter the cache only after the commit; a
// reader fills a miss only if no node write committed between its lookup
// and its read (the generation check), so a read that raced a commit never
// installs the older record. The embedded store has one process (the file
// is locked), so nothing else writes behind the cache's back.
type nodeCache struct {
	mu   sync.Mutex
	gen  uint64 // bumped by every commit that wrote nodes
	recs map[string]*nodeRec
	max  int // entries kept; 0: maxCachedNodes
}

// lookup returns a copy of the cached record (nil on a miss) and the
// generation to pass to fill.
func (c *nodeCache) lookup(id string) (*nodeRec, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.recs[id]; r != nil {
		return r.clone(), c.gen
	}
	return nil, c.gen
}

// fill caches r, read from the database after lookup returned gen, unless
// a node write has committed since.
func (c *nodeCache) fill(gen uint64, r *nodeRec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.putLocked(r.clone())
}

// committed applies the node records of a committed transaction.
func (c *nodeCache) committed(w map[string]*nodeRec) {
	if len(w) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for id, r := range w {
		if r == nil {
			delete(c.recs, id)
		} else {
			c.putLocked(r)
		}
	}
}

func (c *nodeCache) putLocked(r *nodeRec) {
	if c.recs == nil {
		c.recs = map[string]*nodeRec{}
	}
	limit := c.max
	if limit == 0 {
		limit = maxCachedNodes
	}
	if _, ok := c.recs[r.ID]; !ok && len(c.recs) >= limit {
		for k := range c.recs { // map order: an arbitrary victim
			delete(c.recs, k)
			break
		}
	}
	c.recs[r.ID] = r
}

// clone copies r deeply enough that changing the copy (fields or bytes)
// never changes r.
func (r *nodeRec) clone() *nodeRec {
	c := *r
	c.EKPublic, c.EKCert = bytes.Clone(r.EKPublic), bytes.Clone(r.EKCert)
	c.AKPublic, c.AKName, c.ChHash = bytes.Clone(r.AKPublic), bytes.Clone(r.AKName), bytes.Clone(r.ChHash)
	return &c
}

// normalize makes r what decoding its JSON gives back (an empty optional
// field is omitted, so it decodes as nil), so that a cached record equals
// a decoded one.
func (r *nodeRec) normalize() {
	for _, p := range []*[]byte{&r.EKCert, &r.ChHash} {
		if len(*p) == 0 {
			*p = nil
		}
	}
}

// readNode returns the committed record of node id (a copy), nil if there
// is none: from the cache, else decoded from a read transaction.
func (s *embedded) readNode(id string) (*nodeRec, error) {
	r, gen := s.nodes.lookup(id)
	if r != nil {
		return r, nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		r, err = get[nodeRec](tx.Bucket(bktNodes), []byte(id))
		return err
	})
	if err != nil || r == nil {
		return nil, err
	}
	s.nodes.fill(gen, r)
	return r, nil
}

// nodeIn returns node id's record as transaction tx sees it (a copy), nil
// if there is none: what an earlier op of tx wrote, else the committed
// record (cached, else decoded).
func (s *embedded) nodeIn(tx *txn, id string) (*nodeRec, error) {
	if r, ok := tx.nodes[id]; ok {
		if r == nil {
			return nil, nil
		}
		return r.clone(), nil
	}
	if r, _ := s.nodes.lookup(id); r != nil {
		return r, nil
	}
	return get[nodeRec](tx.Bucket(bktNodes), []byte(id))
}

// putNode writes r in tx; the cache sees it once tx commits.
func putNode(tx *txn, r *nodeRec) error {
	r.normalize()
	if err := put(tx.Bucket(bktNodes), []byte(r.ID), r); err != nil {
		return err
	}
	tx.nodes[r.ID] = r.clone()
	return nil
}

// deleteNode removes node id in tx.
func deleteNode(tx *txn, id string) error {
	if err := tx.Bucket(bktNodes).Delete([]byte(id)); err != nil {
		return err
	}
	tx.nodes[id] = nil
	return nil
}
