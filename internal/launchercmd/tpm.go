package launchercmd

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// tpmInfo is what `launcher tpm info` reports.
type tpmInfo struct {
	Spec            string `json:"spec"`
	Kind            string `json:"kind"`
	ManagedPID      int    `json:"managed_pid,omitempty"`
	ManagedCARoot   string `json:"managed_ca_root,omitempty"`
	ManagedCAInter  string `json:"managed_ca_intermediate,omitempty"`
	Manufacturer    string `json:"manufacturer"`
	Vendor          string `json:"vendor"`
	FirmwareVersion string `json:"firmware_version"`
	EKFingerprint   string `json:"ek_fingerprint"` // SHA-256 of the EK's SubjectPublicKeyInfo
	// NodeID is the name attestd gives this host (SHA-256 of the EK's
	// TPMT_PUBLIC): what --ek-allow lists and policies' node_id holds.
	NodeID         string       `json:"node_id"`
	EKCertificate  *tpmCertInfo `json:"ek_certificate,omitempty"`
	AK             *tpmKeyInfo  `json:"ak,omitempty"`
	LaunchPCR      int          `json:"launch_pcr"`
	LaunchPCRValue string       `json:"launch_pcr_value"`
}

type tpmCertInfo struct {
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// Verified is set when the certificate chains to the managed swtpm's CA.
	Verified string `json:"verified,omitempty"`
}

type tpmKeyInfo struct {
	Handle      string `json:"handle"`
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Error       string `json:"error,omitempty"`
}

// fingerprint is "sha256:" + hex SHA-256 of the key's DER SubjectPublicKeyInfo.
func fingerprint(public []byte) (string, error) {
	p, err := verify.ParsePublic(public)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(p.Key)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(h[:]), nil
}

var tpmInfoCommand = &cli.Command{
	Name:    "tpm info",
	Summary: "show which TPM is used, its EK and AK fingerprints and the launch PCR value (creates no keys)",
	Usage:   "[--tpm SPEC] [--pcr N] [--json]",
	Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
		spec := fs.String("tpm", env.Getenv("BULWARK_TPM"), "host TPM: /dev/tpmrm0, swtpm:DIR, tcp:HOST:PORT or sim; default /dev/tpmrm0 or the managed swtpm (env BULWARK_TPM)")
		pcr := fs.Int("pcr", limits.DefaultLaunchPCR, "the launch PCR")
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return cli.Usagef("unexpected arguments: %q", fs.Args())
		}
		if limits.CheckLaunchPCR(*pcr) != nil {
			return cli.Usagef("--pcr %d: want %d..%d, the launch PCR (attestd's --launch-pcr)", *pcr, limits.MinLaunchPCR, limits.MaxPCR)
		}
		t, err := tpm.OpenWith(ctx, *spec, tpm.Options{Getenv: env.Getenv})
		if err != nil {
			return err
		}
		defer t.Close()
		info, err := collectTPMInfo(ctx, t, *pcr)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(env.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(info)
		}
		printTPMInfo(env, info)
		return nil
	},
}

var tpmStopCommand = &cli.Command{
	Name:    "tpm stop",
	Summary: "stop the managed swtpm daemon (its state, and so the TPM's identity, stays; the next start is a reboot)",
	Usage:   "[--tpm swtpm:DIR]",
	Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
		spec := fs.String("tpm", env.Getenv("BULWARK_TPM"), "the managed swtpm, swtpm:DIR; default the one in the state directory (env BULWARK_TPM)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return cli.Usagef("unexpected arguments: %q", fs.Args())
		}
		var dir string
		if *spec == "" {
			d, err := statedir.Dir(env.Getenv)
			if err != nil {
				return err
			}
			dir = filepath.Join(d, "swtpm")
		} else {
			s, err := tpm.ParseSpec(*spec, env.Getenv)
			if err != nil {
				return err
			}
			if s.Kind != tpm.KindManaged {
				return cli.Usagef("--tpm %s is not a managed swtpm (swtpm:DIR)", *spec)
			}
			dir = s.Path
		}
		pid, running := tpm.ManagedPID(dir)
		if !running {
			fmt.Fprintf(env.Stdout, "managed swtpm in %s: not running\n", dir)
			return nil
		}
		if err := tpm.StopManaged(dir); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "managed swtpm in %s: stopped (pid %d)\n", dir, pid)
		return nil
	},
}

