package measure

import "time"

// LaunchEvent is the one canonical record the launcher writes for each
// sandbox it boots. Its digest (see the event log code in this package) is
// what is extended into the launch PCR; attestd replays the log of these
// events against the quoted PCR and judges the sandbox's one event against
// the policy named in it.
//
// Digests are strings "sha256:<64 hex>", the form OCI uses. The fields are
// the contract between launcher, attestd and policy: extend, never rename.
type LaunchEvent struct {
	// SandboxID is a random 128-bit hex id chosen by the launcher.
	SandboxID string `json:"sandbox_id"`
	// Policy names the admin policy this launch asks to be judged by.
	Policy string `json:"policy"`
	// Kernel is the digest of the exact kernel bytes handed to QEMU.
	Kernel string `json:"kernel"`
	// Initrd is the digest of the base initramfs (agent + modules), "" if none.
	Initrd string `json:"initrd,omitempty"`
	// Cmdline is the exact kernel command line and CmdlineDigest its digest.
	Cmdline       string `json:"cmdline"`
	CmdlineDigest string `json:"cmdline_digest"`
	// Image is the OCI image manifest digest (the image's identity) and
	// ImageConfig the digest of its config blob. Both "" when no image runs.
	Image       string `json:"image,omitempty"`
	ImageConfig string `json:"image_config,omitempty"`
	// Args replaces the image's entrypoint+cmd when the user gave a command
	// ("launcher run ... -- CMD"); empty means the image's own.
	Args []string `json:"args,omitempty"`
	// GuestPublicKey is the guest agent's ephemeral HPKE public key
	// (enclave/wrap, X25519, 32 bytes): secrets are released only to it.
	GuestPublicKey []byte `json:"guest_public_key"`
	// Time is when the launcher recorded the event (UTC).
	Time time.Time `json:"time"`
	// ImageDisk is the digest of the read-only disk that carried the
	// image's root filesystem to the guest (kvm.BuildImageDisk), built from
	// the layers of Image; "" when no image runs (and in version 1 events).
	ImageDisk string `json:"image_disk,omitempty"`
	// The template a clone resumed from: the digests of its recipe (the
	// launch parameters it was booted with, kvm.Recipe), of its guest RAM
	// and of its device state: exactly the bytes the clone resumed. All
	// three, or none for a cold boot.
	TemplateRecipe string `json:"template_recipe,omitempty"`
	TemplateRAM    string `json:"template_ram,omitempty"`
	TemplateState  string `json:"template_state,omitempty"`
	// The workload's inputs beside its command (version 3): the names of
	// the environment variables the launch set over the image's (sorted,
	// each once) and EnvDigest, the digest of the variables with their
	// values (EnvDigest; values are not recorded: they may be sensitive,
	// and a digest lets a policy pin them); the working directory and user
	// that replace the image's ("" = the image's own).
	EnvKeys    []string `json:"env_keys,omitempty"`
	EnvDigest  string   `json:"env_digest,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Network is the guest's network: "" (none, as in version 1 and 2
	// events) or "user" (QEMU user-mode networking); Ports are its port
	// forwards, each "HOSTIP:HOSTPORT:GUESTPORT/tcp" (see CanonicalPort).
	Network string   `json:"network,omitempty"`
	Ports   []string `json:"ports,omitempty"`
	// Volumes are the mounts the launch adds to the workload's root, in
	// the order given: read-only disks built from host directories, by
	// digest ("ro:TARGET:DIGEST"), writable tmpfs scratch
	// ("tmpfs:TARGET:BYTES") and writable scratch disks
	// ("scratch:TARGET:BYTES"); see Volume.
	Volumes []string `json:"volumes,omitempty"`
}

// Cloned reports whether the sandbox resumed from a template.
func (e *LaunchEvent) Cloned() bool { return e.TemplateRAM != "" }
