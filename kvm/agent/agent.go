// Package agent is the Bulwark guest agent: PID 1 (/init) inside a sandbox
// VM. It sets up the guest (pseudo filesystems, kernel modules), finds the
// virtio-serial port "bulwark.0", sends an ephemeral public key to the host,
// opens the secrets the host forwards into tmpfs /run/secrets, runs the
// image's workload in a chroot of /rootfs, streams its output and exit code
// back and powers the VM off. Whatever goes wrong, it powers off: the VM
// never outlives the agent.
//
// The protocol is kvm/channel; the initramfs layout is described in
// docs/sandbox.md. The binary is cmd/bulwark-agent (static, CGO_ENABLED=0).
package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// DefaultPath is the PATH a workload gets when its image sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// HostMessage is what the host may send: exactly one of Identity, Start,
// Abort, Stop, Ping, Exec, Reattach, Stdin, Revoke, Rotate, Resize,
// ExecStdin, ExecResize or ExecSignal.
type HostMessage struct {
	Identity *channel.Identity
	Start    *channel.Start
	Abort    *channel.Abort
	Stop     *channel.Stop
	Ping     *channel.Ping
	Exec     *channel.Exec
	Reattach *channel.Reattach
	// Stdin is input for the workload; StdinEOF marks its end (an empty
	// STDIN frame).
	Stdin    []byte
	StdinEOF bool
	Revoke   *channel.Revoke
	Rotate   *channel.Rotate

	// Input for a pod container's own process (ContainerStart.Stdin; no
	// data: its end) and the new size of its terminal (.TTY).
	ContainerStdin  *channel.ContainerInput
	ContainerResize *channel.ContainerResize
	// A pod sandbox's containers (Start.Pod).
	ContainerStart *channel.ContainerStart
	ContainerKill  *channel.ContainerKill
	// ContainerRemove: forget an ended container of the pod.
	ContainerRemove *channel.ContainerRemove
	// Resize is the new size of the workload's terminal (Start.TTY).
	Resize *channel.WindowSize
	// Input for an exec (Exec.Stdin; no data: its end) and the new size of
	// an exec's terminal (Exec.TTY).
	ExecStdin  *channel.ExecInput
	ExecResize *channel.ExecResize
	// ExecSignal is a signal for an exec's process group.
	ExecSignal *channel.ExecSignal
}

