// Package load is Bulwark's fleet load generator: it enrolls N simulated
// hosts (internal/softtpm) with a running attestd over TLS and drives
// Challenge → Attest → ReleaseSecrets at a target rate or flat out for a
// bounded time, then reports throughput, latency percentiles and errors by
// gRPC code, and checks through the Admin API that every verdict it received
// is in attestd's hash-chained audit log ("nothing lost").
//
// cmd/bulwark-load is its command line (Main); docs/load.md explains how to
// run it and what it reports.
package load

import (
	"context"
	"errors"
)

// ErrRunFailed is returned by Run with a complete Result when the run had
// errors, a deny, or a lost verdict.
var ErrRunFailed = errors.New("load run failed")

// Run performs a load run: setup through the Admin API, preparation and
// enrollment of the simulated hosts, the measured phase, and the audit
// check. The Result is returned whenever the measured phase ran, together
// with ErrRunFailed if anything went wrong in it.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &Result{
		Addr: cfg.Addr, Hosts: cfg.Hosts, EK: cfg.EK.String(), Concurrency: cfg.Concurrency, Conns: cfg.Conns,
		Rate: cfg.Rate, Duration: cfg.Duration.Seconds(), Release: cfg.Release, Tokens: cfg.Tokens, TwoCalls: cfg.TwoCalls, Policy: cfg.Policy,
	}
	f, err := NewFleet(ctx, cfg)
	if f != nil {
		defer f.Close()
		res.PrepareSeconds, res.Enroll = f.PrepareSeconds, f.Enroll
	}
	if err != nil {
		if f != nil {
			return res, err
		}
		return nil, err
	}
	if len(cfg.Rates) > 0 {
		sweep(ctx, cfg, f, res)
	} else {
		d := f.Drive(ctx, Drive{Rate: cfg.Rate, Duration: cfg.Duration, Count: cfg.Count, Tokens: cfg.Tokens, TwoCalls: cfg.TwoCalls})
		res.Attest, res.RPC, res.Verdicts = d.Attest, d.RPC, d.Verdicts
	}
	cfg.Logger.Info("measured phase done", "attestations", res.Attest.Count, "per_second", res.Attest.PerSecond)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if !cfg.SkipAudit {
		if res.Audit, err = f.CheckAudit(ctx); err != nil {
			return res, err
		}
	}
	res.AttestationsPerSecond = res.Attest.PerSecond
	res.P99Ms = res.Attest.Latency.P99
	for _, n := range res.Enroll.Errors {
		res.TotalErrors += n
	}
	for _, n := range res.Attest.Errors {
		res.TotalErrors += n
	}
	res.OK = res.TotalErrors == 0 && res.Attest.OK > 0 && (res.Audit == nil && cfg.SkipAudit || res.Audit != nil && res.Audit.OK())
	if !res.OK {
		return res, ErrRunFailed
	}
	return res, nil
}
