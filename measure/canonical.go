package measure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// The canonical encoding of a LaunchEvent (docs/eventlog.md, "Launch event
// content"): a sequence of field TLVs, each present exactly once, in this
// order. A TLV is a 1-byte type, a 4-byte big-endian length and the value.
const (
	fieldVersion        = 0x01 // 1 byte: launchEventVersion
	fieldSandboxID      = 0x02 // UTF-8
	fieldPolicy         = 0x03 // UTF-8
	fieldKernel         = 0x04 // digest string
	fieldInitrd         = 0x05 // digest string or empty
	fieldCmdline        = 0x06 // UTF-8, exact bytes
	fieldCmdlineDigest  = 0x07 // digest string
	fieldImage          = 0x08 // digest string or empty
	fieldImageConfig    = 0x09 // digest string or empty
	fieldArgs           = 0x0A // nested TLVs of type argTag, in order
	fieldGuestPublicKey = 0x0B // raw bytes
	fieldTime           = 0x0C // int64 BE Unix seconds || uint32 BE nanoseconds
	// Version 2 appends these, in this order.
	fieldImageDisk      = 0x0D // digest string or empty
	fieldTemplateRecipe = 0x0E // digest string or empty
	fieldTemplateRAM    = 0x0F // digest string or empty
	fieldTemplateState  = 0x10 // digest string or empty
	// Version 3 appends these, in this order.
	fieldEnvKeys    = 0x11 // nested TLVs of type argTag, sorted, each once
	fieldEnvDigest  = 0x12 // digest string or empty
	fieldWorkingDir = 0x13 // UTF-8 or empty
	fieldUser       = 0x14 // UTF-8 or empty
	fieldNetwork    = 0x15 // "" or "user"
	fieldPorts      = 0x16 // nested TLVs of type argTag, in order
	fieldVolumes    = 0x17 // nested TLVs of type argTag, in order

	argTag = 0x01

	// Version 1 ends with fieldTime; version 2 adds the image disk and the
	// template; version 3 the workload's environment, working directory,
	// user and network. An event is encoded in the lowest version that
	// holds its values, so events without the newer fields keep their old
	// bytes.
	launchEventVersion1 = 1
	launchEventVersion2 = 2
	launchEventVersion3 = 3
)

// Limits on launch event fields; anything larger is refused on both
// encoding and decoding.
const (
	// MaxEventSize bounds one encoded launch event content (TLV included).
	MaxEventSize   = 64 << 10
	maxSandboxID   = 128
	maxPolicyName  = 256
	maxCmdline     = 4096
	maxArgs        = 256
	maxArgLen      = 4096
	maxGuestPubKey = 1024
)

// eventFieldNames lists the LaunchEvent struct fields the encoding covers;
// a test fails if LaunchEvent gains a field that is not listed here, so no
// field can be added without being measured.
var eventFieldNames = []string{"SandboxID", "Policy", "Kernel", "Initrd", "Cmdline", "CmdlineDigest",
	"Image", "ImageConfig", "Args", "GuestPublicKey", "Time",
	"ImageDisk", "TemplateRecipe", "TemplateRAM", "TemplateState",
	"EnvKeys", "EnvDigest", "WorkingDir", "User", "Network", "Ports", "Volumes"}

// v2 reports whether e needs the version 2 encoding.
func (e *LaunchEvent) v2() bool {
	return e.ImageDisk != "" || e.TemplateRecipe != "" || e.TemplateRAM != "" || e.TemplateState != ""
}

