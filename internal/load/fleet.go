package load

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/softtpm"
)

// Fleet is a set of simulated hosts enrolled with one attestd, ready to be
// driven. Create with NewFleet, Close when done. Drive and CheckAudit must
// not run concurrently with each other.
type Fleet struct {
	// PrepareSeconds and Enroll describe how the fleet came to be.
	PrepareSeconds float64
	Enroll         Phase

	cfg         Config
	conns       []*attestclient.Client
	admin       *attestclient.Client
	clients     []bulwarkv1.AttestationClient
	hosts       []*host // enrolled
	secretValue []byte
	auditAfter  uint64
	ids         []string // verdict ids received by every Drive so far
}

// NewFleet does the setup through the Admin API (the policy is loaded, the
// secret is put, the audit log's length is noted), prepares cfg.Hosts
// simulated hosts and enrolls them. It fails if none enrolled; the Fleet is
// then still returned (with its Enroll phase) and must be closed.
func NewFleet(ctx context.Context, cfg Config) (*Fleet, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg}
	var err error
	if f.conns, f.admin, err = dial(cfg); err != nil {
		return nil, err
	}
	for _, c := range f.conns {
		f.clients = append(f.clients, c.Attestation)
	}
	if f.admin != nil {
		ac := f.admin.Admin
		if err := checkPolicy(ctx, ac, cfg.Policy, cfg.RequestTimeout); err != nil {
			f.Close()
			return nil, err
		}
		if cfg.Release {
			f.secretValue = make([]byte, 32)
			rand.Read(f.secretValue)
			cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			_, err := ac.PutSecret(cctx, &bulwarkv1.PutSecretRequest{Name: cfg.Secret, Value: f.secretValue,
				Metadata: map[string]string{"description": "bulwark-load test secret; safe to delete"}})
			cancel()
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("putting secret %q through the Admin API: %w", cfg.Secret, err)
			}
		}
		if !cfg.SkipAudit {
			cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			f.auditAfter, err = auditHead(cctx, ac)
			cancel()
			if err != nil {
				f.Close()
				return nil, err
			}
		}
	}

	ca, err := loadCA(cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	t0 := time.Now()
	hosts, err := prepareHosts(ctx, cfg, ca)
	if err != nil {
		f.Close()
		return nil, err
	}
	f.PrepareSeconds = time.Since(t0).Seconds()
	cfg.Logger.Info("hosts prepared", "hosts", len(hosts), "seconds", f.PrepareSeconds)

	f.hosts = enrollAll(ctx, cfg, f.clients, hosts, &f.Enroll)
	cfg.Logger.Info("hosts enrolled", "ok", len(f.hosts), "of", len(hosts), "per_second", f.Enroll.PerSecond)
	if len(f.hosts) == 0 {
		return f, fmt.Errorf("no host enrolled (errors: %v)", f.Enroll.Errors)
	}
	if ctx.Err() != nil {
		return f, ctx.Err()
	}
	return f, nil
}

// Close closes the fleet's connections.
func (f *Fleet) Close() {
	for _, c := range f.conns {
		c.Close()
	}
	if f.admin != nil {
		f.admin.Close()
	}
}

// dial opens cfg.Conns connections for the hosts' traffic (server-only TLS,
// as a launcher connects) and one admin connection with the client
// certificate (nil without one), through internal/attestclient.
func dial(cfg Config) (conns []*attestclient.Client, admin *attestclient.Client, err error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, nil, fmt.Errorf("--addr %q: want host:port: %w", cfg.Addr, err)
	}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	o := attestclient.Options{Addr: cfg.Addr, CAFile: cfg.CAFile, ServerName: cfg.ServerName}
	for i := 0; i < cfg.Conns; i++ {
		// Each Client is its own HTTP/2 connection.
		c, err := attestclient.Dial(o)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connecting to attestd (--addr %s, --ca %s): %w", cfg.Addr, cfg.CAFile, err)
		}
		conns = append(conns, c)
	}
	if cfg.CertFile != "" {
		o.CertFile, o.KeyFile = cfg.CertFile, cfg.KeyFile
		if admin, err = attestclient.Dial(o); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("admin connection (--cert/--key): %w", err)
		}
	}
	return conns, admin, nil
}

