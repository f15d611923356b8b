package kvm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestRecipeNet: a template with a network device (TemplateNet) has a
// recipe of its own, which every launch with a network, user or tap,
// shares (the device is the template's whatever backend a clone gives
// it), and a launch without one does not; a recipe without it encodes as
// before templates had networks, so existing templates keep their digests.
func TestRecipeNet(t *testing.T) {
	e := bootEnv(t)
	recipe := func(mod func(*Config)) Recipe {
		t.Helper()
		cfg := templateConfig(t, e)
		mod(&cfg)
		r, err := cfg.Recipe()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	plain := recipe(func(*Config) {})
	tpl := recipe(func(c *Config) { c.TemplateNet = true })
	user := recipe(func(c *Config) { c.Network = NetworkUser })
	tap := recipe(func(c *Config) { c.Network, c.NetNS = NetworkTap, newTestNetNS(t).Path })
	pod := recipe(func(c *Config) { c.TemplateNet, c.Pod = true, true })
	if plain.Net || !tpl.Net {
		t.Errorf("net: %v without TemplateNet, %v with", plain.Net, tpl.Net)
	}
	if tpl != user || tpl != tap {
		t.Errorf("a network template's recipe differs from a networked launch's:\n%+v\n%+v\n%+v", tpl, user, tap)
	}
	if plain.Machine == tpl.Machine || plain.Digest() == tpl.Digest() {
		t.Error("a network template's recipe has the same machine or digest as a plain one")
	}
	if d := plain.differences(tpl); len(d) != 1 || d[0] != "network device: the template has none (made without --net), this launch has a network" {
		t.Errorf("differences: %q", d)
	}
	if pod.PodSlots != MaxPodSlots || !pod.Net {
		t.Errorf("a pod's network template: %d slots, net %v; want %d and true", pod.PodSlots, pod.Net, MaxPodSlots)
	}
	pj, _ := json.Marshal(plain)
	tj, _ := json.Marshal(tpl)
	if strings.Contains(string(pj), `"net"`) || !strings.Contains(string(tj), `"net":true`) {
		t.Errorf("recipe JSON: %s / %s", pj, tj)
	}
}

// TestNetTemplateClones: a template made with a network device (on a
// backend that reaches nothing) starts clones with a network of their
// own. A user-mode clone reaches a server on the host through QEMU's
// gateway and answers on the host through a port forward; a tap clone
// in a pod's network namespace has the pod interface's MAC (not the
// template's, which its device state carries and which every clone on a
// pod bridge would share) and address, reaches the
// peer namespace and answers there at the pod's address. A clone without
// a network is refused the network template, and a networked launch a
// plain template, naming the recipe field and the template to make.
func TestNetTemplateClones(t *testing.T) {
	e := bootEnv(t)
	ctx := context.Background()
	cfg := templateConfig(t, e)
	cfg.TemplateNet = true
	var console syncBuffer
	cfg.Console = &console
	dir := filepath.Join(t.TempDir(), "net")
	info, err := CreateTemplate(ctx, cfg, dir, "net")
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console.String())
	}
	if !info.Recipe.Net {
		t.Fatal("the template's recipe has no network device")
	}
	tpl, err := LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()

	// A server on the host, reached by user-mode clones at QEMU's gateway.
	hostL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello-from-the-host\n")
	})}
	go hostSrv.Serve(hostL)
	t.Cleanup(func() { hostSrv.Close() })
	hostPort := hostL.Addr().(*net.TCPAddr).Port

	script := func(reach string) string {
		return strings.Join([]string{
			"cat /sys/class/net/eth0/address",
			"/bin/busybox wget -q -O - " + reach + " || echo wget-failed",
			"/bin/busybox mkdir -p /tmp/www && hostname > /tmp/www/index.html",
			"/bin/busybox httpd -p 8080 -h /tmp/www && echo serving",
			"while :; do sleep 1; done",
		}, "\n")
	}
	clone := func(t *testing.T, name, reach string, mod func(*Config)) (*Sandbox, *syncBuffer, *syncBuffer) {
		t.Helper()
		img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{script(reach)}, Env: []string{"PATH=/bin"}})
		disk := buildDisk(t, img)
		c := templateConfig(t, e)
		var stdout, console syncBuffer
		c.Template, c.Image, c.Name, c.Stdout, c.Console, c.Logger = tpl, disk.File, name, &stdout, &console, testLogger(t)
		mod(&c)
		sb, err := Start(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sb.Close()
			if t.Failed() {
				t.Logf("%s console:\n%s", name, console.String())
			}
		})
		if err := sb.StartWorkload(ctx, nil, nil); err != nil {
			t.Fatalf("StartWorkload: %v", err)
		}
		waitForOutput(t, &stdout, "serving")
		return sb, &stdout, &console
	}

	t.Run("refusals", func(t *testing.T) {
		img := testImage(t, v1.Config{Entrypoint: []string{"/bin/true"}})
		disk := buildDisk(t, img)
		plain := templateConfig(t, e)
		plain.Template, plain.Image = tpl, disk.File
		if sb, err := Start(ctx, plain); err == nil {
			sb.Close()
			t.Error("a clone without a network started from a network template")
		} else if !strings.Contains(err.Error(), "network device: the template has one (made with --net), this launch has no network") || !strings.Contains(err.Error(), "(launcher template create)") {
			t.Errorf("a clone without a network of a network template: %v", err)
		}
		plainDir, _ := sharedTemplate(t)
		plainTpl, err := LoadTemplate(plainDir)
		if err != nil {
			t.Fatal(err)
		}
		defer plainTpl.Close()
		user := templateConfig(t, e)
		user.Template, user.Image, user.Network = plainTpl, disk.File, NetworkUser
		if sb, err := Start(ctx, user); err == nil {
			sb.Close()
			t.Error("a clone with a network started from a template without one")
		} else if !strings.Contains(err.Error(), "network device: the template has none (made without --net), this launch has a network") || !strings.Contains(err.Error(), "launcher template create --net") {
			t.Errorf("a networked clone of a plain template: %v", err)
		}
		cold := templateConfig(t, e)
		cold.Image, cold.TemplateNet = disk.File, true
		if sb, err := Start(ctx, cold); err == nil {
			sb.Close()
			t.Error("a sandbox started with TemplateNet")
		} else if !strings.Contains(err.Error(), "TemplateNet is for CreateTemplate") {
			t.Errorf("Start with TemplateNet: %v", err)
		}
	})

	t.Run("user-mode clone", func(t *testing.T) {
		lo := netip.MustParseAddr("127.0.0.1")
		sb, stdout, _ := clone(t, "netclone-user", fmt.Sprintf("http://10.0.2.2:%d/", hostPort), func(c *Config) {
			c.Network, c.Ports = NetworkUser, []PortForward{{HostIP: lo, GuestPort: 8080}}
		})
		if out := stdout.String(); !strings.Contains(out, "hello-from-the-host\n") {
			t.Errorf("the clone did not reach the host's server:\n%s", out)
		}
		ports, err := sb.Ports(ctx)
		if err != nil || len(ports) != 1 || ports[0].HostPort == 0 {
			t.Fatalf("Ports = %v, %v", ports, err)
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0].HostPort))
		if err != nil {
			t.Fatalf("GET through the forward: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "netclone-use\n" {
			t.Errorf("GET through the forward: %s %q", resp.Status, body)
		}
	})

	t.Run("tap clone", func(t *testing.T) {
		pn := newPodNetwork(t)
		peer := listenIn(t, pn.peer, "10.199.0.1:0")
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello-from-the-peer\n")
		})}
		go srv.Serve(peer)
		t.Cleanup(func() { srv.Close() })
		_, stdout, _ := clone(t, "netclone-tap", "http://"+peer.Addr().String()+"/", func(c *Config) {
			c.Network, c.NetNS = NetworkTap, pn.pod.Path
		})
		out := stdout.String()
		if !strings.HasPrefix(out, pn.mac+"\n") || !strings.Contains(out, "hello-from-the-peer\n") {
			t.Errorf("the tap clone printed %q; want the pod interface's MAC %s and the peer's answer", out, pn.mac)
		}
		resp, err := clientIn(pn.peer).Get("http://10.199.0.2:8080/")
		if err != nil {
			t.Fatalf("GET the pod's address from the peer namespace: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "netclone-tap\n" {
			t.Errorf("GET the pod: %s %q", resp.Status, body)
		}
	})

	if digest, err := copySparse(nil, tpl.ram, tpl.Info.RAM.Size); err != nil || digest != tpl.Info.RAM.Digest {
		t.Errorf("the template's RAM after the clones: %s, %v", digest, err)
	}
}

// TestQEMUArgsTemplateNet: a network template's device is virtio-net on
// a hub port that leads nowhere (no slirp, whose migration state a tap
// clone would refuse; no host network), netdev n0 as every clone's
// backend; a pod's network template still has every image slot.
func TestQEMUArgsTemplateNet(t *testing.T) {
	spec := qemuSpec{name: "sb1", accel: AccelTCG, cpus: 1, memoryMiB: 256, qmpFD: 3, channelFD: 4,
		kernel: "k", initrd: "i", disk: "d", cmdline: "console=ttyS0", ram: "RAM", ramShared: true, network: netTemplate}
	joined := strings.Join(qemuArgs(spec), " ")
	if want := "-netdev hubport,id=n0,hubid=0 -device virtio-net-device,netdev=n0 "; !strings.Contains(joined, want) {
		t.Errorf("no %q in %s", want, joined)
	}
	for _, bad := range []string{"-netdev user", "-netdev tap", "hostfwd", "mac="} {
		if strings.Contains(joined, bad) {
			t.Errorf("%q in a template's command line: %s", bad, joined)
		}
	}
	if n := podSlotCount(spec); n != MaxPodSlots {
		t.Errorf("a pod's network template has %d image slots, want %d", n, MaxPodSlots)
	}
}
