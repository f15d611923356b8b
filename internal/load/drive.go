package load

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/softtpm"
)

// Drive bounds one measured phase.
type Drive struct {
	Rate     float64       // attestations started per second; 0 = flat out
	Duration time.Duration // stop starting attestations after this; 0 = no time bound
	Count    int           // stop after this many attestations; 0 = no count bound
	// Tokens asks attestd for a signed token (ES256 JWT) with every
	// verdict and checks one came. Off, the hosts do as the launcher does:
	// they release by attestation id and set omit_token.
	Tokens bool
	// TwoCalls makes each attestation two RPCs, Challenge and Attest, as
	// before ChallengeAttest (and as with an older attestd); off, one
	// ChallengeAttest stream, as the launcher does.
	TwoCalls bool
}

// DriveResult is the outcome of one measured phase.
type DriveResult struct {
	Attest   Phase
	RPC      map[string]Latency
	Verdicts map[string]uint64

	// hist holds the histograms behind Attest.Latency ("cycle") and RPC, so
	// that the steps of a sweep can be added up.
	hist map[string]*histogram
}

// add adds o's counts and histograms to r; finish then computes the summaries.
func (r *DriveResult) add(o *DriveResult) {
	if r.hist == nil {
		r.hist = map[string]*histogram{}
	}
	if r.Attest.Errors == nil {
		r.Attest.Errors = map[string]uint64{}
	}
	r.Attest.Count += o.Attest.Count
	r.Attest.OK += o.Attest.OK
	r.Attest.Seconds += o.Attest.Seconds
	for k, n := range o.Attest.Errors {
		r.Attest.Errors[k] += n
	}
	for k, n := range o.Verdicts {
		r.Verdicts[k] += n
	}
	for k, h := range o.hist {
		if r.hist[k] == nil {
			r.hist[k] = new(histogram)
		}
		r.hist[k].merge(h)
	}
}

// finish computes the rate and the latency summaries from the counts and
// the histograms.
func (r *DriveResult) finish() {
	for k, h := range r.hist {
		if k == "cycle" {
			r.Attest.summarise(h)
		} else {
			r.RPC[k] = h.summary()
		}
	}
}

// Drive runs one measured phase over the enrolled hosts. With neither
// Duration nor Count set it runs for DefaultDuration.
func (f *Fleet) Drive(ctx context.Context, d Drive) *DriveResult {
	if d.Duration <= 0 && d.Count <= 0 {
		d.Duration = DefaultDuration
	}
	r := &DriveResult{RPC: map[string]Latency{}, Verdicts: map[string]uint64{}}
	f.ids = append(f.ids, attestAll(ctx, f.cfg, d, f.clients, f.hosts, f.secretValue, r)...)
	return r
}

