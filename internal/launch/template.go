package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
)

// Template selection for Options.Template.
const (
	// TemplateAuto clones from the template of the launch's recipe when
	// there is one, and boots cold otherwise (the default).
	TemplateAuto = ""
	// TemplateNone always boots cold.
	TemplateNone = "none"
)

// TemplatesDir is where the launcher keeps VM templates: one directory
// per recipe (kvm.TemplateDir) under the state directory.
func TemplatesDir(stateDir string) string { return filepath.Join(stateDir, "templates") }

// TemplateOptions configures CreateTemplate. The recipe's inputs (kernel,
// initrd or agent, command line, accelerator, CPUs, memory, Pod: a pod
// VM's template, whose machine has the pod's image slots, and Net) are
// taken and defaulted exactly as Run takes them, so `launcher run` (or a
// pod VM's launch) with the same values finds the template.
type TemplateOptions struct {
	Options
	// Name labels the template (default: its id).
	Name string
	// Replace removes an existing template of the same recipe first.
	Replace bool
	// Net gives the template a network device (kvm.Recipe.Net): launches
	// with a network (NetworkUser, NetworkTap: a pod with its own network
	// namespace) are its clones, and launches without one never are.
	// Options.Network stays none: the template's guest has no network.
	Net bool
}

// CreateTemplate boots the recipe's guest to the agent's READY, snapshots
// it and stores the template under TemplatesDir. It returns the template
// and its directory.
func CreateTemplate(ctx context.Context, to TemplateOptions) (*kvm.TemplateInfo, string, error) {
	o := &to.Options
	if o.Network != "" && o.Network != NetworkNone {
		return nil, "", fmt.Errorf("a template is made without a network (not --net %s): --net gives it the network device of launches with one", o.Network)
	}
	if err := o.setDefaults(); err != nil {
		return nil, "", err
	}
	accel, cmdline, err := o.accelAndCmdline()
	if err != nil {
		return nil, "", err
	}
	kernel, _, err := pinKernel(ctx, o)
	if err != nil {
		return nil, "", err
	}
	defer kernel.Close()
	initrd, err := pinInitrd(ctx, o)
	if err != nil {
		return nil, "", err
	}
	defer initrd.Close()
	cfg := o.sandboxConfig(kernel, initrd, accel, cmdline)
	cfg.TemplateNet = to.Net
	recipe, err := cfg.Recipe()
	if err != nil {
		return nil, "", err
	}
	root := TemplatesDir(o.StateDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, "", err
	}
	dir := kvm.TemplateDir(root, recipe)
	name := to.Name
	if name == "" {
		name = filepath.Base(dir)
	}
	if err := checkTemplateName(name); err != nil {
		return nil, "", err
	}
	infos, dirs, _ := kvm.ListTemplates(root)
	for i, info := range infos {
		if info.Name == name && dirs[i] != dir {
			return nil, "", fmt.Errorf("a template named %q exists for another recipe (%s): choose another --name or remove it (launcher template rm %s)", name, filepath.Base(dirs[i]), name)
		}
	}
	if old, err := kvm.ReadTemplateInfo(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
		if !to.Replace {
			return nil, "", fmt.Errorf("this recipe has a template already (%q, %s): use it (launcher run picks it), or pass --replace to make it again", old.Name, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return nil, "", err
		}
	}
	kind := ""
	if recipe.PodSlots > 0 {
		kind = fmt.Sprintf(", a pod VM's with %d image slots", recipe.PodSlots)
	}
	if recipe.Net {
		kind += ", with a network device"
	}
	o.progress("booting the template's guest (%s, %d CPU, %d MiB%s) to its agent's READY", accel, cfg.CPUs, cfg.MemoryMiB, kind)
	info, err := kvm.CreateTemplate(ctx, cfg, dir, name)
	if err != nil {
		return nil, "", err
	}
	return info, dir, nil
}

// createCommand is the launcher command that makes a template of recipe r.
func createCommand(r kvm.Recipe) string {
	c := "launcher template create"
	if r.PodSlots > 0 {
		c += " --pod"
	}
	if r.Net {
		c += " --net"
	}
	return c
}

// checkTemplateName accepts 1..64 of [A-Za-z0-9._-], not starting with '.'.
func checkTemplateName(n string) error {
	if n == "" || len(n) > 64 || n[0] == '.' || n == TemplateNone {
		return fmt.Errorf("template name %q: want 1..64 characters from [A-Za-z0-9._-], not starting with '.', and not %q", n, TemplateNone)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("template name %q: want 1..64 characters from [A-Za-z0-9._-]", n)
		}
	}
	return nil
}

// FindTemplate returns the directory of the template called name (or
// whose id is name) under root.
func FindTemplate(root, name string) (string, kvm.TemplateInfo, error) {
	infos, dirs, errs := kvm.ListTemplates(root)
	for i, info := range infos {
		if info.Name == name || filepath.Base(dirs[i]) == name {
			return dirs[i], info, nil
		}
	}
	msg := fmt.Sprintf("no template %q in %s (launcher template ls lists them; launcher template create makes one)", name, root)
	if len(errs) > 0 {
		msg += fmt.Sprintf("; %d unreadable: %v", len(errs), errs[0])
	}
	return "", kvm.TemplateInfo{}, errors.New(msg)
}