// ReadHostMessage reads and validates the host's next frame. Anything but a
// valid IDENTITY, START, ABORT, STOP, PING, EXEC, REATTACH, STDIN, REVOKE,
// ROTATE, RESIZE, EXEC_STDIN, EXEC_RESIZE or EXEC_SIGNAL is an error.
func ReadHostMessage(r io.Reader) (HostMessage, error) {
	t, body, err := channel.ReadFrame(r)
	if err != nil {
		return HostMessage{}, fmt.Errorf("reading from host: %w", err)
	}
	switch t {
	case channel.TypeStart:
		var s channel.Start
		if err := channel.Decode(t, body, &s); err != nil {
			return HostMessage{}, err
		}
		if err := s.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Start: &s}, nil
	case channel.TypeAbort:
		var a channel.Abort
		if err := channel.Decode(t, body, &a); err != nil {
			return HostMessage{}, err
		}
		if len(a.Reason) > 4096 {
			a.Reason = a.Reason[:4096]
		}
		return HostMessage{Abort: &a}, nil
	case channel.TypeIdentity:
		var id channel.Identity
		if err := channel.Decode(t, body, &id); err != nil {
			return HostMessage{}, err
		}
		if err := id.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Identity: &id}, nil
	case channel.TypeStop:
		var st channel.Stop
		if err := channel.Decode(t, body, &st); err != nil {
			return HostMessage{}, err
		}
		if err := st.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Stop: &st}, nil
	case channel.TypePing:
		var p channel.Ping
		if err := channel.Decode(t, body, &p); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Ping: &p}, nil
	case channel.TypeExec:
		var x channel.Exec
		if err := channel.Decode(t, body, &x); err != nil {
			return HostMessage{}, err
		}
		if err := x.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Exec: &x}, nil
	case channel.TypeReattach:
		var r channel.Reattach
		if err := channel.Decode(t, body, &r); err != nil {
			return HostMessage{}, err
		}
		if err := r.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Reattach: &r}, nil
	case channel.TypeStdin:
		if len(body) > channel.MaxStdinChunk {
			return HostMessage{}, fmt.Errorf("STDIN frame of %d bytes, the limit is %d", len(body), channel.MaxStdinChunk)
		}
		return HostMessage{Stdin: body, StdinEOF: len(body) == 0}, nil
	case channel.TypeRevoke:
		var r channel.Revoke
		if err := channel.Decode(t, body, &r); err != nil {
			return HostMessage{}, err
		}
		if err := r.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Revoke: &r}, nil
	case channel.TypeRotate:
		var r channel.Rotate
		if err := channel.Decode(t, body, &r); err != nil {
			return HostMessage{}, err
		}
		if err := r.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Rotate: &r}, nil
	case channel.TypeContainerStart:
		var c channel.ContainerStart
		if err := channel.Decode(t, body, &c); err != nil {
			return HostMessage{}, err
		}
		if err := c.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ContainerStart: &c}, nil
	case channel.TypeContainerKill:
		var k channel.ContainerKill
		if err := channel.Decode(t, body, &k); err != nil {
			return HostMessage{}, err
		}
		if err := k.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ContainerKill: &k}, nil
	case channel.TypeContainerRemove:
		var r channel.ContainerRemove
		if err := channel.Decode(t, body, &r); err != nil {
			return HostMessage{}, err
		}
		if err := r.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ContainerRemove: &r}, nil
	case channel.TypeResize:
		var ws channel.WindowSize
		if err := channel.Decode(t, body, &ws); err != nil {
			return HostMessage{}, err
		}
		if err := ws.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{Resize: &ws}, nil
	case channel.TypeExecStdin:
		in, err := channel.DecodeExecInput(body)
		if err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ExecStdin: &in}, nil
	case channel.TypeExecResize:
		var r channel.ExecResize
		if err := channel.Decode(t, body, &r); err != nil {
			return HostMessage{}, err
		}
		if err := r.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ExecResize: &r}, nil
	case channel.TypeExecSignal:
		var sig channel.ExecSignal
		if err := channel.Decode(t, body, &sig); err != nil {
			return HostMessage{}, err
		}
		if err := sig.Validate(); err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ExecSignal: &sig}, nil
	}
	if t == channel.TypeContainerStdin || t == channel.TypeContainerResize {
		return readContainerInput(t, body)
	}
	return HostMessage{}, fmt.Errorf("unexpected %s frame from host", t)
}

// Identity is the uid, gid, supplementary groups and home directory a
// workload runs as.
type Identity struct {
	UID, GID uint32
	Home     string
	// Groups are the supplementary groups: none but, for a pod VM's
	// containers, PodSecretsGID.
	Groups []uint32
}

// groups is id.Groups for syscall.Credential (never nil: no groups).
func (id Identity) groups() []uint32 {
	return append([]uint32{}, id.Groups...)
}

// PodSecretsGID is the group of a pod VM's secrets: /run/secrets and its
// files belong to the pod's first container's user and this group, which
// is readable (0550, 0440) and which every container of the pod gets as a
// supplementary group, whatever its user. A sandbox of one workload keeps
// its secrets to its user alone (0500, 0400).
const PodSecretsGID = 1 << 30

// secretsAccess is who owns a sandbox's secret files and their mode.
type secretsAccess struct {
	owner Identity
	mode  os.FileMode
}

// secretsAccessFor is the access to the secrets of a workload running as
// id, or of a pod VM (pod) whose first container runs as id.
func secretsAccessFor(id Identity, pod bool) secretsAccess {
	if pod {
		return secretsAccess{owner: Identity{UID: id.UID, GID: PodSecretsGID}, mode: 0o440}
	}
	return secretsAccess{owner: Identity{UID: id.UID, GID: id.GID}, mode: 0o400}
}

