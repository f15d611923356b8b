package attestdcmd

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
	"go.yaml.in/yaml/v3"
)

// TestKubernetesConfigMapIsAValidConfig: the attestd settings shipped in
// deploy/kubernetes/attestd.yaml (ConfigMap attestd-config, config.yaml)
// are accepted by `attestd serve --config` as it parses them. The run is
// stopped right after the settings are applied by a stray argument, so it
// opens nothing; the control case proves the settings are read before that
// check, so a bad setting would fail this test.
func TestKubernetesConfigMapIsAValidConfig(t *testing.T) {
	data, err := os.ReadFile("../../deploy/kubernetes/attestd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	config := ""
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			if err == io.EOF {
				break
			}
			t.Fatal(err)
		}
		if doc.Kind == "ConfigMap" && doc.Metadata.Name == "attestd-config" {
			config = doc.Data["config.yaml"]
		}
	}
	if config == "" {
		t.Fatal("deploy/kubernetes/attestd.yaml: no ConfigMap attestd-config with config.yaml")
	}
	serve := func(body string) error {
		p := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		env := &cli.Env{Stdout: io.Discard, Stderr: io.Discard, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
		return runServe(context.Background(), env, fs, []string{"--config", p, "stop-here"})
	}
	if err := serve(config); err == nil || !strings.Contains(err.Error(), `unexpected argument "stop-here"`) {
		t.Fatalf("the shipped config: %v (want only the stray argument refused)", err)
	}
	if err := serve(config + "no-such-setting: 1\n"); err == nil || !strings.Contains(err.Error(), `unknown setting "no-such-setting"`) {
		t.Fatalf("control: a bad setting was not reported (%v): the check above proves nothing", err)
	}
}