// Validate checks that e can be encoded canonically: required fields are
// present, digests are well-formed, CmdlineDigest is the digest of Cmdline,
// and every field is within its size limit.
func (e *LaunchEvent) Validate() error {
	if err := checkSandboxID(e.SandboxID); err != nil {
		return fmt.Errorf("launch event: %w", err)
	}
	if err := checkText("policy", e.Policy, maxPolicyName); err != nil {
		return err
	}
	if err := checkText("cmdline", e.Cmdline, maxCmdline); err != nil {
		return err
	}
	digests := []struct {
		name, v  string
		optional bool
	}{
		{"kernel", e.Kernel, false},
		{"initrd", e.Initrd, true},
		{"cmdline_digest", e.CmdlineDigest, false},
		{"image", e.Image, true},
		{"image_config", e.ImageConfig, true},
		{"image_disk", e.ImageDisk, true},
		{"template_recipe", e.TemplateRecipe, true},
		{"template_ram", e.TemplateRAM, true},
		{"template_state", e.TemplateState, true},
	}
	for _, d := range digests {
		if d.v == "" && d.optional {
			continue
		}
		if _, _, err := ParseDigest(d.v); err != nil {
			return fmt.Errorf("launch event: %s: %w", d.name, err)
		}
	}
	if (e.Image == "") != (e.ImageConfig == "") {
		return errors.New("launch event: image and image_config must both be set or both be empty")
	}
	if e.ImageDisk != "" && e.Image == "" {
		return errors.New("launch event: image_disk without an image")
	}
	if n := countSet(e.TemplateRecipe, e.TemplateRAM, e.TemplateState); n != 0 && n != 3 {
		return errors.New("launch event: template_recipe, template_ram and template_state must all be set (a clone) or all be empty (a cold boot)")
	}
	a, _, _ := ParseDigest(e.CmdlineDigest)
	if want := DigestCmdline(a, e.Cmdline); want != e.CmdlineDigest {
		return fmt.Errorf("launch event: cmdline_digest %s is not the digest of cmdline (%s)", e.CmdlineDigest, want)
	}
	if len(e.Args) > maxArgs {
		return fmt.Errorf("launch event: more than %d args", maxArgs)
	}
	for i, arg := range e.Args {
		if err := checkText(fmt.Sprintf("args[%d]", i), arg, maxArgLen); err != nil {
			return err
		}
	}
	if err := e.checkWorkload(); err != nil {
		return err
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("launch event: time: year %d outside 1..9999", y)
	}
	if len(e.GuestPublicKey) > maxGuestPubKey {
		return fmt.Errorf("launch event: guest_public_key longer than %d bytes", maxGuestPubKey)
	}
	return nil
}

func countSet(vs ...string) int {
	n := 0
	for _, v := range vs {
		if v != "" {
			n++
		}
	}
	return n
}

// checkText accepts valid UTF-8 without NUL bytes, up to max bytes.
func checkText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("launch event: %s longer than %d bytes", field, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("launch event: %s is not valid UTF-8", field)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("launch event: %s contains a NUL byte", field)
		}
	}
	return nil
}

func appendTLV(b []byte, typ byte, v []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// MarshalCanonical returns the canonical encoding of e (the value of the
// launch event content TLV, without its own type and length). Equal events
// encode to equal bytes. Time is encoded in UTC at nanosecond precision; the
// monotonic clock reading and location are not part of the event.
func (e *LaunchEvent) MarshalCanonical() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var b []byte
	version := byte(launchEventVersion1)
	switch {
	case e.v3():
		version = launchEventVersion3
	case e.v2():
		version = launchEventVersion2
	}
	b = appendTLV(b, fieldVersion, []byte{version})
	b = appendTLV(b, fieldSandboxID, []byte(e.SandboxID))
	b = appendTLV(b, fieldPolicy, []byte(e.Policy))
	b = appendTLV(b, fieldKernel, []byte(e.Kernel))
	b = appendTLV(b, fieldInitrd, []byte(e.Initrd))
	b = appendTLV(b, fieldCmdline, []byte(e.Cmdline))
	b = appendTLV(b, fieldCmdlineDigest, []byte(e.CmdlineDigest))
	b = appendTLV(b, fieldImage, []byte(e.Image))
	b = appendTLV(b, fieldImageConfig, []byte(e.ImageConfig))
	b = appendTLV(b, fieldArgs, appendList(nil, e.Args))
	b = appendTLV(b, fieldGuestPublicKey, e.GuestPublicKey)
	var ts [12]byte
	binary.BigEndian.PutUint64(ts[:8], uint64(e.Time.Unix()))
	binary.BigEndian.PutUint32(ts[8:], uint32(e.Time.Nanosecond()))
	b = appendTLV(b, fieldTime, ts[:])
	if version >= launchEventVersion2 {
		b = appendTLV(b, fieldImageDisk, []byte(e.ImageDisk))
		b = appendTLV(b, fieldTemplateRecipe, []byte(e.TemplateRecipe))
		b = appendTLV(b, fieldTemplateRAM, []byte(e.TemplateRAM))
		b = appendTLV(b, fieldTemplateState, []byte(e.TemplateState))
	}
	if version >= launchEventVersion3 {
		b = appendTLV(b, fieldEnvKeys, appendList(nil, e.EnvKeys))
		b = appendTLV(b, fieldEnvDigest, []byte(e.EnvDigest))
		b = appendTLV(b, fieldWorkingDir, []byte(e.WorkingDir))
		b = appendTLV(b, fieldUser, []byte(e.User))
		b = appendTLV(b, fieldNetwork, []byte(e.Network))
		b = appendTLV(b, fieldPorts, appendList(nil, e.Ports))
		b = appendTLV(b, fieldVolumes, appendList(nil, e.Volumes))
	}
	if len(b)+tlvHeader > MaxEventSize {
		return nil, fmt.Errorf("launch event: encoding is %d bytes, more than %d", len(b)+tlvHeader, MaxEventSize)
	}
	return b, nil
}