// dirMode is the secrets directory's mode: searchable by whoever may read
// the files.
func (a secretsAccess) dirMode() os.FileMode {
	return a.mode | (a.mode&0o444)>>2
}

// ResolveUser turns an OCI config User ("", "uid", "uid:gid", "name",
// "name:group", ...) into numeric ids, reading passwd and group files of
// the image (paths inside root). A name that is not in the image is an error.
func ResolveUser(root, user string) (Identity, error) {
	id := Identity{Home: "/"}
	if user == "" {
		user = "0"
	}
	u, g, hasGroup := strings.Cut(user, ":")
	passwd := readColonFile(root, "/etc/passwd")
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		id.UID = uint32(n)
		for _, f := range passwd {
			if len(f) >= 6 && f[2] == u {
				if gid, err := strconv.ParseUint(f[3], 10, 32); err == nil && !hasGroup {
					id.GID = uint32(gid)
				}
				id.Home = f[5]
				break
			}
		}
	} else {
		found := false
		for _, f := range passwd {
			if len(f) >= 6 && f[0] == u {
				uid, err1 := strconv.ParseUint(f[2], 10, 32)
				gid, err2 := strconv.ParseUint(f[3], 10, 32)
				if err1 != nil || err2 != nil {
					return id, fmt.Errorf("user %q: bad /etc/passwd entry in the image", u)
				}
				id.UID, id.GID, id.Home = uint32(uid), uint32(gid), f[5]
				found = true
				break
			}
		}
		if !found {
			return id, fmt.Errorf("user %q not found in the image's /etc/passwd", u)
		}
	}
	if hasGroup {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			id.GID = uint32(n)
		} else {
			found := false
			for _, f := range readColonFile(root, "/etc/group") {
				if len(f) >= 3 && f[0] == g {
					gid, err := strconv.ParseUint(f[2], 10, 32)
					if err != nil {
						return id, fmt.Errorf("group %q: bad /etc/group entry in the image", g)
					}
					id.GID = uint32(gid)
					found = true
					break
				}
			}
			if !found {
				return id, fmt.Errorf("group %q not found in the image's /etc/group", g)
			}
		}
	}
	if id.Home == "" {
		id.Home = "/"
	}
	return id, nil
}

// readColonFile reads a passwd-style file of the image (symlinks resolved
// inside root).
func readColonFile(root, rel string) [][]string {
	r, err := ResolveInRoot(root, rel)
	if err != nil {
		return nil
	}
	f, err := os.Open(path.Join(root, r))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, strings.Split(l, ":"))
	}
	return out
}

// Override applies what the host's START sets over the image's config
// (docker run -e, -w, --user): each of start.Env replaces the image's
// variable of the same name, or is added after the image's; a working
// directory or user replaces the image's.
func Override(cfg channel.ImageConfig, start *channel.Start) channel.ImageConfig {
	if len(start.Env) > 0 {
		idx := map[string]int{}
		env := make([]string, 0, len(cfg.Env)+len(start.Env))
		for _, kv := range append(append([]string{}, cfg.Env...), start.Env...) {
			k, _, _ := strings.Cut(kv, "=")
			if i, ok := idx[k]; ok {
				env[i] = kv
				continue
			}
			idx[k] = len(env)
			env = append(env, kv)
		}
		cfg.Env = env
	}
	if start.WorkingDir != "" {
		cfg.WorkingDir = start.WorkingDir
	}
	if start.User != "" {
		cfg.User = start.User
	}
	return cfg
}

// Env builds the workload environment from the image's Env: PATH and HOME
// are added when missing, HOSTNAME is set.
func Env(image []string, home, hostname string) []string {
	var env []string
	has := map[string]bool{}
	for _, kv := range image {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		has[k] = true
		env = append(env, kv)
	}
	if !has["PATH"] {
		env = append(env, "PATH="+DefaultPath)
	}
	if !has["HOME"] {
		env = append(env, "HOME="+home)
	}
	if !has["HOSTNAME"] {
		env = append(env, "HOSTNAME="+hostname)
	}
	return env
}