func checkPolicy(ctx context.Context, ac bulwarkv1.AdminClient, name string, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pl, err := ac.ListPolicies(cctx, &bulwarkv1.ListPoliciesRequest{})
	if err != nil {
		return fmt.Errorf("listing attestd's policies through the Admin API (is --cert an admin certificate of this attestd?): %w", err)
	}
	var names []string
	for _, p := range pl.GetPolicies() {
		if p.GetName() == name && p.GetLoaded() {
			return nil
		}
		if p.GetName() == name {
			return fmt.Errorf("attestd has policy %q but it did not load: %s", name, p.GetError())
		}
		names = append(names, p.GetName())
	}
	return fmt.Errorf("attestd has no policy named %q loaded (it has %v): write one with 'bulwark-load --write-policy FILE' into attestd's policy directory and reload", name, names)
}

func loadCA(cfg Config) (*softtpm.EKCA, error) {
	if cfg.EKCADir == "" {
		return softtpm.NewEKCA(cfg.Now())
	}
	return softtpm.LoadOrCreateEKCA(cfg.EKCADir, cfg.Now())
}

// host is one simulated host during a run.
type host struct {
	h      *softtpm.Host
	nodeID string
	launch *softtpm.Launch
}

func prepareHosts(ctx context.Context, cfg Config, ca *softtpm.EKCA) ([]*host, error) {
	hosts := make([]*host, cfg.Hosts)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	now := cfg.Now()
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(hosts) {
					return
				}
				t, err := softtpm.New(softtpm.Options{EK: cfg.EK})
				if err == nil {
					_, err = ca.Certify(t, now)
				}
				if err != nil {
					errs <- fmt.Errorf("preparing simulated host %d: %w", i, err)
					return
				}
				hosts[i] = &host{h: softtpm.NewHost(t, cfg.LaunchPCR)}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return hosts, nil
}

// enrollAll enrolls every host (Enroll, ActivateCredential in the softtpm,
// ActivateCredential) and records one launch on each; it returns the hosts
// that made it.
func enrollAll(ctx context.Context, cfg Config, clients []bulwarkv1.AttestationClient, hosts []*host, p *Phase) []*host {
	var next atomic.Int64
	cs := make([]*counter, cfg.Concurrency)
	okHosts := make([]bool, len(hosts))
	art := softtpm.SimulatedArtifacts()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cs {
		c := &counter{}
		cs[w] = c
		client := clients[w%len(clients)]
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(hosts) {
					return
				}
				hst := hosts[i]
				c.count++
				t0 := time.Now()
				what, err := enrollOne(ctx, cfg, client, hst)
				if err != nil {
					c.fail(what)
					cfg.Logger.Debug("enroll failed", "host", i, "err", err)
					continue
				}
				c.lat.record(time.Since(t0))
				if hst.launch, err = hst.h.Launch(art, cfg.Policy, cfg.Now()); err != nil {
					c.fail("launch: " + err.Error())
					continue
				}
				c.ok++
				okHosts[i] = true
			}
		})
	}
	wg.Wait()
	p.summarise(sumCounters(p, cs, time.Since(start)))
	var out []*host
	for i, h := range hosts {
		if okHosts[i] {
			out = append(out, h)
		}
	}
	return out
}

func enrollOne(ctx context.Context, cfg Config, client bulwarkv1.AttestationClient, hst *host) (string, error) {
	t := hst.h.TPM
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	er, err := client.Enroll(cctx, &bulwarkv1.EnrollRequest{EkPublic: t.EKPublic(), EkCertificate: t.EKCertificate(), AkPublic: t.AKPublic()})
	if err != nil {
		return "enroll: " + codeOf(err), err
	}
	secret, err := t.ActivateCredential(er.GetCredentialBlob(), er.GetEncryptedSecret())
	if err != nil {
		return "enroll: credential does not activate", err
	}
	if _, err := client.ActivateCredential(cctx, &bulwarkv1.ActivateCredentialRequest{NodeId: er.GetNodeId(), Secret: secret}); err != nil {
		return "activate: " + codeOf(err), err
	}
	hst.nodeID = er.GetNodeId()
	return "", nil
}