const tlvHeader = 5

// appendList appends list as nested TLVs of type argTag.
func appendList(b []byte, list []string) []byte {
	for _, a := range list {
		b = appendTLV(b, argTag, []byte(a))
	}
	return b
}

// readList decodes nested TLVs of type argTag, at most max of them.
func readList(v []byte, name string, max int) ([]string, error) {
	var list []string
	r := &tlvReader{b: v}
	for !r.done() {
		if len(list) == max {
			return nil, fmt.Errorf("launch event: more than %d %s", max, name)
		}
		a, err := r.expect(argTag, fmt.Sprintf("%s[%d]", name, len(list)))
		if err != nil {
			return nil, fmt.Errorf("launch event: %w", err)
		}
		list = append(list, string(a))
	}
	return list, nil
}

// tlvReader reads TLVs from an in-memory slice, refusing any length that
// runs past the end.
type tlvReader struct {
	b   []byte
	off int
}

func (r *tlvReader) done() bool { return r.off == len(r.b) }

func (r *tlvReader) next() (typ byte, v []byte, err error) {
	if len(r.b)-r.off < tlvHeader {
		return 0, nil, fmt.Errorf("truncated TLV header at offset %d", r.off)
	}
	typ = r.b[r.off]
	n := binary.BigEndian.Uint32(r.b[r.off+1:])
	if uint64(n) > uint64(len(r.b)-r.off-tlvHeader) {
		return 0, nil, fmt.Errorf("TLV at offset %d: length %d runs past the end (%d bytes left)", r.off, n, len(r.b)-r.off-tlvHeader)
	}
	start := r.off + tlvHeader
	r.off = start + int(n)
	return typ, r.b[start:r.off:r.off], nil
}

func (r *tlvReader) expect(want byte, name string) ([]byte, error) {
	typ, v, err := r.next()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if typ != want {
		return nil, fmt.Errorf("%s: want field type 0x%02x, got 0x%02x", name, want, typ)
	}
	return v, nil
}

