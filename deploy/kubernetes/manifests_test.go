// Package kubernetes holds Bulwark's Kubernetes manifests (the RuntimeClass,
// attestd, the host service's DaemonSet). Its test validates them offline,
// with no cluster: every document decodes strictly into the Kubernetes API's
// own types (an unknown or misspelt field, a wrong type or a bad quantity
// fails), and the references between them hold (selectors, volumes, ports,
// the runtime handler containerd is configured with).
package kubernetes

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// object is one decoded manifest document.
type object struct {
	file string
	kind string
	obj  any
}

// kinds maps apiVersion/kind to a new typed value; a kind not listed is an
// error, so a manifest cannot slip past unvalidated.
var kinds = map[string]func() any{
	"v1/Namespace":                func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                func() any { return &corev1.ConfigMap{} },
	"v1/Service":                  func() any { return &corev1.Service{} },
	"apps/v1/Deployment":          func() any { return &appsv1.Deployment{} },
	"apps/v1/DaemonSet":           func() any { return &appsv1.DaemonSet{} },
	"node.k8s.io/v1/RuntimeClass": func() any { return &nodev1.RuntimeClass{} },
	"v1/Pod":                      func() any { return &corev1.Pod{} },
}

// decodeStrict decodes one JSON document into v as the API server does
// (field names case-sensitive), refusing unknown and duplicate fields.
func decodeStrict(doc []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(doc, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// load decodes every document of a manifest file.
func load(t *testing.T, file string) []object {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parse(file, data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func parse(file string, data []byte) ([]object, error) {
	var out []object
	rd := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		raw, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		doc, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if string(bytes.TrimSpace(doc)) == "null" {
			continue // comments only
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s: document %d: unexpected kind %s/%s", file, i, tm.APIVersion, tm.Kind)
		}
		obj := newObj()
		if err := decodeStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i, tm.Kind, err)
		}
		out = append(out, object{file: file, kind: tm.Kind, obj: obj})
	}
}

// TestManifestsDecodeStrictly: every YAML file here is a valid Kubernetes
// object of a known kind (or the kustomization), and the kustomization
// lists all of them.
func TestManifestsDecodeStrictly(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	for _, f := range files {
		if f == "kustomization.yaml" {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(data, &kust); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			continue
		}
		if len(load(t, f)) == 0 {
			t.Errorf("%s: no objects", f)
		}
	}
	if kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: kind %q", kust.Kind)
	}
	var want []string
	for _, f := range files {
		if f != "kustomization.yaml" {
			want = append(want, f)
		}
	}
	got := slices.Clone(kust.Resources)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want every manifest %v", got, want)
	}
}

