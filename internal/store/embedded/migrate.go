package embedded

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the embedded store's layout; migrateSchema brings an
// older file up to it when it opens.
const schemaVersion = "4"

// migrateSchema creates the schema on a new file, or brings an older one up
// to schemaVersion, in the open's transaction: all or nothing.
func migrateSchema(tx *bolt.Tx) error {
	m := tx.Bucket(bktMeta)
	switch v := string(m.Get([]byte("schema"))); v {
	case schemaVersion:
		return nil
	case "":
		if tx.Bucket(bktNodes).Stats().KeyN != 0 {
			return errors.New("store has nodes but no schema version: not an attestd store")
		}
	case "3":
		// Version 4 appends last verdicts to bktLastLog and folds them
		// into bktLast later (lastlog.go): the log bucket, created by
		// open, starts empty; bktLast stays as it is. The version keeps
		// an older attestd, which would not read the log, off the file.
	case "2":
		// Version 3 marks END records in the launch records' sandbox
		// index (launchlog.go); every record stored before is a launch
		// event, whose mark (empty) it already has.
	case "1":
		// Version 1 kept the last verdict in the node's record: decoded
		// together, record.Node takes the rest (its LV fields are not JSON).
		type v1Node struct {
			record.Node
			LastID string `json:"last_attestation"`
			Policy string `json:"last_policy"`
			Allow  bool   `json:"last_allow"`
			Time   int64  `json:"last_time"`
		}
		nb, lb := tx.Bucket(bktNodes), tx.Bucket(bktLast)
		type kv struct{ k, v []byte }
		var rewrite []kv
		err := nb.ForEach(func(k, v []byte) error {
			var v1 v1Node
			if err := json.Unmarshal(v, &v1); err != nil {
				return fmt.Errorf("corrupt node %q: %w", k, err)
			}
			if v1.LastID != "" {
				b, err := json.Marshal(record.Last{ID: v1.LastID, Policy: v1.Policy, Allow: v1.Allow, Time: v1.Time, Updated: v1.Updated})
				if err != nil {
					return err
				}
				if err := lb.Put(bytes.Clone(k), b); err != nil {
					return err
				}
			}
			b, err := json.Marshal(&v1.Node) // without the last verdict
			if err != nil {
				return err
			}
			rewrite = append(rewrite, kv{bytes.Clone(k), b})
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range rewrite { // not while iterating the bucket
			if err := nb.Put(e.k, e.v); err != nil {
				return err
			}
		}
		// Version 2 to 4 changes no stored bytes (see "2" and "3").
	default:
		return fmt.Errorf("schema version %q is not supported by this attestd (want %s or older)", v, schemaVersion)
	}
	return m.Put([]byte("schema"), []byte(schemaVersion))
}
