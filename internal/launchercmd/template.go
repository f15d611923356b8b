package launchercmd

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/bulwark-project/bulwark/kvm"
)

var templateCreateCommand = &cli.Command{
	Name:    "template create",
	Summary: "boot a guest once and snapshot it: later launches of the same recipe start as clones in milliseconds",
	Usage:   "[--name NAME] [--kernel K --initrd I | --agent A] [--cmdline C] [--accel A] [--cpus N] [--memory MiB] [--pod] [--net] [--replace]",
	Run:     runTemplateCreate,
}

var templateLsCommand = &cli.Command{
	Name:    "template ls",
	Summary: "list the VM templates on this host",
	Usage:   "[--json]",
	Run:     runTemplateList,
}

var templateInspectCommand = &cli.Command{
	Name:    "template inspect",
	Summary: "show a template's recipe and the digests of what its clones resume from",
	Usage:   "NAME",
	Run:     runTemplateInspect,
}

var templateRmCommand = &cli.Command{
	Name:    "template rm",
	Summary: "remove a VM template",
	Usage:   "NAME...",
	Run:     runTemplateRemove,
}

func runTemplateCreate(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	name := fs.String("name", "", "the template's name (default: its id, from the recipe's digest)")
	kernel := fs.String("kernel", "", "guest kernel (default: the host kernel as a PVH vmlinux), as for 'launcher run'")
	initrd := fs.String("initrd", "", "base initramfs (default: built now for the host kernel), as for 'launcher run'")
	agent := fs.String("agent", "", "guest agent binary when --initrd is not given (default: bulwark-agent beside launcher)")
	cmdline := fs.String("cmdline", "", "guest kernel command line (default: the measured default for the accelerator)")
	accel := fs.String("accel", "auto", "accelerator: auto, kvm or tcg (a template is used only under the one it was made with)")
	cpus := fs.Int("cpus", 1, "virtual CPUs")
	mem := fs.Int("memory", 512, "memory in MiB")
	bootTimeout := fs.Duration("boot-timeout", 120*time.Second, "how long the guest may take to boot")
	noConfine := fs.Bool("no-confine", false, "run QEMU unconfined (see 'launcher run --help')")
	noCgroup := fs.Bool("no-cgroup", false, "run QEMU without CPU, memory and pids limits (see 'launcher run --help')")
	replace := fs.Bool("replace", false, "make the template again when this recipe has one")
	pod := fs.Bool("pod", false, "a template for pod VMs (containerd's one VM per pod): its machine has the pod's container image slots")
	net := fs.Bool("net", false, "a template for launches with a network (run --net user, pods with their own network namespace): its machine has a network device, on no network; launches without a network never clone it")
	verbose := fs.Bool("v", false, "log details to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %q", fs.Args())
	}
	if err := checkRunFlags(*accel, *cmdline, *cpus, *mem, 13, *bootTimeout); err != nil {
		return err
	}
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return err
	}
	to := launch.TemplateOptions{Name: *name, Replace: *replace, Net: *net, Options: launch.Options{
		Kernel: *kernel, Initrd: *initrd, Agent: *agent, Cmdline: *cmdline, Accel: *accel, CPUs: *cpus, MemoryMiB: *mem,
		BootTimeout: *bootTimeout, NoConfine: *noConfine, NoCgroup: *noCgroup, StateDir: state, Pod: *pod,
		Stdout: env.Stdout, Stderr: env.Stderr, Progress: env.Stderr,
	}}
	if *verbose {
		to.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	t0 := time.Now()
	info, dir, err := launch.CreateTemplate(ctx, to)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "template %s (%s) made in %.1fs: %d MiB RAM (%s), %d bytes of device state\n",
		info.Name, filepath.Base(dir), time.Since(t0).Seconds(), info.Recipe.MemoryMiB, info.RAM.Digest, info.State.Size)
	if info.Recipe.PodSlots > 0 {
		which := "without a network namespace of their own"
		if info.Recipe.Net {
			which = "with a network namespace of their own"
		}
		fmt.Fprintf(env.Stdout, "pod VMs (%d image slots) %s, with the same kernel, initrd, command line, accelerator, CPUs and memory, now start as clones of it\n", info.Recipe.PodSlots, which)
		return nil
	}
	which := "without --net"
	if info.Recipe.Net {
		which = "with --net user"
	}
	fmt.Fprintf(env.Stdout, "'launcher run' %s and the same kernel, initrd, command line, accelerator, --cpus and --memory now starts as a clone of it\n", which)
	return nil
}

// templateRow is one template as 'template ls --json' prints it.
type templateRow struct {
	ID   string `json:"id"`
	Dir  string `json:"dir"`
	Disk int64  `json:"disk_bytes"`
	kvm.TemplateInfo
}

func listTemplates(env *cli.Env) ([]templateRow, []error, error) {
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return nil, nil, err
	}
	infos, dirs, errs := kvm.ListTemplates(launch.TemplatesDir(state))
	rows := make([]templateRow, len(infos))
	for i := range infos {
		rows[i] = templateRow{ID: filepath.Base(dirs[i]), Dir: dirs[i], Disk: diskUsage(dirs[i]), TemplateInfo: infos[i]}
	}
	return rows, errs, nil
}

// diskUsage is the bytes a template's files take on disk (RAM is sparse).
func diskUsage(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += statBlocks(fi)
		}
	}
	return n
}

func runTemplateList(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %q", fs.Args())
	}
	rows, errs, err := listTemplates(env)
	if err != nil {
		return err
	}
	for _, e := range errs {
		fmt.Fprintf(env.Stderr, "launcher: warning: %v\n", e)
	}
	if *asJSON {
		if rows == nil {
			rows = []templateRow{}
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(env.Stdout, "no templates (launcher template create makes one)")
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tACCEL\tCPUS\tMEMORY\tFOR\tON DISK\tCREATED\tKERNEL")
	for _, r := range rows {
		kind := "run"
		if r.Recipe.PodSlots > 0 {
			kind = fmt.Sprintf("pods (%d slots)", r.Recipe.PodSlots)
		}
		if r.Recipe.Net {
			kind += " with network"
		} else {
			kind += " without network"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d MiB\t%s\t%.1f MiB\t%s\t%.19s\n", r.Name, r.ID, r.Recipe.Accel, r.Recipe.CPUs, r.Recipe.MemoryMiB,
			kind, float64(r.Disk)/(1<<20), r.Created.Format("2006-01-02 15:04"), r.Recipe.Kernel)
	}
	return tw.Flush()
}

func runTemplateInspect(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("give one template NAME (launcher template ls lists them)")
	}
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return err
	}
	dir, info, err := launch.FindTemplate(launch.TemplatesDir(state), fs.Arg(0))
	if err != nil {
		return err
	}
	row := templateRow{ID: filepath.Base(dir), Dir: dir, Disk: diskUsage(dir), TemplateInfo: info}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(row)
}

func runTemplateRemove(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("give the NAME of each template to remove (launcher template ls lists them)")
	}
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return err
	}
	for _, n := range fs.Args() {
		dir, err := launch.RemoveTemplate(state, n)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "removed template %s (%s)\n", n, dir)
	}
	return nil
}

func statBlocks(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