// TestStrictDecodingRefuses proves the validator can fail: a misspelt
// field, a bad quantity and an unknown kind are each refused.
func TestStrictDecodingRefuses(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"misspelt field", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nhandlr: bulwark\n", "unknown field"},
		{"bad quantity", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nhandler: b\noverhead: {podFixed: {memory: lots}}\n", "quantities must match"},
		{"wrong type", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {template: {spec: {hostPID: \"yes\"}}}\n", "cannot unmarshal"},
		{"field name in the wrong case", "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: x}\nHandler: b\n", "unknown field"},
		{"unknown kind", "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "unexpected kind"},
		{"duplicate key", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, name: y}\n", "already set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse("t.yaml", []byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func all(t *testing.T) []object {
	t.Helper()
	var out []object
	for _, f := range []string{"namespace.yaml", "runtimeclass.yaml", "attestd.yaml", "host-service.yaml"} {
		out = append(out, load(t, f)...)
	}
	return out
}

func find[T any](t *testing.T, objs []object, name string) *T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			if m, ok := o.obj.(metav1.Object); ok && m.GetName() == name {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no %T named %q", zero, name)
	return nil
}

// checkPod checks what the API server would refuse or what would fail at
// run time: volume mounts name volumes, probes name ports, images are set,
// and the namespace is Bulwark's.
func checkPod(t *testing.T, what string, spec corev1.PodSpec) {
	t.Helper()
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		if vols[v.Name] {
			t.Errorf("%s: volume %q twice", what, v.Name)
		}
		vols[v.Name] = true
	}
	used := map[string]bool{}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if c.Image == "" {
			t.Errorf("%s: container %s has no image", what, c.Name)
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				t.Errorf("%s: container %s mounts %q, which is no volume", what, c.Name, m.Name)
			}
			used[m.Name] = true
		}
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if pr != nil && pr.TCPSocket != nil && pr.TCPSocket.Port.Type == intstr.String && !ports[pr.TCPSocket.Port.StrVal] {
				t.Errorf("%s: container %s probes port %q, which it does not declare", what, c.Name, pr.TCPSocket.Port.StrVal)
			}
		}
	}
	for v := range vols {
		if !used[v] {
			t.Errorf("%s: volume %q is mounted by no container", what, v)
		}
	}
}

func checkSelector(t *testing.T, what string, sel *metav1.LabelSelector, labels map[string]string) {
	t.Helper()
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Fatalf("%s: no selector", what)
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels %v", what, k, v, labels)
		}
	}
}

// TestManifestReferences: the objects agree with each other and with the
// containerd snippet the nodes use.
func TestManifestReferences(t *testing.T) {
	objs := all(t)
	const ns = "bulwark-system"
	for _, o := range objs {
		m := o.obj.(metav1.Object)
		switch o.kind {
		case "Namespace", "RuntimeClass":
			if m.GetNamespace() != "" {
				t.Errorf("%s %s: cluster-scoped, has namespace %q", o.kind, m.GetName(), m.GetNamespace())
			}
		default:
			if m.GetNamespace() != ns {
				t.Errorf("%s %s: namespace %q, want %q", o.kind, m.GetName(), m.GetNamespace(), ns)
			}
		}
	}
	find[corev1.Namespace](t, objs, ns)

	// The RuntimeClass's handler is the runtime containerd is given.
	rc := find[nodev1.RuntimeClass](t, objs, "bulwark")
	snippet, err := os.ReadFile("../containerd/bulwark-runtime.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.containerd\.runtimes\.` + regexp.QuoteMeta(rc.Handler) + `\]$`).Match(snippet) {
		t.Errorf("RuntimeClass handler %q is not a runtime of deploy/containerd/bulwark-runtime.toml", rc.Handler)
	}

	// attestd: selector, Service, config mount.
	dep := find[appsv1.Deployment](t, objs, "attestd")
	checkSelector(t, "Deployment attestd", dep.Spec.Selector, dep.Spec.Template.Labels)
	checkPod(t, "Deployment attestd", dep.Spec.Template.Spec)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 || dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("Deployment attestd: one replica with the Recreate strategy (its vault key is sealed to one node's TPM)")
	}
	svc := find[corev1.Service](t, objs, "attestd")
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("Service attestd selects %s=%s, which attestd's pods do not carry", k, v)
		}
	}
	ports := map[string]bool{}
	for _, p := range dep.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = true
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.Type != intstr.String || !ports[p.TargetPort.StrVal] {
			t.Errorf("Service attestd port %s targets %v, not a named port of attestd", p.Name, p.TargetPort)
		}
	}
	cm := find[corev1.ConfigMap](t, objs, "attestd-config")
	if cm.Data["config.yaml"] == "" {
		t.Fatal("ConfigMap attestd-config has no config.yaml")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("attestd args %v: no --config", c.Args)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if filepath.Join(m.MountPath, "config.yaml") == c.Args[i+1] {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("attestd --config %s is not where ConfigMap attestd-config is mounted", c.Args[i+1])
	}
	for _, e := range c.Env {
		if e.Value != "" && strings.Contains(strings.ToLower(e.Name), "password") {
			t.Errorf("attestd env %s has a literal value: passwords come from a Secret", e.Name)
		}
	}

	// The host service runs where the RuntimeClass sends pods, and its
	// socket is where the shim looks by default.
	ds := find[appsv1.DaemonSet](t, objs, "bulwark-host")
	checkSelector(t, "DaemonSet bulwark-host", ds.Spec.Selector, ds.Spec.Template.Labels)
	checkPod(t, "DaemonSet bulwark-host", ds.Spec.Template.Spec)
	if rc.Scheduling == nil {
		t.Fatal("RuntimeClass bulwark: no scheduling.nodeSelector")
	}
	for k, v := range rc.Scheduling.NodeSelector {
		if ds.Spec.Template.Spec.NodeSelector[k] != v {
			t.Errorf("RuntimeClass sends pods to %s=%s, where the host service does not run (its nodeSelector %v)", k, v, ds.Spec.Template.Spec.NodeSelector)
		}
	}
	state := ""
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == "state" && v.HostPath != nil {
			state = v.HostPath.Path
		}
	}
	if state != "/var/lib/bulwark" {
		t.Errorf("host service state on the node is %q, want /var/lib/bulwark (where the shim finds launcher.sock)", state)
	}
	for _, dev := range []string{"/dev/tpmrm0", "/dev/kvm"} {
		found := false
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.HostPath != nil && v.HostPath.Path == dev && v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathCharDev {
				found = true
			}
		}
		if !found {
			t.Errorf("DaemonSet bulwark-host does not mount the node's %s as a character device", dev)
		}
	}
	// The examples run under the RuntimeClass and name a policy.
	examples, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range examples {
		for _, o := range load(t, f) {
			pod, ok := o.obj.(*corev1.Pod)
			if !ok {
				continue
			}
			checkPod(t, f, pod.Spec)
			if pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != rc.Name {
				t.Errorf("%s: pod %s does not use RuntimeClass %s", f, pod.Name, rc.Name)
			}
			if pod.Annotations["bulwark.dev/policy"] == "" {
				t.Errorf("%s: pod %s has no bulwark.dev/policy annotation (the shim refuses it)", f, pod.Name)
			}
		}
	}
	if ds.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || *ds.Spec.Template.Spec.TerminationGracePeriodSeconds < 300 {
		t.Error("DaemonSet bulwark-host: the grace period must cover the daemon's longest stop timeout (300 s)")
	}
}
