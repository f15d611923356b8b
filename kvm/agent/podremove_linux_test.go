package agent

import (
	"slices"
	"testing"
)

func TestMountsUnder(t *testing.T) {
	const info = `22 1 0:20 / / rw - rootfs rootfs rw
30 22 254:16 / /run/bulwark/ctr/1/image ro - erofs /dev/vdb ro
31 22 0:30 / /run/bulwark/ctr/1/upper rw - tmpfs tmpfs rw
32 22 0:31 / /run/bulwark/ctr/1/rootfs rw - overlay overlay rw
33 32 0:32 / /run/bulwark/ctr/1/rootfs/proc rw - proc proc rw
34 32 0:33 / /run/bulwark/ctr/1/rootfs/dev rw - devtmpfs devtmpfs rw
35 34 0:34 / /run/bulwark/ctr/1/rootfs/dev/shm rw - tmpfs tmpfs rw
36 32 0:35 / /run/bulwark/ctr/1/rootfs/my\040dir rw - tmpfs tmpfs rw
40 22 254:32 / /run/bulwark/ctr/10/image ro - erofs /dev/vdc ro
41 22 0:40 / /run/bulwark/ctr/1 rw - tmpfs tmpfs rw
`
	got := mountsUnder(info, "/run/bulwark/ctr/1")
	want := []string{
		"/run/bulwark/ctr/1/rootfs/dev/shm",
		"/run/bulwark/ctr/1/rootfs/proc", "/run/bulwark/ctr/1/rootfs/dev", "/run/bulwark/ctr/1/rootfs/my dir",
		"/run/bulwark/ctr/1/image", "/run/bulwark/ctr/1/upper", "/run/bulwark/ctr/1/rootfs",
		"/run/bulwark/ctr/1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder:\n got %q\nwant %q", got, want)
	}
	if got := mountsUnder(info, "/run/bulwark/ctr/2"); len(got) != 0 {
		t.Errorf("mountsUnder(ctr/2) = %q, want none", got)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`: "/a b", `/plain`: "/plain", `/tab\011x`: "/tab\tx", `/bad\09`: `/bad\09`, `/end\04`: `/end\04`, `\134`: `\`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPodRemoveRefusesRunning(t *testing.T) {
	p := &pod{containers: map[int]*podContainer{
		1: {name: "starting"},
		2: {name: "running", pid: 1234},
	}}
	for _, i := range []int{1, 2} {
		if err := p.remove(i, func(string) {}); err == nil {
			t.Errorf("remove(%d) of a container that has not ended: no error", i)
		}
		if p.containers[i] == nil {
			t.Errorf("remove(%d) failed but forgot the container", i)
		}
	}
	if err := p.remove(7, func(string) {}); err != nil {
		t.Errorf("remove of an unknown index: %v, want nil", err)
	}
}
