package load

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
)

// auditKindVerdict is the audit record kind attestd writes for every
// verdict (allow or deny) it answers.
const auditKindVerdict = "verdict"

// auditPage is the ReadAudit page size (attestd's maximum).
const auditPage = 1000

// maxMissingListed bounds how many missing verdict ids a report lists.
const maxMissingListed = 20

// AuditCheck is the result of the "nothing lost" check.
type AuditCheck struct {
	// Expected is the number of verdicts the load generator received.
	Expected int `json:"expected"`
	// Found is how many of them have a verdict record in the audit log.
	Found int `json:"found"`
	// Missing lists (up to 20 of) the verdict ids with no record.
	Missing      []string `json:"missing,omitempty"`
	MissingCount int      `json:"missing_count"`
	// RecordsRead is how many audit records were read (from After on).
	RecordsRead uint64 `json:"records_read"`
	After       uint64 `json:"after"`
	// LinksChecked says every record read carries the previous record's
	// hash as prev_hash and sequence numbers have no gap.
	LinksChecked bool `json:"links_checked"`
	// ChainVerified is attestd's own end-to-end verification of the hash
	// chain (Admin.VerifyAudit), over the whole log.
	ChainVerified bool   `json:"chain_verified"`
	ChainRecords  uint64 `json:"chain_records"`
	ChainHead     string `json:"chain_head,omitempty"`
	ChainError    string `json:"chain_error,omitempty"`
}

// OK reports whether nothing was lost and the chain verified.
func (a *AuditCheck) OK() bool {
	return a.MissingCount == 0 && a.Found == a.Expected && a.LinksChecked && a.ChainVerified
}

// String is the one-line human verdict.
func (a *AuditCheck) String() string {
	if a.OK() {
		return fmt.Sprintf("nothing lost: %d/%d verdicts found, chain verified (%d records)", a.Found, a.Expected, a.ChainRecords)
	}
	s := fmt.Sprintf("LOST: %d/%d verdicts found", a.Found, a.Expected)
	if a.MissingCount > 0 {
		s += fmt.Sprintf(", %d missing (e.g. %v)", a.MissingCount, a.Missing)
	}
	if !a.LinksChecked {
		s += ", audit records do not link"
	}
	if !a.ChainVerified {
		s += ", chain does not verify: " + a.ChainError
	}
	return s
}

// CheckAudit reads attestd's audit log through the Admin API from the
// record after `after` on, and checks that every id in verdictIDs has a
// verdict record (its subject, or the attestation_id of its detail), that
// consecutive records link (prev_hash = previous hash, sequence without
// gaps), and that attestd verifies the whole hash chain. It returns an error
// only when the log cannot be read; a lost verdict or a broken chain is
// reported in the result (see AuditCheck.OK).
func CheckAudit(ctx context.Context, admin bulwarkv1.AdminClient, after uint64, verdictIDs []string) (*AuditCheck, error) {
	want := make(map[string]bool, len(verdictIDs))
	for _, id := range verdictIDs {
		want[id] = false
	}
	res := &AuditCheck{Expected: len(want), After: after, LinksChecked: true}

	// Start one record early so the first record read can be linked.
	cursor := after
	if cursor > 0 {
		cursor--
	}
	var prev *bulwarkv1.AuditRecord
	for {
		page, err := admin.ReadAudit(ctx, &bulwarkv1.ReadAuditRequest{After: cursor, Limit: auditPage})
		if err != nil {
			return nil, fmt.Errorf("reading the audit log after record %d: %w", cursor, err)
		}
		for _, r := range page.GetRecords() {
			if prev != nil {
				if r.GetSeq() != prev.GetSeq()+1 || r.GetPrevHash() != prev.GetHash() {
					res.LinksChecked = false
					if res.ChainError == "" {
						res.ChainError = fmt.Sprintf("record %d does not follow record %d", r.GetSeq(), prev.GetSeq())
					}
				}
			} else if after > 0 && r.GetSeq() != after && r.GetSeq() != after+1 {
				res.LinksChecked = false
				res.ChainError = fmt.Sprintf("reading after %d started at record %d", cursor, r.GetSeq())
			}
			prev = r
			if r.GetSeq() > after {
				res.RecordsRead++
			}
			if r.GetKind() != auditKindVerdict {
				continue
			}
			for _, id := range verdictRefs(r) {
				if seen, ok := want[id]; ok && !seen {
					want[id] = true
					res.Found++
				}
			}
		}
		if page.GetNext() == 0 || len(page.GetRecords()) == 0 {
			break
		}
		if page.GetNext() <= cursor {
			return nil, fmt.Errorf("audit log paging does not advance (after %d, next %d)", cursor, page.GetNext())
		}
		cursor = page.GetNext()
	}

	v, err := admin.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{})
	if err != nil {
		return nil, fmt.Errorf("verifying the audit chain: %w", err)
	}
	res.ChainVerified = v.GetOk()
	res.ChainRecords = v.GetRecords()
	res.ChainHead = v.GetHeadHash()
	if !v.GetOk() {
		res.ChainError = v.GetError()
	}
	if prev != nil && v.GetOk() && v.GetRecords() == prev.GetSeq() && v.GetHeadHash() != "" && v.GetHeadHash() != prev.GetHash() {
		// The chain attestd verified ends at the last record read (nothing
		// was appended since): it must be that very record.
		res.LinksChecked = false
		res.ChainError = fmt.Sprintf("head hash %s differs from the last record read (%d, %s)", v.GetHeadHash(), prev.GetSeq(), prev.GetHash())
	}

	for id, seen := range want {
		if !seen {
			res.MissingCount++
			res.Missing = append(res.Missing, id)
		}
	}
	sort.Strings(res.Missing)
	if len(res.Missing) > maxMissingListed {
		res.Missing = res.Missing[:maxMissingListed]
	}
	return res, nil
}

// verdictRefs returns the ids a verdict record names: its subject and the
// attestation_id of its JSON detail, when present.
func verdictRefs(r *bulwarkv1.AuditRecord) []string {
	refs := []string{r.GetSubject()}
	var d struct {
		AttestationID string `json:"attestation_id"`
	}
	if json.Unmarshal([]byte(r.GetDetail()), &d) == nil && d.AttestationID != "" && d.AttestationID != r.GetSubject() {
		refs = append(refs, d.AttestationID)
	}
	return refs
}

// auditHead returns the number of records in the audit log now (the
// sequence number of its last record), from attestd's chain verification.
func auditHead(ctx context.Context, admin bulwarkv1.AdminClient) (uint64, error) {
	v, err := admin.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{})
	if err != nil {
		return 0, fmt.Errorf("reading the audit log head: %w", err)
	}
	if !v.GetOk() {
		return 0, fmt.Errorf("the audit chain does not verify before the run: %s", v.GetError())
	}
	return v.GetRecords(), nil
}