// CheckAudit checks that every verdict received by the fleet's drives so
// far is in attestd's audit log and that the chain verifies.
func (f *Fleet) CheckAudit(ctx context.Context) (*AuditCheck, error) {
	if f.admin == nil {
		return nil, errors.New("the audit check needs an admin certificate (--cert/--key)")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	a, err := CheckAudit(cctx, f.admin.Admin, f.auditAfter, f.ids)
	if err != nil {
		return nil, fmt.Errorf("audit check: %w", err)
	}
	return a, nil
}

// attestAll runs the measured phase and returns the verdict ids received.
func attestAll(ctx context.Context, cfg Config, d Drive, clients []bulwarkv1.AttestationClient, hosts []*host, secretValue []byte, res *DriveResult) []string {
	conc := min(cfg.Concurrency, len(hosts))
	pcrs := slices.Clone(cfg.HostPCRs)
	if !slices.Contains(pcrs, cfg.LaunchPCR) {
		pcrs = append(pcrs, cfg.LaunchPCR)
	}
	sort.Ints(pcrs)

	type worker struct {
		c                          counter
		challenge, attest, release histogram
		ids                        []string
		allow, deny                uint64
	}
	ws := make([]*worker, conc)
	var ticket atomic.Int64
	paced := d.Rate > 0 && !math.IsInf(d.Rate, 1) // else flat out
	length := d.Duration
	if length <= 0 {
		length = MaxDuration
	}
	start := time.Now()
	end := start.Add(length)
	var wg sync.WaitGroup
	for w := range ws {
		wk := &worker{}
		ws[w] = wk
		client := clients[w%len(clients)]
		// Worker w owns hosts w, w+conc, ...: one request per host at a time.
		var mine []*host
		for i := w; i < len(hosts); i += conc {
			mine = append(mine, hosts[i])
		}
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				now := time.Now()
				k := ticket.Add(1) - 1
				if d.Count > 0 && k >= int64(d.Count) {
					return
				}
				// t0 is when the attestation counts as started. At a target
				// rate that is its slot in the schedule, not when a worker
				// got to it: an attestation that waited for a busy worker
				// counts its wait (no "coordinated omission" flattering the
				// percentiles when attestd falls behind).
				t0 := now
				if paced {
					at, ok := slot(k, d.Rate, length)
					if !ok {
						return
					}
					t0 = start.Add(at)
					if d := t0.Sub(now); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				} else if !now.Before(end) {
					return
				}
				hst := mine[n%len(mine)]
				wk.c.count++
				out := attestOne(ctx, cfg, d, client, hst, pcrs, secretValue)
				if out.verdictID != "" {
					wk.ids = append(wk.ids, out.verdictID)
				}
				switch out.verdict {
				case bulwarkv1.Verdict_VERDICT_ALLOW:
					wk.allow++
				case bulwarkv1.Verdict_VERDICT_DENY:
					wk.deny++
				}
				if out.fail != "" {
					wk.c.fail(out.fail)
					cfg.Logger.Debug("attestation failed", "node", hst.nodeID, "what", out.fail, "err", out.err)
					continue
				}
				wk.c.ok++
				wk.c.lat.record(time.Since(t0))
				wk.challenge.record(out.tChallenge)
				wk.attest.record(out.tAttest)
				if cfg.Release {
					wk.release.record(out.tRelease)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	var ids []string
	var ch, at, rl histogram
	cs := make([]*counter, len(ws))
	for i, wk := range ws {
		cs[i] = &wk.c
		ids = append(ids, wk.ids...)
		ch.merge(&wk.challenge)
		at.merge(&wk.attest)
		rl.merge(&wk.release)
		res.Verdicts["allow"] += wk.allow
		res.Verdicts["deny"] += wk.deny
	}
	res.hist = map[string]*histogram{"cycle": sumCounters(&res.Attest, cs, elapsed), "challenge": &ch, "attest": &at}
	if cfg.Release {
		res.hist["release"] = &rl
	}
	res.finish()
	return ids
}

// slot is when the k-th attestation (from 0) is scheduled at rate per
// second, counted from the start of a phase of length; ok is false when
// that is not within the phase. It computes in float64 so that no rate,
// however small, overflows time.Duration.
func slot(k int64, rate float64, length time.Duration) (at time.Duration, ok bool) {
	ns := float64(k) * float64(time.Second) / rate
	if !(ns < float64(length)) {
		return 0, false
	}
	return time.Duration(ns), true
}

type outcome struct {
	verdict                       bulwarkv1.Verdict
	verdictID                     string
	fail                          string // "" when the cycle fully succeeded
	err                           error
	tChallenge, tAttest, tRelease time.Duration
}

func attestOne(ctx context.Context, cfg Config, d Drive, client bulwarkv1.AttestationClient, hst *host, pcrs []int, secretValue []byte) (o outcome) {
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	var quoteErr error
	t := time.Now()
	build := func(ch *bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error) {
		o.tChallenge = time.Since(t)
		ev, err := hst.h.Attest(pcrs, ch.GetNonce())
		if err != nil {
			quoteErr = err
			return nil, err
		}
		req := &bulwarkv1.AttestRequest{
			NodeId: hst.nodeID, Nonce: ch.GetNonce(), Quote: ev.Quote, Signature: ev.Signature,
			Pcrs: make(map[uint32][]byte, len(ev.PCRs)), LaunchLog: ev.Log, SandboxId: hst.launch.Event.SandboxID,
			OmitToken: !d.Tokens,
		}
		for p, v := range ev.PCRs {
			req.Pcrs[uint32(p)] = v
		}
		t = time.Now()
		return req, nil
	}
	call := attestclient.ChallengeAttest
	if d.TwoCalls {
		call = attestclient.ChallengeThenAttest
	}
	ar, err := call(cctx, client, &bulwarkv1.ChallengeRequest{NodeId: hst.nodeID}, build)
	var se *attestclient.StepError
	switch {
	case quoteErr != nil:
		o.fail, o.err = "quote: "+quoteErr.Error(), quoteErr
		return o
	case errors.As(err, &se) && se.Step == "challenge":
		o.tChallenge = time.Since(t)
		o.fail, o.err = "challenge: "+codeOf(se.Err), se.Err
		return o
	case err != nil:
		o.tAttest = time.Since(t)
		o.fail, o.err = "attest: "+codeOf(err), err
		return o
	}
	o.tAttest = time.Since(t)
	o.verdict, o.verdictID = ar.GetVerdict(), ar.GetAttestationId()
	if o.verdict != bulwarkv1.Verdict_VERDICT_ALLOW {
		o.fail = "deny"
		o.err = fmt.Errorf("verdict %s: %v", o.verdict, ar.GetReasons())
		return o
	}
	if o.verdictID == "" {
		o.fail = "attest: allow without attestation_id"
		return o
	}
	if d.Tokens && ar.GetToken() == "" {
		o.fail = "attest: allow without the token asked for"
		return o
	}
	if !cfg.Release {
		return o
	}
	t = time.Now()
	rr, err := client.ReleaseSecrets(cctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: o.verdictID}})
	o.tRelease = time.Since(t)
	if err != nil {
		o.fail, o.err = "release: "+codeOf(err), err
		return o
	}
	if what := checkRelease(rr, hst.launch, cfg.Secret, secretValue); what != "" {
		o.fail = "release: " + what
	}
	return o
}

// checkRelease opens every released secret with the guest key the launch
// recorded; it says what is wrong, or "".
func checkRelease(rr *bulwarkv1.ReleaseSecretsResponse, l *softtpm.Launch, name string, want []byte) string {
	if rr.GetSandboxId() != l.Event.SandboxID {
		return "released for another sandbox"
	}
	found := false
	for _, s := range rr.GetSecrets() {
		pt, err := l.GuestKey.Open(l.Event.SandboxID, s.GetName(), s.GetWrapped())
		if err != nil {
			return "a secret does not open with the guest key"
		}
		if s.GetName() == name {
			found = true
			if want != nil && subtle.ConstantTimeCompare(pt, want) != 1 {
				return "secret opened to another value than was put"
			}
		}
	}
	if !found {
		return fmt.Sprintf("secret %q not released (does the policy grant it?)", name)
	}
	return ""
}
