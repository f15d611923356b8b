package embedded

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// maxCachedNodes bounds the embedded store's cache of decoded node records
// (about 2 KiB each); beyond it, arbitrary entries are evicted.
const maxCachedNodes = 100_000

// nodeCache holds the embedded store's node records decoded, as committed,
// last verdict included: every attestation reads its node (GetNode), and
// decoding the JSON record was a tenth of attestd's CPU.
//
// It is exact, not best effort: a write transaction collects the records
// and last verdicts it writes (txn.nodes, txn.last) and they enter the
// cache only after the commit; a reader fills a miss only if no node write
// committed between its lookup and its read (the generation check), so a
// read that raced a commit never installs the older record. The embedded
// store has one process (the file is locked), so nothing else writes behind
// the cache's back. Cached records are never changed in place: a commit
// replaces them, and readers get copies.
type nodeCache struct {
	mu   sync.Mutex
	gen  uint64 // bumped by every commit that wrote nodes
	recs map[string]*record.Node
	max  int // entries kept; 0: maxCachedNodes
}

// lookup returns a copy of the cached record (nil on a miss) and the
// generation to pass to fill.
func (c *nodeCache) lookup(id string) (*record.Node, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.recs[id]; r != nil {
		return r.Clone(), c.gen
	}
	return nil, c.gen
}

// lastOf returns node id's cached last verdict; ok is false on a miss.
func (c *nodeCache) lastOf(id string) (lv record.Last, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.recs[id]; r != nil {
		return r.Last(), true
	}
	return record.Last{}, false
}

// fill caches r, read from the database after lookup returned gen, unless
// a node write has committed since.
func (c *nodeCache) fill(gen uint64, r *record.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.putLocked(r.Clone())
}

// committed applies the node records and then the last verdicts of a
// committed transaction. A last verdict in last is the newest the
// transaction wrote for its node, whatever the order of its ops, so it
// wins over the one in the node's record in w.
func (c *nodeCache) committed(w map[string]*record.Node, last map[string]record.Last) {
	if len(w) == 0 && len(last) == 0 {
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
	for id, lv := range last {
		if r := c.recs[id]; r != nil {
			n := *r // the byte slices are shared: no one writes to them
			n.SetLast(lv)
			c.recs[id] = &n
		}
	}
}

func (c *nodeCache) putLocked(r *record.Node) {
	if c.recs == nil {
		c.recs = map[string]*record.Node{}
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

// readNode returns the committed record of node id (a copy), nil if there
// is none: from the cache, else decoded from a read transaction.
func (s *boltStore) readNode(id string) (*record.Node, error) {
	r, gen := s.nodes.lookup(id)
	if r != nil {
		return r, nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		r, err = s.readNodeRec(tx, id)
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
// record (cached, else decoded), with the last verdict an earlier op of tx
// recorded.
func (s *boltStore) nodeIn(tx *txn, id string) (*record.Node, error) {
	r, ok := tx.nodes[id]
	switch {
	case ok && r == nil:
		return nil, nil
	case ok:
		r = r.Clone()
	default:
		if r, _ = s.nodes.lookup(id); r == nil {
			var err error
			if r, err = s.readNodeRec(tx.Tx, id); r == nil || err != nil {
				return nil, err
			}
		}
	}
	if lv, ok := tx.last[id]; ok {
		r.SetLast(lv)
	}
	return r, nil
}

// readNodeRec decodes node id's record and its last verdict from tx; nil if
// there is no such node.
func (s *boltStore) readNodeRec(tx *bolt.Tx, id string) (*record.Node, error) {
	v := tx.Bucket(bktNodes).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	return s.decodeNodeRec(tx, []byte(id), v)
}

// decodeNodeRec decodes the record v stored under key id in bktNodes and
// adds the node's last verdict (lastVerdict).
func (s *boltStore) decodeNodeRec(tx *bolt.Tx, id, v []byte) (*record.Node, error) {
	var r record.Node
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: corrupt node %q: %w", id, err)
	}
	lv, err := s.lastVerdict(tx, id)
	if err != nil {
		return nil, err
	}
	if lv != (record.Last{}) {
		r.SetLast(lv)
	}
	return &r, nil
}

// putNode writes r in tx; the cache sees it once tx commits. The last
// verdict is not part of the node's record: if r's differs from what tx
// sees, it is written as putLast does.
func (s *boltStore) putNode(tx *txn, r *record.Node) error {
	r.Normalize()
	if err := put(tx.Bucket(bktNodes), []byte(r.ID), r); err != nil {
		return err
	}
	old, err := s.lastIn(tx, r.ID)
	if err != nil {
		return err
	}
	if lv := r.Last(); lv != old {
		if err := s.putLast(tx, r.ID, lv); err != nil {
			return err
		}
	}
	tx.nodes[r.ID] = r.Clone()
	return nil
}

// lastIn returns node id's last verdict as tx sees it (zero if none).
func (s *boltStore) lastIn(tx *txn, id string) (record.Last, error) {
	if lv, ok := tx.last[id]; ok {
		return lv, nil
	}
	if lv, ok := s.nodes.lastOf(id); ok { // no copy of the whole record
		return lv, nil
	}
	return s.lastVerdict(tx.Tx, []byte(id))
}

// putLast records lv as node id's last verdict in tx (deleting it when lv
// is zero): a record of ~100 bytes, where rewriting the node's record
// (its EK certificate included) on every attestation was a tenth of
// attestd's CPU and most of the bytes it wrote; appended to the last
// verdict log, not written in place (lastlog.go). The cache sees it once
// tx commits.
func (s *boltStore) putLast(tx *txn, id string, lv record.Last) error {
	if err := s.appendLast(tx, id, lv); err != nil {
		return err
	}
	tx.last[id] = lv
	return nil
}

// deleteNode removes node id, and its last verdict, in tx.
func (s *boltStore) deleteNode(tx *txn, id string) error {
	if err := tx.Bucket(bktNodes).Delete([]byte(id)); err != nil {
		return err
	}
	if err := s.putLast(tx, id, record.Last{}); err != nil {
		return err
	}
	tx.nodes[id] = nil
	return nil
}