// findTemplate picks the template for a launch with cfg (Options.Template)
// and returns its directory and description, or "" for a cold boot.
func (o *Options) findTemplate(cfg kvm.Config) (string, kvm.TemplateInfo, error) {
	root := TemplatesDir(o.StateDir)
	switch o.Template {
	case TemplateNone:
		return "", kvm.TemplateInfo{}, nil
	case TemplateAuto:
		if len(o.Volumes) > 0 {
			o.progress("--volume: booting cold (templates have no disk slot for a volume)")
			return "", kvm.TemplateInfo{}, nil
		}
		recipe, err := cfg.Recipe()
		if err != nil {
			return "", kvm.TemplateInfo{}, err
		}
		dir := kvm.TemplateDir(root, recipe)
		info, err := kvm.ReadTemplateInfo(dir)
		if errors.Is(err, os.ErrNotExist) {
			o.progress("no template for this recipe: booting cold (%s makes one)", createCommand(recipe))
			return "", kvm.TemplateInfo{}, nil
		}
		if err != nil {
			return "", kvm.TemplateInfo{}, fmt.Errorf("template: %w", err)
		}
		return dir, info, nil
	default:
		dir, info, err := FindTemplate(root, o.Template)
		if err != nil {
			return "", kvm.TemplateInfo{}, err
		}
		// Refused now, before attestd is asked and the disk is built:
		// a launch with no network never gets a clone's NIC, and one
		// with a network needs a template with the device.
		recipe, err := cfg.Recipe()
		if err != nil {
			return "", kvm.TemplateInfo{}, err
		}
		if err := info.Fits(recipe); err != nil {
			return "", kvm.TemplateInfo{}, err
		}
		return dir, info, nil
	}
}

// loadTemplate loads the template in dir (nil for "": a cold boot), from
// o.Templates when set. release is to be called once the clone runs (or
// failed to).
func (o *Options) loadTemplate(dir string) (tpl *kvm.Template, release func(), err error) {
	if dir == "" {
		return nil, func() {}, nil
	}
	if o.Templates != nil {
		tpl, release, err = o.Templates.load(dir)
	} else {
		tpl, err = kvm.LoadTemplate(dir)
		release = func() { tpl.Close() }
	}
	if err != nil {
		return nil, nil, fmt.Errorf("template: %w", err)
	}
	o.progress("cloning from template %q (%s, made %s; --template none boots cold)", tpl.Info.Name, filepath.Base(dir), tpl.Info.Created.Format("2006-01-02 15:04"))
	return tpl, release, nil
}

// TemplateCache keeps loaded templates (kvm.LoadTemplate: sealed memfds,
// hashed once) for many launches, so clones of one template share its
// pages. A template made again on disk is loaded anew: an entry is reused
// only while the template's description on disk still names the same
// recipe, RAM and state digests; the old one is closed when the last
// launch using it has its clone running. Safe for concurrent use.
type TemplateCache struct {
	mu      sync.Mutex
	entries map[string]*cachedTemplate
	closed  bool
}

type cachedTemplate struct {
	t       *kvm.Template
	refs    int
	retired bool
}

// load returns the template in dir, loading it when it is not cached or
// changed on disk, and a function to call once it is no longer needed.
func (c *TemplateCache) load(dir string) (*kvm.Template, func(), error) {
	info, err := kvm.ReadTemplateInfo(dir)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, errors.New("the template cache is closed (the host service is stopping)")
	}
	e := c.entries[dir]
	if e != nil && (e.t.Info.RecipeDigest != info.RecipeDigest || e.t.Info.RAM.Digest != info.RAM.Digest || e.t.Info.State.Digest != info.State.Digest) {
		c.retire(dir, e)
		e = nil
	}
	if e == nil {
		t, err := kvm.LoadTemplate(dir)
		if err != nil {
			return nil, nil, err
		}
		e = &cachedTemplate{t: t}
		if c.entries == nil {
			c.entries = map[string]*cachedTemplate{}
		}
		c.entries[dir] = e
	}
	e.refs++
	var once sync.Once
	return e.t, func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			e.refs--
			if e.retired && e.refs == 0 {
				e.t.Close() // running clones keep their own mappings
			}
		})
	}, nil
}

// retire drops e from the cache; it is closed once unused. c.mu is held.
func (c *TemplateCache) retire(dir string, e *cachedTemplate) {
	delete(c.entries, dir)
	e.retired = true
	if e.refs == 0 {
		e.t.Close()
	}
}

// Close releases every cached template (those in use when their last
// launch is done with them).
func (c *TemplateCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for dir, e := range c.entries {
		c.retire(dir, e)
	}
}

// RemoveTemplate removes the template called name (or with id name).
func RemoveTemplate(stateDir, name string) (string, error) {
	dir, _, err := FindTemplate(TemplatesDir(stateDir), name)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(dir, TemplatesDir(stateDir)+string(os.PathSeparator)) {
		return "", fmt.Errorf("template directory %s is outside %s", dir, TemplatesDir(stateDir))
	}
	return dir, os.RemoveAll(dir)
}

// pinKernel pins and measures the guest kernel (default: the host's) and
// returns it with its path.
func pinKernel(ctx context.Context, o *Options) (*measure.Pinned, string, error) {
	kernelPath := o.Kernel
	if kernelPath == "" {
		o.progress("extracting the host kernel as a PVH vmlinux (cached)")
		var err error
		if kernelPath, err = kvm.DefaultKernel(ctx); err != nil {
			return nil, "", fmt.Errorf("default guest kernel: %w (or give --kernel)", err)
		}
	}
	o.progress("measuring kernel %s", kernelPath)
	kernel, err := measure.Pin(ctx, kernelPath, measure.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("kernel: %w", err)
	}
	return kernel, kernelPath, nil
}