// UnmarshalLaunchEvent strictly decodes the canonical encoding produced by
// MarshalCanonical: every field exactly once and in order, no trailing
// bytes, and the decoded event must pass Validate and re-encode to the same
// bytes.
func UnmarshalLaunchEvent(b []byte) (*LaunchEvent, error) {
	if len(b)+tlvHeader > MaxEventSize {
		return nil, fmt.Errorf("launch event: %d bytes, more than %d", len(b), MaxEventSize)
	}
	r := &tlvReader{b: b}
	var e LaunchEvent
	v, err := r.expect(fieldVersion, "version")
	if err != nil {
		return nil, fmt.Errorf("launch event: %w", err)
	}
	if len(v) != 1 || v[0] < launchEventVersion1 || v[0] > launchEventVersion3 {
		return nil, fmt.Errorf("launch event: unsupported version %x (want %d..%d)", v, launchEventVersion1, launchEventVersion3)
	}
	version := v[0]
	strs := []struct {
		typ  byte
		name string
		dst  *string
	}{
		{fieldSandboxID, "sandbox_id", &e.SandboxID},
		{fieldPolicy, "policy", &e.Policy},
		{fieldKernel, "kernel", &e.Kernel},
		{fieldInitrd, "initrd", &e.Initrd},
		{fieldCmdline, "cmdline", &e.Cmdline},
		{fieldCmdlineDigest, "cmdline_digest", &e.CmdlineDigest},
		{fieldImage, "image", &e.Image},
		{fieldImageConfig, "image_config", &e.ImageConfig},
	}
	for _, s := range strs {
		v, err := r.expect(s.typ, s.name)
		if err != nil {
			return nil, fmt.Errorf("launch event: %w", err)
		}
		*s.dst = string(v)
	}
	v, err = r.expect(fieldArgs, "args")
	if err != nil {
		return nil, fmt.Errorf("launch event: %w", err)
	}
	if e.Args, err = readList(v, "args", maxArgs); err != nil {
		return nil, err
	}
	v, err = r.expect(fieldGuestPublicKey, "guest_public_key")
	if err != nil {
		return nil, fmt.Errorf("launch event: %w", err)
	}
	if len(v) > 0 {
		e.GuestPublicKey = append([]byte(nil), v...)
	}
	v, err = r.expect(fieldTime, "time")
	if err != nil {
		return nil, fmt.Errorf("launch event: %w", err)
	}
	if len(v) != 12 {
		return nil, fmt.Errorf("launch event: time: want 12 bytes, got %d", len(v))
	}
	sec := int64(binary.BigEndian.Uint64(v[:8]))
	nsec := binary.BigEndian.Uint32(v[8:])
	if nsec >= 1e9 {
		return nil, fmt.Errorf("launch event: time: nanoseconds %d out of range", nsec)
	}
	e.Time = time.Unix(sec, int64(nsec)).UTC()
	if version >= launchEventVersion2 {
		for _, s := range []struct {
			typ  byte
			name string
			dst  *string
		}{
			{fieldImageDisk, "image_disk", &e.ImageDisk},
			{fieldTemplateRecipe, "template_recipe", &e.TemplateRecipe},
			{fieldTemplateRAM, "template_ram", &e.TemplateRAM},
			{fieldTemplateState, "template_state", &e.TemplateState},
		} {
			v, err := r.expect(s.typ, s.name)
			if err != nil {
				return nil, fmt.Errorf("launch event: %w", err)
			}
			*s.dst = string(v)
		}
	}
	if version >= launchEventVersion3 {
		if err := e.unmarshalWorkload(r); err != nil {
			return nil, err
		}
	}
	if !r.done() {
		return nil, fmt.Errorf("launch event: %d trailing bytes after the last field", len(b)-r.off)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	// Belt and braces: the structure is fixed, so decoding is one-to-one;
	// re-encoding proves it for every accepted input.
	again, err := e.MarshalCanonical()
	if err != nil {
		return nil, err
	}
	if string(again) != string(b) {
		return nil, errors.New("launch event: not in canonical form")
	}
	return &e, nil
}

// unmarshalWorkload reads the version 3 fields.
func (e *LaunchEvent) unmarshalWorkload(r *tlvReader) error {
	v, err := r.expect(fieldEnvKeys, "env_keys")
	if err != nil {
		return fmt.Errorf("launch event: %w", err)
	}
	if e.EnvKeys, err = readList(v, "env_keys", MaxEnv); err != nil {
		return err
	}
	for _, s := range []struct {
		typ  byte
		name string
		dst  *string
	}{
		{fieldEnvDigest, "env_digest", &e.EnvDigest},
		{fieldWorkingDir, "working_dir", &e.WorkingDir},
		{fieldUser, "user", &e.User},
		{fieldNetwork, "network", &e.Network},
	} {
		v, err := r.expect(s.typ, s.name)
		if err != nil {
			return fmt.Errorf("launch event: %w", err)
		}
		*s.dst = string(v)
	}
	if v, err = r.expect(fieldPorts, "ports"); err != nil {
		return fmt.Errorf("launch event: %w", err)
	}
	if e.Ports, err = readList(v, "ports", MaxPorts); err != nil {
		return err
	}
	if v, err = r.expect(fieldVolumes, "volumes"); err != nil {
		return fmt.Errorf("launch event: %w", err)
	}
	e.Volumes, err = readList(v, "volumes", MaxAllVolumes)
	return err
}