func collectTPMInfo(ctx context.Context, t *tpm.TPM, pcr int) (*tpmInfo, error) {
	s := t.Spec()
	info := &tpmInfo{Spec: s.String(), Kind: string(s.Kind), LaunchPCR: pcr}
	if m := t.Managed(); m != nil {
		info.ManagedPID = m.PID
		info.ManagedCARoot, info.ManagedCAInter = tpm.ManagedCA(m.Dir)
	}
	id, err := t.Info(ctx)
	if err != nil {
		return nil, err
	}
	info.Manufacturer, info.Vendor, info.FirmwareVersion = id.Manufacturer, id.Vendor, id.FirmwareVersion
	ek, err := t.EKPublic(ctx)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	if info.EKFingerprint, err = fingerprint(ek); err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	info.NodeID = limits.NodeID(ek)
	certDER, err := t.EKCertificate(ctx)
	switch {
	case errors.Is(err, tpm.ErrNoEKCert):
	case err != nil:
		return nil, fmt.Errorf("EK certificate: %w", err)
	default:
		ci := &tpmCertInfo{}
		if c, err := x509.ParseCertificate(certDER); err == nil {
			ci.Subject, ci.Issuer = c.Subject.String(), c.Issuer.String()
		} else {
			ci.Subject = "unparseable: " + err.Error()
		}
		if info.ManagedCARoot != "" {
			ci.Verified = verifyManagedEKCert(certDER, ek, info.ManagedCARoot, info.ManagedCAInter)
		}
		info.EKCertificate = ci
	}
	ak, err := t.LoadAK(ctx)
	switch {
	case errors.Is(err, tpm.ErrNoAK):
	case errors.Is(err, tpm.ErrHandleInUse):
		info.AK = &tpmKeyInfo{Handle: fmt.Sprintf("0x%08x", tpm.AKHandle), Error: err.Error()}
	case err != nil:
		return nil, err
	default:
		fp, err := fingerprint(ak.Public)
		if err != nil {
			return nil, fmt.Errorf("AK: %w", err)
		}
		info.AK = &tpmKeyInfo{Handle: fmt.Sprintf("0x%08x", ak.Handle), Name: hex.EncodeToString(ak.Name), Fingerprint: fp}
	}
	vals, err := t.ReadPCRs(ctx, pcr)
	if err != nil {
		return nil, err
	}
	info.LaunchPCRValue = hex.EncodeToString(vals[pcr])
	return info, nil
}

func verifyManagedEKCert(certDER, ek []byte, root, inter string) string {
	roots, err := loadPool(root)
	if err != nil {
		return "not checked: " + err.Error()
	}
	inters, err := loadPool(inter)
	if err != nil {
		return "not checked: " + err.Error()
	}
	if _, err := verify.VerifyEKCertificate(certDER, ek, verify.EKCertOptions{Roots: roots, Intermediates: inters}); err != nil {
		return "FAILED: " + err.Error()
	}
	return "chains to the managed swtpm's CA and certifies the EK"
}

func loadPool(path string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	b, err := fsutil.ReadFileLimit(path, 1<<20)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return pool, nil
}

func printTPMInfo(env *cli.Env, i *tpmInfo) {
	w := env.Stdout
	desc := i.Kind
	if i.ManagedPID != 0 {
		desc = fmt.Sprintf("managed swtpm, pid %d", i.ManagedPID)
	}
	fmt.Fprintf(w, "TPM:          %s (%s)\n", i.Spec, desc)
	fmt.Fprintf(w, "Manufacturer: %s  vendor %q  firmware %s\n", i.Manufacturer, i.Vendor, i.FirmwareVersion)
	fmt.Fprintf(w, "EK:           RSA-2048 (TCG template L-1)  %s\n", i.EKFingerprint)
	fmt.Fprintf(w, "Node id:      %s  (attestd's name for this host: --ek-allow, policies' node_id)\n", i.NodeID)
	if c := i.EKCertificate; c != nil {
		fmt.Fprintf(w, "EK cert:      subject %q, issuer %q\n", c.Subject, c.Issuer)
		if c.Verified != "" {
			fmt.Fprintf(w, "              %s\n", c.Verified)
		}
	} else {
		fmt.Fprintf(w, "EK cert:      none in NV 0x%08x\n", tpm.EKCertIndex)
	}
	if i.ManagedCARoot != "" {
		fmt.Fprintf(w, "EK CA:        root %s\n              intermediate %s\n", i.ManagedCARoot, i.ManagedCAInter)
	}
	if i.AK != nil && i.AK.Error != "" {
		fmt.Fprintf(w, "AK:           unusable: %s\n", i.AK.Error)
	} else if i.AK != nil {
		fmt.Fprintf(w, "AK:           ECC P-256 at %s  %s\n              name %s\n", i.AK.Handle, i.AK.Fingerprint, i.AK.Name)
	} else {
		fmt.Fprintf(w, "AK:           not created yet (at 0x%08x; 'launcher enroll' creates it)\n", tpm.AKHandle)
	}
	fmt.Fprintf(w, "Launch PCR:   %d = %s\n", i.LaunchPCR, strings.ToLower(i.LaunchPCRValue))
}
