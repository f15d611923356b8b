package agent

import (
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"golang.org/x/sys/unix"
)

// secretsDir is /run/secrets as the workload sees it.
var secretsDir = path.Join(channel.RootfsDir, "run/secrets")

// keyring is what the agent keeps, while the workload runs, to apply
// attestd's decisions: the guest key (rotated secrets are wrapped to it),
// the sandbox id they are bound to, and the owner of the secret files.
// A revocation drops the key: nothing reaches a revoked guest again.
type keyring struct {
	key       *wrap.PrivateKey
	sandboxID string
	access    secretsAccess
}

// revoke applies a REVOKE: the secret files go first (all, or those
// named), DONE tells the host how many, and then, for "stop", the
// workload (process group pid) gets SIGTERM and, after the grace period,
// every process SIGKILL; its exit status is reported as usual.
func (s *session) revoke(pid int, r *channel.Revoke) {
	removed, err := removeSecrets(secretsDir, r.Names)
	done := channel.Done{Seq: r.Seq, Removed: removed}
	if err != nil {
		done.Error = err.Error()
	}
	if len(r.Names) == 0 || r.Action == channel.RevokeStop {
		s.keys.key = nil // revoked: no secret reaches this guest again
	}
	_ = s.send(channel.TypeDone, done)
	s.log.Warn("attestd revoked this sandbox: secrets removed", "removed", removed, "action", r.Action, "err", err)
	if r.Action == channel.RevokeStop && s.pod == nil { // a pod stops its containers (watchHost)
		grace := time.Duration(r.GraceSeconds) * time.Second
		_ = unix.Kill(-pid, unix.SIGTERM)
		time.AfterFunc(grace, func() { _ = unix.Kill(-1, unix.SIGKILL) })
	}
}

// removeSecrets unlinks the named files of dir (every regular file when
// names is empty) and returns how many it removed. A missing file is not
// an error (removed before, or never released).
func removeSecrets(dir string, names []string) (int, error) {
	if len(names) == 0 {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("secrets directory: %w", err)
		}
		for _, e := range ents {
			names = append(names, e.Name())
		}
	}
	n := 0
	var first error
	for _, name := range names {
		err := os.Remove(path.Join(dir, name))
		switch {
		case err == nil:
			n++
		case errors.Is(err, os.ErrNotExist):
		case first == nil:
			first = fmt.Errorf("removing secret %q: %w", name, err)
		}
	}
	return n, first
}

// rotate applies a ROTATE: each new version is opened with the guest key
// and replaces its file atomically (a temporary file beside it, renamed
// over it), so the workload reads the old or the new value, never part of
// one. DONE carries the first failure; the secrets before it are replaced.
func (s *session) rotate(r *channel.Rotate) {
	err := rotateSecrets(secretsDir, &s.keys, r.Secrets)
	done := channel.Done{Seq: r.Seq}
	if err != nil {
		done.Error = err.Error()
		s.log.Error("rotating secrets", "err", err)
	} else {
		s.log.Info("secrets rotated", "count", len(r.Secrets))
	}
	_ = s.send(channel.TypeDone, done)
}

func rotateSecrets(dir string, kr *keyring, secrets []channel.Secret) error {
	if kr.key == nil {
		return errors.New("this guest holds no key for secrets (revoked, or started without secrets)")
	}
	for _, sec := range secrets {
		if _, err := os.Lstat(path.Join(dir, sec.Name)); err != nil {
			return fmt.Errorf("secret %q: not one this guest holds: %w", sec.Name, err)
		}
		pt, err := kr.key.Open(kr.sandboxID, sec.Name, sec.Wrapped)
		if err != nil {
			return fmt.Errorf("secret %q does not open with this sandbox's key", sec.Name)
		}
		err = replaceFile(dir, sec.Name, pt, kr.access)
		clear(pt)
		if err != nil {
			return err
		}
	}
	return nil
}

// replaceFile writes data to dir/name atomically, with acc's owner and
// mode.
func replaceFile(dir, name string, data []byte, acc secretsAccess) error {
	tmp := path.Join(dir, ".rotate-"+name)
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o400)
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chown(tmp, int(acc.owner.UID), int(acc.owner.GID))
	}
	if err == nil {
		err = os.Chmod(tmp, acc.mode)
	}
	if err == nil {
		err = os.Rename(tmp, path.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return nil
}