// Command picks the argv: the host's override, else entrypoint + cmd.
func Command(cfg channel.ImageConfig, override []string) ([]string, error) {
	argv := override
	if len(argv) == 0 {
		argv = append(append([]string{}, cfg.Entrypoint...), cfg.Cmd...)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("no command: the image has no entrypoint or cmd and none was given")
	}
	return argv, nil
}

// LookPath finds name like a shell would, in PATH from env, inside root
// (the chroot). It returns the path as seen inside the chroot.
func LookPath(root, name string, env []string, workDir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !path.IsAbs(p) {
			p = path.Join(workDir, p)
		}
		if isExecutable(root, p) {
			return name, nil
		}
		return "", fmt.Errorf("%s: not an executable file in the image", name)
	}
	pathVar := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if dir == "" {
			dir = "."
		}
		if !path.IsAbs(dir) {
			dir = path.Join(workDir, dir)
		}
		p := path.Join(dir, name)
		if isExecutable(root, p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable not found in the image's PATH (%s)", name, pathVar)
}

// isExecutable reports whether p (a path inside the chroot root) is an
// executable regular file, following symlinks inside root.
func isExecutable(root, p string) bool {
	st, err := StatInRoot(root, p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// StatInRoot stats p as a process chrooted into root would see it: every
// symlink on the way (absolute or relative) resolves inside root, and ".."
// never leaves it.
func StatInRoot(root, p string) (os.FileInfo, error) {
	r, err := ResolveInRoot(root, p)
	if err != nil {
		return nil, err
	}
	return os.Lstat(path.Join(root, r))
}

// ResolveInRoot resolves every symlink in p (a path inside root) and returns
// the resulting path inside root.
func ResolveInRoot(root, p string) (string, error) {
	parts := strings.Split(p, "/")
	cur := "/"
	links := 0
	for len(parts) > 0 {
		c := parts[0]
		parts = parts[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		st, err := os.Lstat(path.Join(root, next))
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", errors.New("too many levels of symbolic links")
		}
		t, err := os.Readlink(path.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(t) {
			cur = "/"
		}
		parts = append(strings.Split(t, "/"), parts...)
	}
	return cur, nil
}

// MkdirAllInRoot creates directory p inside root (as a chrooted process
// would see it: symlinks resolve inside root), owned by id when it creates
// it. An existing directory is left as it is.
func MkdirAllInRoot(root, p string, id Identity) error {
	cur := "/" // resolved, inside root
	for _, c := range strings.Split(path.Clean("/"+p), "/") {
		if c == "" {
			continue
		}
		next := path.Join(cur, c)
		st, err := os.Lstat(path.Join(root, next))
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(path.Join(root, next), 0o755); err != nil {
				return err
			}
			if err := os.Lchown(path.Join(root, next), int(id.UID), int(id.GID)); err != nil {
				return err
			}
		case err != nil:
			return err
		case st.Mode()&os.ModeSymlink != 0:
			r, err := ResolveInRoot(root, next)
			if err != nil {
				return fmt.Errorf("%s: symlink does not resolve inside the image: %w", next, err)
			}
			next = r
		}
		st, err = os.Lstat(path.Join(root, next))
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", next)
		}
		cur = next
	}
	return nil
}

// ExitCode maps a wait status to a shell-style exit code.
func ExitCode(exited bool, status int, signaled bool, sig int) int {
	if signaled {
		return 128 + sig
	}
	if exited {
		return status
	}
	return 255
}

// readContainerInput parses a CONTAINER_STDIN or CONTAINER_RESIZE frame.
func readContainerInput(t channel.Type, body []byte) (HostMessage, error) {
	if t == channel.TypeContainerStdin {
		in, err := channel.DecodeContainerInput(body)
		if err != nil {
			return HostMessage{}, err
		}
		return HostMessage{ContainerStdin: &in}, nil
	}
	var r channel.ContainerResize
	if err := channel.Decode(t, body, &r); err != nil {
		return HostMessage{}, err
	}
	if err := r.Validate(); err != nil {
		return HostMessage{}, err
	}
	return HostMessage{ContainerResize: &r}, nil
}
