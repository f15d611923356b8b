package kvm

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestSandboxWorkloadInputsAndNetwork boots one sandbox with docker run's
// inputs over the image's config (-e, -w, --user), a read-only volume
// and a tmpfs, and a user-mode network with a port forward on a port QEMU
// picks: the workload sees its environment, directory, user, volumes and
// network (lo and eth0 up, the resolver), and a web server in the guest
// answers on the host through the forward. Its stdin is the host's, to
// the end of input.
func TestSandboxWorkloadInputsAndNetwork(t *testing.T) {
	e := bootEnv(t)
	script := strings.Join([]string{
		"cat > /tmp/in; echo \"stdin $(cat /tmp/in)\"",
		"echo uid=$(id -u) gid=$(id -g) pwd=$(pwd) greeting=$GREETING extra=$EXTRA path=$PATH",
		"cat /sys/class/net/lo/flags /sys/class/net/eth0/flags /etc/resolv.conf",
		"cat /data/hello.txt; echo x > /data/new 2>/dev/null || echo data-read-only",
		"echo scratch > /scratch/f && cat /scratch/f; grep -o ' /scratch tmpfs rw,nosuid,nodev,[a-z]*,size=2048k' /proc/mounts",
		"/bin/busybox mkdir -p /tmp/www && echo hello-from-the-guest > /tmp/www/index.html",
		"/bin/busybox httpd -p 8080 -h /tmp/www && echo serving",
		"while :; do sleep 1; done",
	}, "\n")
	img := testImage(t, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{script},
		Env: []string{"PATH=/bin", "GREETING=image"}, WorkingDir: "/work", User: "app",
	})
	ctx := context.Background()
	sandboxID := fmt.Sprintf("%016x%016x", time.Now().UnixNano(), os.Getpid())
	lo := netip.MustParseAddr("127.0.0.1")
	volDir := t.TempDir()
	if err := os.WriteFile(volDir+"/hello.txt", []byte("from-the-volume\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol, err := BuildVolumeDisk(ctx, volDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vol.Close() })
	sb, stdout, stderr, console := startSandbox(t, ctx, e, img, func(c *Config) {
		c.Name = sandboxID
		c.Env = []string{"GREETING=run", "EXTRA=a b=c"}
		c.WorkingDir, c.User = "/srv/data", "0:1000"
		c.Network, c.Ports = NetworkUser, []PortForward{{HostIP: lo, HostPort: 0, GuestPort: 8080}}
		c.Volumes = []VolumeDisk{{File: vol.File, Target: "/data"}}
		c.Tmpfs = []TmpfsMount{{Target: "/scratch", Size: 2 << 20}}
		c.Stdin = strings.NewReader("line one\nline two\n")
	})
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, stdout, "serving")
	out := stdout.String()
	for _, want := range []string{
		"stdin line one\nline two\n",
		"uid=0 gid=1000 pwd=/srv/data greeting=run extra=a b=c path=/bin\n",
		"0x9\n0x1003\nnameserver 10.0.2.3\n", // lo: UP|LOOPBACK; eth0: UP|BROADCAST|MULTICAST
		"from-the-volume\ndata-read-only\nscratch\n /scratch tmpfs rw,nosuid,nodev,relatime,size=2048k\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr:\n%s", want, out, stderr.String())
		}
	}
	ports, err := sb.Ports(ctx)
	if err != nil || len(ports) != 1 || ports[0].HostIP != lo || ports[0].HostPort == 0 || ports[0].GuestPort != 8080 {
		t.Fatalf("Ports = %v, %v; want one forward from a port QEMU chose on 127.0.0.1 to 8080", ports, err)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0].HostPort))
	if err != nil {
		t.Fatalf("GET through the forward: %v\nconsole:\n%s", err, console.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello-from-the-guest\n" {
		t.Errorf("GET: %s %q", resp.Status, body)
	}
	if err := sb.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
