package tpm

import (
	"fmt"
	"os"
)

// AccessWarning says who else on this host can use the TPM, when more than
// its owner and group can: whoever may send TPM commands can extend the
// launch PCR with an event naming a key of their own, quote, attest and
// receive the secrets released to that key (docs/security.md). It returns ""
// when access is restricted, or for kinds it cannot judge (tcp, sim).
func (t *TPM) AccessWarning() string {
	var path string
	switch t.spec.Kind {
	case KindDevice, KindSocket:
		path = t.spec.Path
	case KindManaged:
		path = t.spec.Path // the state directory holding its sockets
	default:
		return ""
	}
	return accessWarning(path)
}

// accessWarning judges one path's mode: any permission for others is too much.
func accessWarning(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return fmt.Sprintf("TPM %s is accessible to every user on this host (mode %04o): any of them can extend the launch PCR and attest as this host; "+
			"restrict it to root and the tss group (chmod o-rwx %s; for /dev/tpmrm0 a udev rule: see docs/security.md)", path, perm, path)
	}
	return ""
}
