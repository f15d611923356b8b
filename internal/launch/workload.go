package launch

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
)

// Network modes of Options.Network.
const (
	NetworkNone = "none"
	NetworkUser = "user"
	NetworkTap  = "tap"
)

// ValidateWorkload checks and normalizes the workload inputs of o (Env,
// WorkingDir, User, Network, Ports), the one place they are checked for
// every caller: 'launcher run' (which names its flags in the errors) as
// much as a host service passing Options. Env entries are "KEY=VALUE"; a
// key given twice keeps its last value at its first place (docker run's
// --env-file then -e). Network "" is NetworkNone. Errors name the flag.
func (o *Options) ValidateWorkload() error {
	env, err := normalizeEnv(o.Env)
	if err != nil {
		return err
	}
	o.Env = env
	if o.WorkingDir != "" {
		if err := measure.CheckWorkingDir(o.WorkingDir); err != nil {
			return fmt.Errorf("-w/--workdir: %w", err)
		}
	}
	if o.User != "" {
		if err := measure.CheckUser(o.User); err != nil {
			return fmt.Errorf("--user: %w", err)
		}
	}
	switch o.Network {
	case "":
		o.Network = NetworkNone
	case NetworkNone, NetworkUser:
	case NetworkTap:
		return errors.New("--net tap: not yet: tap networking for CNI comes with the containerd integration; use --net user (with -p) or --net none")
	default:
		return fmt.Errorf("--net %q: want none or user", o.Network)
	}
	if len(o.Ports) > 0 && o.Network != NetworkUser {
		return errors.New("-p/--publish: port forwards need --net user")
	}
	if len(o.Ports) > measure.MaxPorts {
		return fmt.Errorf("-p/--publish: %d port forwards, the limit is %d", len(o.Ports), measure.MaxPorts)
	}
	seen := map[string]bool{}
	for i, s := range o.Ports {
		p, err := measure.ParsePort(s)
		if err != nil {
			return fmt.Errorf("-p/--publish: %w", err)
		}
		if k := netip.AddrPortFrom(p.HostIP, p.HostPort).String(); p.HostPort != 0 && seen[k] {
			return fmt.Errorf("-p/--publish: host address %s forwarded twice", k)
		} else {
			seen[k] = true
		}
		o.Ports[i] = p.String()
	}
	if o.Network == NetworkUser && o.Template != TemplateAuto && o.Template != TemplateNone {
		return fmt.Errorf("--net user with --template %q: a clone has no network device (templates are made without one); boot cold (--template none, or leave --template out)", o.Template)
	}
	return nil
}

// normalizeEnv checks env ("KEY=VALUE" entries) and returns it with each
// key once: its last value, at its first place.
func normalizeEnv(env []string) ([]string, error) {
	var out []string
	idx := map[string]int{}
	total := 0
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("-e/--env %q: want KEY=VALUE", trunc(kv, 64))
		}
		if err := measure.CheckEnvKey(k); err != nil {
			return nil, fmt.Errorf("-e/--env: %w", err)
		}
		if err := measure.CheckEnvValue(v); err != nil {
			return nil, fmt.Errorf("-e/--env %s: %w", k, err)
		}
		if i, ok := idx[k]; ok {
			total -= len(out[i])
			out[i] = kv
		} else {
			idx[k] = len(out)
			out = append(out, kv)
		}
		total += len(kv)
		if len(out) > measure.MaxEnv {
			return nil, fmt.Errorf("-e/--env: more than %d variables", measure.MaxEnv)
		}
		if total > measure.MaxEnvTotal {
			return nil, fmt.Errorf("-e/--env: more than %d bytes of variables", measure.MaxEnvTotal)
		}
	}
	return out, nil
}

// trunc shortens s for an error message.
func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// workloadEvent fills in the launch event's workload fields from o
// (validated).
func (o *Options) workloadEvent(ev *measure.LaunchEvent) {
	if len(o.Env) > 0 {
		ev.EnvKeys, ev.EnvDigest = measure.EnvKeys(o.Env), measure.EnvDigest(measure.SHA256, o.Env)
	}
	ev.WorkingDir, ev.User = o.WorkingDir, o.User
	if o.Network == NetworkUser {
		ev.Network, ev.Ports = measure.NetworkUser, slices.Clone(o.Ports)
	}
}

// workloadConfig fills in the sandbox's workload fields from o (validated).
func (o *Options) workloadConfig(cfg *kvm.Config) {
	cfg.Env, cfg.WorkingDir, cfg.User = slices.Clone(o.Env), o.WorkingDir, o.User
	if o.Network != NetworkUser {
		return
	}
	cfg.Network = kvm.NetworkUser
	for _, s := range o.Ports {
		p, _ := measure.ParsePort(s) // validated
		cfg.Ports = append(cfg.Ports, kvm.PortForward{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort})
	}
}
