package launchercmd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

var measureCommand = &cli.Command{
	Name:    "measure",
	Summary: "print the digests of a kernel, initrd, command line and image, and the launch event they make, without booting",
	Usage:   "--kernel FILE [--initrd FILE] [--cmdline STRING] [--image DIR|TAR [--image-manifest DIGEST] [--platform OS/ARCH]] [--alg sha256|sha384] [--policy NAME] [--pcr N] [--json]",
	Run:     runMeasure,
}

// Placeholders for what only a real launch knows; docs/measure.md.
const placeholderSandboxID = "00000000000000000000000000000000"

// measureFile is one measured file in the JSON output.
type measureFile struct {
	Path   string `json:"path"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// measureOutput is the --json document. Field names are stable.
type measureOutput struct {
	Alg     string       `json:"alg"`
	Kernel  measureFile  `json:"kernel"`
	Initrd  *measureFile `json:"initrd,omitempty"`
	Cmdline struct {
		Value  string `json:"value"`
		Digest string `json:"digest"`
	} `json:"cmdline"`
	Image *measure.Image `json:"image,omitempty"`
	// Event is the launch event these artifacts make, with placeholders
	// for the fields only a launch knows (listed in Placeholders).
	Event        *measure.LaunchEvent `json:"event"`
	Placeholders []string             `json:"placeholders"`
	// EventContent is the hex CEL content TLV (docs/eventlog.md) and
	// EventDigest its digest, the value extended into PCR.
	EventContent string `json:"event_content"`
	EventDigest  string `json:"event_digest"`
	PCR          int    `json:"pcr"`
}

func runMeasure(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	kernel := fs.String("kernel", "", "guest kernel (bzImage or ELF vmlinux), measured as its exact bytes (required)")
	initrd := fs.String("initrd", "", "initrd / initramfs file")
	cmdline := fs.String("cmdline", "", "the exact kernel command line")
	image := fs.String("image", "", "OCI image: a layout directory, an OCI archive or a docker-save tarball")
	manifest := fs.String("image-manifest", "", "pick this manifest digest from an image index with several")
	platform := fs.String("platform", "", "pick this platform (os/arch) from an image index (default "+measure.DefaultPlatform+")")
	algName := fs.String("alg", "sha256", "digest algorithm for kernel, initrd, command line and the event digest: sha256 or sha384")
	policy := fs.String("policy", "", "policy name recorded in the launch event")
	pcr := fs.Int("pcr", limits.DefaultLaunchPCR, fmt.Sprintf("launch PCR the event would be extended into, %d..%d (attestd's --launch-pcr)", limits.MinLaunchPCR, limits.MaxPCR))
	asJSON := fs.Bool("json", false, "print JSON (stable field names) instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkImageRef(*image); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %q", fs.Args())
	}
	if *kernel == "" {
		return cli.Usagef("--kernel FILE is required")
	}
	alg, err := measure.ParseAlg(*algName)
	if err != nil {
		return cli.Usagef("--alg: %v", err)
	}
	if err := checkLaunchPCR(*pcr); err != nil { // as 'launcher run' and attestd's --launch-pcr
		return err
	}
	if *image == "" && (*manifest != "" || *platform != "") {
		return cli.Usagef("--image-manifest and --platform need --image")
	}

	out := measureOutput{Alg: alg.String(), PCR: *pcr, Placeholders: []string{"sandbox_id", "guest_public_key", "time"}}
	d, n, err := measure.DigestFile(ctx, *kernel, alg)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	out.Kernel = measureFile{Path: *kernel, Digest: d, Size: n}
	if *initrd != "" {
		d, n, err := measure.DigestFile(ctx, *initrd, alg)
		if err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
		out.Initrd = &measureFile{Path: *initrd, Digest: d, Size: n}
	}
	out.Cmdline.Value = *cmdline
	out.Cmdline.Digest = measure.DigestCmdline(alg, *cmdline)
	if *image != "" {
		im, err := measure.OpenImage(ctx, *image, measure.ImageOptions{Manifest: *manifest, Platform: *platform})
		if err != nil {
			return err
		}
		im.Close()
		out.Image = im
	}

	ev := &measure.LaunchEvent{
		SandboxID:     placeholderSandboxID,
		Policy:        *policy,
		Kernel:        out.Kernel.Digest,
		Cmdline:       *cmdline,
		CmdlineDigest: out.Cmdline.Digest,
		Time:          time.Unix(0, 0).UTC(),
	}
	if out.Initrd != nil {
		ev.Initrd = out.Initrd.Digest
	}
	if out.Image != nil {
		ev.Image, ev.ImageConfig = out.Image.ManifestDigest, out.Image.ConfigDigest
	}
	content, err := measure.EventContent(ev)
	if err != nil {
		return fmt.Errorf("launch event: %w", err)
	}
	sum, err := measure.EventDigest(ev, alg)
	if err != nil {
		return err
	}
	out.Event = ev
	out.EventContent = hex.EncodeToString(content)
	out.EventDigest = measure.FormatDigest(alg, sum)

	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return printMeasureTable(env.Stdout, &out)
}

func printMeasureTable(w io.Writer, o *measureOutput) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ARTIFACT\tDIGEST\tSIZE\tSOURCE")
	fmt.Fprintf(tw, "kernel\t%s\t%d\t%s\n", o.Kernel.Digest, o.Kernel.Size, o.Kernel.Path)
	if o.Initrd != nil {
		fmt.Fprintf(tw, "initrd\t%s\t%d\t%s\n", o.Initrd.Digest, o.Initrd.Size, o.Initrd.Path)
	}
	fmt.Fprintf(tw, "cmdline\t%s\t%d\t%q\n", o.Cmdline.Digest, len(o.Cmdline.Value), o.Cmdline.Value)
	if im := o.Image; im != nil {
		fmt.Fprintf(tw, "image\t%s\t%d\t%s (%s, %s%s)\n", im.ManifestDigest, len(im.RawManifest()), im.Source, im.Format, im.Platform, map[bool]string{true: ", manifest rebuilt: " + im.ManifestRecovery}[im.SynthesizedManifest])
		fmt.Fprintf(tw, "image config\t%s\t%d\t%s\n", im.ConfigDigest, len(im.RawConfig()), "config blob")
		for i, l := range im.Layers {
			kind := l.MediaType
			if l.StoredDigest != "" {
				kind += ", saved uncompressed as " + l.StoredDigest
			}
			fmt.Fprintf(tw, "layer %d\t%s\t%d\t%s\n", i, l.Digest, l.Size, kind)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	e := o.Event
	fmt.Fprintf(w, "\nLaunch event (CEL content type 0x%02x, docs/eventlog.md):\n", measure.LaunchEventContentType)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  sandbox_id\t%s  (placeholder: chosen at launch)\n", e.SandboxID)
	fmt.Fprintf(tw, "  policy\t%q\n", e.Policy)
	fmt.Fprintf(tw, "  kernel\t%s\n", e.Kernel)
	fmt.Fprintf(tw, "  initrd\t%s\n", orNone(e.Initrd))
	fmt.Fprintf(tw, "  cmdline\t%q\n", e.Cmdline)
	fmt.Fprintf(tw, "  cmdline_digest\t%s\n", e.CmdlineDigest)
	fmt.Fprintf(tw, "  image\t%s\n", orNone(e.Image))
	fmt.Fprintf(tw, "  image_config\t%s\n", orNone(e.ImageConfig))
	fmt.Fprintf(tw, "  args\t%s\n", orNone(strings.Join(e.Args, " ")))
	fmt.Fprintf(tw, "  guest_public_key\t%s  (placeholder: the guest's key, known at launch)\n", orNone(hex.EncodeToString(e.GuestPublicKey)))
	fmt.Fprintf(tw, "  time\t%s  (placeholder: launch time)\n", e.Time.Format(time.RFC3339Nano))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nevent digest (%s, extended into PCR %d): %s\n", o.Alg, o.PCR, o.EventDigest)
	fmt.Fprintln(w, "A real launch fills in the placeholders, so its event digest differs; the artifact digests do not.")
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
