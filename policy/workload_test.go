package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/measure"
)

// TestWorkloadRules: environment variables over the image's are denied
// unless the policy allows them (any, or by name); a network is denied
// unless the policy lists it (none only without a network section); CEL
// rules see the working directory, user, env keys and digest, network and
// ports.
func TestWorkloadRules(t *testing.T) {
	env := []string{"PORT=8080", "LOG=debug"}
	withEnv := func(ev *measure.LaunchEvent) {
		ev.EnvKeys, ev.EnvDigest = measure.EnvKeys(env), measure.EnvDigest(measure.SHA256, env)
	}
	withNet := func(ev *measure.LaunchEvent) {
		ev.Network, ev.Ports = measure.NetworkUser, []string{"127.0.0.1:8080:80/tcp"}
	}
	withTap := func(ev *measure.LaunchEvent) { ev.Network = measure.NetworkTap }
	withUser := func(ev *measure.LaunchEvent) { ev.User, ev.WorkingDir = "app", "/srv" }
	vol := measure.DigestBytes(measure.SHA256, []byte("volume"))
	withVol := func(ev *measure.LaunchEvent) { ev.Volumes = []string{"ro:/data:" + vol} }
	withTmpfs := func(ev *measure.LaunchEvent) { ev.Volumes = []string{"tmpfs:/scratch:0"} }
	withScratch := func(ev *measure.LaunchEvent) { ev.Volumes = []string{"scratch:/scratch:1073741824"} }
	for _, tc := range []struct {
		name    string
		section string
		mod     func(*measure.LaunchEvent)
		want    string // "" allowed
	}{
		{"no env, no section", "", func(*measure.LaunchEvent) {}, ""},
		{"env, no section", "", withEnv, `env: variables "LOG", "PORT" set over the image's environment; this policy allows none`},
		{"env, allow none", "env: {allow: none}\n", withEnv, "this policy allows none"},
		{"env, allow any", "env: {allow: any}\n", withEnv, ""},
		{"env, keys", "env: {keys: [PORT, LOG, OTHER]}\n", withEnv, ""},
		{"env, other keys", "env: {keys: [PORT]}\n", withEnv, `env: variables "LOG" are not among those the policy allows`},
		{"network, no section", "", withNet, `network: "user" is not allowed (allowed: "none")`},
		{"network user allowed", "network: {allow: [none, user]}\n", withNet, ""},
		{"tap, no section", "", withTap, `network: "tap" is not allowed (allowed: "none")`},
		{"tap, user only", "network: {allow: [none, user]}\n", withTap, `network: "tap" is not allowed (allowed: "none", "user")`},
		{"tap allowed", "network: {allow: [tap]}\n", withTap, ""},
		{"no network, user only", "network: {allow: [user]}\n", func(*measure.LaunchEvent) {}, `network: "none" is not allowed (allowed: "user")`},
		{"network, nothing allowed", "network: {allow: []}\n", func(*measure.LaunchEvent) {}, `network: "none" is not allowed (allowed: )`},
		{"user and workdir pass without rules", "", withUser, ""},
		{"volume, no section", "", withVol, `volumes: read-only volume ` + vol + ` at "/data" is not one the policy allows`},
		{"tmpfs, no section", "", withTmpfs, `volumes: tmpfs at "/scratch" is not allowed`},
		{"volume pinned", "volumes: {digests: [" + vol + "]}\n", withVol, ""},
		{"volume, other pinned", "volumes: {digests: [" + dA + "]}\n", withVol, "is not one the policy allows"},
		{"volume, any", "volumes: {allow: any}\n", withVol, ""},
		{"tmpfs allowed", "volumes: {tmpfs: true}\n", withTmpfs, ""},
		{"tmpfs, volumes only", "volumes: {allow: any}\n", withTmpfs, "volumes: tmpfs"},
		{"scratch, no section", "", withScratch, `volumes: scratch disk at "/scratch" is not allowed (volumes.scratch)`},
		{"scratch, tmpfs only", "volumes: {tmpfs: true}\n", withScratch, `volumes: scratch disk at "/scratch" is not allowed`},
		{"scratch, any", "volumes: {scratch: {}}\n", withScratch, ""},
		{"scratch, within max_size", "volumes: {scratch: {max_size: 1g}}\n", withScratch, ""},
		{"scratch, over max_size", "volumes: {scratch: {max_size: 512m}}\n", withScratch, "larger than the policy allows (volumes.scratch.max_size: 536870912)"},
		{"scratch, allowed path", "volumes: {scratch: {paths: [/data, /scratch]}}\n", withScratch, ""},
		{"scratch, other path", "volumes: {scratch: {max_size: 4g, paths: [/data]}}\n", withScratch, `not at a path the policy allows (volumes.scratch.paths)`},
		{"scratch, no path allowed", "volumes: {scratch: {paths: []}}\n", withScratch, "volumes.scratch.paths"},
		{"CEL sees scratch", "volumes: {scratch: {}}\nrules:\n  - name: s\n    expr: volumes == [\"scratch:/scratch:1073741824\"]\n", withScratch, ""},
		{"CEL sees volumes", "volumes: {allow: any}\nrules:\n  - name: data\n    expr: volumes == [\"ro:/data:" + vol + "\"]\n", withVol, ""},
		{"CEL pins user and workdir", "rules:\n  - name: non-root\n    expr: user == \"app\" && working_dir == \"/srv\"\n", withUser, ""},
		{"CEL refuses the image's user", "rules:\n  - name: non-root\n    expr: user == \"app\"\n", func(*measure.LaunchEvent) {}, "rule non-root"},
		{"CEL pins the env", "env: {allow: any}\nrules:\n  - name: env\n    expr: env_digest == \"" + measure.EnvDigest(measure.SHA256, env) + "\" && env_keys == [\"LOG\", \"PORT\"]\n", withEnv, ""},
		{"CEL env digest differs", "env: {allow: any}\nrules:\n  - name: env\n    expr: env_digest == \"" + measure.EnvDigest(measure.SHA256, []string{"PORT=1"}) + "\"\n", withEnv, "rule env"},
		{"CEL sees ports", "network: {allow: [user]}\nrules:\n  - name: local\n    expr: network == \"user\" && ports.all(p, p.startsWith(\"127.0.0.1:\"))\n", withNet, ""},
		{"CEL no network", "rules:\n  - name: none\n    expr: network == \"none\" && size(ports) == 0 && size(env_keys) == 0 && env_digest == \"\" && user == \"\"\n", func(*measure.LaunchEvent) {}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("t.yaml", []byte(minimal+tc.section), LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ev := Evidence{Event: measure.LaunchEvent{
				SandboxID: "sb", Policy: p.Name, Kernel: dA,
				Cmdline: "console=ttyS0", CmdlineDigest: measure.DigestCmdline(measure.SHA256, "console=ttyS0"),
			}}
			tc.mod(&ev.Event)
			for _, judge := range []struct {
				name string
				v    Verdict
			}{{"evaluate", p.Evaluate(context.Background(), ev)}, {"preflight", mustSet(t, p).Preflight(context.Background(), ev)}} {
				got := strings.Join(judge.v.Reasons, "; ")
				if strings.HasPrefix(tc.want, "rule ") && judge.name == "preflight" {
					continue // CEL rules need the attested facts
				}
				if tc.want == "" && !judge.v.Allow {
					t.Fatalf("%s denied: %s", judge.name, got)
				}
				if tc.want != "" && (judge.v.Allow || !strings.Contains(got, tc.want)) {
					t.Fatalf("%s: got allow=%v %q, want %q", judge.name, judge.v.Allow, got, tc.want)
				}
			}
		})
	}
}

