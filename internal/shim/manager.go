package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
)

// annotationSandboxID names the CRI pod a container belongs to.
const annotationSandboxID = "io.kubernetes.cri.sandbox-id"

// StartShim is the shim's start command: it starts the shim server (this
// binary again) on a new socket and returns the socket's address, which is
// all it may print. One server serves one container, or the containers of
// one CRI pod (the pod's sandbox container first).
func (s *service) StartShim(ctx context.Context, opts shim.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	// A CRI pod's containers share the shim of its sandbox container.
	grouping := opts.ID
	if spec, err := readSpec(cwd); err == nil && spec.Annotations[annotationSandboxID] != "" {
		grouping = spec.Annotations[annotationSandboxID]
	}
	address, err := shim.SocketAddress(ctx, opts.Address, grouping)
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("bulwark shim: creating its socket: %w", err)
		}
		if shim.CanConnect(address) { // a server for this id already runs
			if err := shim.WriteAddress("address", address); err != nil {
				return "", err
			}
			return address, nil
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("bulwark shim: removing a stale socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("bulwark shim: creating its socket: %w", err)
		}
	}
	// The socket outlives this process: the server inherits it.
	socket.SetUnlinkOnClose(false)
	defer func() {
		if retErr != nil {
			socket.Close()
			shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	args := []string{"-namespace", ns, "-id", grouping, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), envContainerd+"="+opts.Address)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("bulwark shim: starting its server: %w", err)
	}
	go cmd.Wait()
	return address, nil
}

// exportContainerImage copies container id's image from containerd's
// content store to dir as an OCI layout (dir/image).
func (s *service) exportContainerImage(ctx context.Context, id, dir string) (exportedImage, error) {
	addr := os.Getenv(envContainerd)
	if addr == "" {
		return exportedImage{}, fmt.Errorf("%w: containerd's address is unknown ($%s is not set: was the shim started by containerd?)", errImage, envContainerd)
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return exportedImage{}, err
	}
	client, err := containerd.New(addr, containerd.WithDefaultNamespace(ns))
	if err != nil {
		return exportedImage{}, fmt.Errorf("%w: connecting to containerd: %v", errImage, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, ns)
	c, err := client.ContainerService().Get(ctx, id)
	if err != nil {
		return exportedImage{}, fmt.Errorf("%w: container %s: %v", errImage, id, err)
	}
	if c.Image == "" {
		return exportedImage{}, fmt.Errorf("%w: container %s names no image in containerd (create it from an image)", errImage, id)
	}
	img, err := client.ImageService().Get(ctx, c.Image)
	if err != nil {
		return exportedImage{}, fmt.Errorf("%w: %s: %v", errImage, c.Image, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return exportedImage{}, err
	}
	out, err := exportImage(ctx, client.ContentStore(), img.Target, dir+"/image")
	out.Name = c.Image
	return out, err
}
