package policy

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
)

// celCostLimit bounds the work of one rule evaluation (CEL cost units).
const celCostLimit = 1_000_000

// Claim variable names visible to CEL rules (see docs/policy.md).
var celVars = []cel.EnvOption{
	cel.Variable("policy", cel.StringType),
	cel.Variable("node_id", cel.StringType),
	cel.Variable("sandbox_id", cel.StringType),
	cel.Variable("kernel", cel.StringType),
	cel.Variable("initrd", cel.StringType),
	cel.Variable("cmdline", cel.StringType),
	cel.Variable("cmdline_digest", cel.StringType),
	cel.Variable("image", cel.StringType),
	cel.Variable("image_config", cel.StringType),
	cel.Variable("image_disk", cel.StringType),
	// template: recipe, ram, state digests of the template a clone resumed
	// from; all "" for a cold boot.
	cel.Variable("template", cel.MapType(cel.StringType, cel.StringType)),
	cel.Variable("args", cel.ListType(cel.StringType)),
	// The workload's inputs beside its command: env_keys (sorted names of
	// the variables set over the image's), env_digest (measure.EnvDigest,
	// "" for none), working_dir and user ("" = the image's), network
	// ("none", "user" or "tap") and ports ("HOSTIP:HOSTPORT:GUESTPORT/tcp").
	cel.Variable("env_keys", cel.ListType(cel.StringType)),
	cel.Variable("env_digest", cel.StringType),
	cel.Variable("working_dir", cel.StringType),
	cel.Variable("user", cel.StringType),
	cel.Variable("network", cel.StringType),
	cel.Variable("ports", cel.ListType(cel.StringType)),
	// volumes: "ro:TARGET:DIGEST", "tmpfs:TARGET:BYTES" and
	// "scratch:TARGET:BYTES" (measure.Volume).
	cel.Variable("volumes", cel.ListType(cel.StringType)),
	cel.Variable("host_pcrs", cel.MapType(cel.IntType, cel.StringType)),
	// firmware: present, secure_boot (bool), authorities (list of sha256
	// certificate digests), dbx_entries (int), error (string),
	// kernel_cmdline (string), boot_loader_quoted (bool); see firmwareClaims.
	cel.Variable("firmware", cel.MapType(cel.StringType, cel.DynType)),
	cel.Variable("signers", cel.MapType(cel.StringType, cel.ListType(cel.StringType))),
	cel.Variable("time", cel.TimestampType),
}

var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(append(celVars, ext.Strings())...)
})

type celError struct {
	line, col int
	msg, hint string
}

// compileRule parses and type-checks one rule; it must be a bool expression.
func compileRule(expr string) (cel.Program, []celError) {
	env, err := celEnv()
	if err != nil {
		return nil, []celError{{msg: "CEL environment: " + err.Error()}}
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		var out []celError
		for _, e := range iss.Errors() {
			out = append(out, celError{line: e.Location.Line(), col: e.Location.Column(), msg: strings.TrimSuffix(e.Message, " (in container '')"),
				hint: "variables: policy, node_id, sandbox_id, kernel, initrd, cmdline, cmdline_digest, image, image_config, image_disk, template, args, env_keys, env_digest, working_dir, user, network, ports, volumes, host_pcrs, firmware, signers, time"})
		}
		if len(out) == 0 {
			out = append(out, celError{msg: iss.Err().Error()})
		}
		return nil, out
	}
	if ast.OutputType() != cel.BoolType {
		return nil, []celError{{line: 1, col: 0, msg: fmt.Sprintf("expression has type %s, want bool", ast.OutputType()),
			hint: "a rule must be true to allow the launch, e.g. node_id in [\"sha256:…\"]"}}
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, []celError{{msg: err.Error()}}
	}
	return prg, nil
}

// evalRule runs a rule over the claims; any error is returned (fail closed).
func evalRule(ctx context.Context, r *Rule, claims map[string]any) (bool, error) {
	if r.prg == nil {
		return false, fmt.Errorf("rule was not compiled")
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	out, _, err := r.prg.ContextEval(ctx, claims)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("result %v is not a bool", out)
	}
	return bool(b), nil
}