func mustSet(t *testing.T, p *Policy) *Set {
	t.Helper()
	s, err := NewSet(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWorkloadRuleParseErrors(t *testing.T) {
	for _, tc := range []struct{ section, want string }{
		{"env: {allow: some}\n", `env.allow: "some" is not 'any' or 'none'`},
		{"env: {allow: any, keys: [A]}\n", "env: give allow or keys, not both"},
		{"env: {}\n", "env: neither allow nor keys given"},
		{"env: {keys: [A=1]}\n", "env.keys: variable name \"A=1\""},
		{"env: {keys: [A, A]}\n", `env.keys: "A" listed twice`},
		{"env: {values: [A]}\n", "values"},
		{"network: {}\n", "network: missing allow"},
		{"network: {allow: [bridge]}\n", `network.allow: "bridge" is not a network mode`},
		{"network: {allow: [user, user]}\n", `network.allow: "user" listed twice`},
		{"network: {allow: user}\n", "network.allow"},
		{"volumes: {}\n", "volumes: nothing allowed or pinned"},
		{"volumes: {allow: any, digests: []}\n", "volumes: give allow or digests, not both"},
		{"volumes: {tmpfs: yes-please}\n", "volumes.tmpfs: expected true or false"},
		{"volumes: {digests: [sha256:00]}\n", "volumes.digests: malformed digest"},
		{"volumes: {scratch: {max_size: lots}}\n", `volumes.scratch.max_size: "lots" is not a size`},
		{"volumes: {scratch: {max_size: 0}}\n", `volumes.scratch.max_size: "0" is not a size`},
		{"volumes: {scratch: {max_size: [1g]}}\n", "volumes.scratch.max_size: expected a size"},
		{"volumes: {scratch: {paths: [relative]}}\n", "volumes.scratch.paths: "},
		{"volumes: {scratch: {paths: [/usr]}}\n", "volumes.scratch.paths: \"/usr\" is a system directory"},
		{"volumes: {scratch: {paths: [/a, /a]}}\n", `volumes.scratch.paths: "/a" listed twice`},
		{"volumes: {scratch: {size: 1g}}\n", "size"},
		{"volumes: {scratch: true}\n", "volumes.scratch"},
	} {
		_, err := Parse("t.yaml", []byte(minimal+tc.section), LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.section, err, tc.want)
		}
	}
}
