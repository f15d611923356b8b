package kvm

import (
	"strings"
	"testing"
)

// TestRecipeDifferencesReadable: a launch that does not fit a template is
// told what differs in words — a pod's image slots and the network device
// by what they mean and which flag makes them — and the machine digest (a
// hash of QEMU's command line, which the CPUs, memory, pod slots and
// network device shape) only when nothing else explains it. Before, every
// such refusal also listed "machine sha256:… (template) vs sha256:…".
func TestRecipeDifferencesReadable(t *testing.T) {
	qemu, err := qemuBinary("")
	if err != nil {
		t.Skipf("no QEMU: %v", err)
	}
	// Real recipes (their machine digests from the command lines this
	// launcher builds); no guest boots.
	recipe := func(mod func(*Config)) Recipe {
		t.Helper()
		cfg := Config{KernelPath: "k", InitrdPath: "i", KernelDigest: "sha256:" + strings.Repeat("1", 64), InitrdDigest: "sha256:" + strings.Repeat("2", 64),
			MemoryMiB: 256}
		mod(&cfg)
		if err := cfg.setDefaults(); err != nil {
			t.Fatal(err)
		}
		r, err := recipeFor(&cfg, AccelTCG, "console=ttyS0", qemu)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	plain := recipe(func(*Config) {})
	otherLauncher := plain
	otherLauncher.Machine = "sha256:" + strings.Repeat("9", 64) // what another version's command line hashes to
	for _, tc := range []struct {
		name           string
		template, this Recipe
		want           []string // the differences, in order
	}{
		{"same", plain, recipe(func(*Config) {}), nil},
		{"a network launch, a template without", plain, recipe(func(c *Config) { c.Network = NetworkUser }),
			[]string{"network device: the template has none (made without --net), this launch has a network"}},
		{"no network, a --net template", recipe(func(c *Config) { c.TemplateNet = true }), plain,
			[]string{"network device: the template has one (made with --net), this launch has no network"}},
		{"a pod, a plain template", plain, recipe(func(c *Config) { c.Pod = true }),
			[]string{"pod image slots: the template has none (made without --pod), this launch is a pod's (15 slots)"}},
		{"not a pod, a pod template", recipe(func(c *Config) { c.Pod = true }), plain,
			[]string{"pod image slots: the template is a pod's (15 slots, made with --pod), this launch is not a pod"}},
		{"a pod with its own network, a --pod template", recipe(func(c *Config) { c.Pod = true }), recipe(func(c *Config) { c.Pod, c.TemplateNet = true, true }),
			[]string{"network device: the template has none (made without --net), this launch has a network"}},
		{"memory and CPUs", plain, recipe(func(c *Config) { c.MemoryMiB, c.CPUs = 512, 2 }),
			[]string{"cpus 1 (template) vs 2 (this launch)", "memory_mib 256 (template) vs 512 (this launch)"}},
		{"command line", plain, func() Recipe { r := plain; r.Cmdline += " quiet"; return r }(),
			[]string{`cmdline "console=ttyS0" (template) vs "console=ttyS0 quiet" (this launch)`}},
		{"only the machine: another launcher's template", otherLauncher, plain,
			[]string{"machine: the QEMU devices and options this launcher sets up are not those the template was made with " +
				"(a launcher of another version made it; digests " + otherLauncher.Machine + " (template) vs " + plain.Machine + " (this launch))"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.template.differences(tc.this)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("differences:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			err := TemplateInfo{Name: "tpl", Recipe: tc.template}.Fits(tc.this)
			if (err == nil) != (tc.want == nil) {
				t.Fatalf("Fits: %v", err)
			}
			if err != nil && len(tc.want) == 1 && tc.want[0][:8] != "machine:" && strings.Contains(err.Error(), "sha256:") {
				t.Errorf("the refusal shows a digest, though a field in words explains it: %v", err)
			}
		})
	}
}
