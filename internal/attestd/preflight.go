package attestd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Preflight tells an enrolled host, before it boots anything, whether the
// named policy allows the artifacts it is about to launch. It is advisory
// and records nothing: Attest, after the quote is verified, is the
// judgement, and the only path to secrets.
//
// Anyone holding the CA certificate and a node id may call it, so its
// reasons name what was refused (kernel, cmdline, ...) without what the
// policy allows (digests, signers, command lines): those are for a caller
// with an admin client certificate, who gets the policy's own reasons.
func (s *Server) Preflight(ctx context.Context, req *bulwarkv1.PreflightRequest) (*bulwarkv1.PreflightResponse, error) {
	if err := validatePreflight(req); err != nil {
		return nil, err
	}
	n, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "node_id: not enrolled (run 'launcher enroll')")
	}
	if err != nil {
		return nil, s.storeStatus(ctx, "preflight", err)
	}
	if err := nodeActive(n); err != nil {
		return nil, err
	}
	now := s.now()
	ev := policy.Evidence{
		NodeID: n.ID,
		Event: measure.LaunchEvent{
			Policy: req.GetPolicy(), Kernel: req.GetKernel(), Initrd: req.GetInitrd(),
			Cmdline: req.GetCmdline(), CmdlineDigest: measure.DigestCmdline(measure.SHA256, req.GetCmdline()),
			Image: req.GetImage(), ImageConfig: req.GetImageConfig(), Args: req.GetArgs(), Time: now,
			TemplateRecipe: req.GetTemplateRecipe(), TemplateRAM: req.GetTemplateRam(), TemplateState: req.GetTemplateState(),
			EnvKeys: req.GetEnvKeys(), EnvDigest: req.GetEnvDigest(), WorkingDir: req.GetWorkingDir(), User: req.GetUser(),
			Network: req.GetNetwork(), Ports: req.GetPorts(), Volumes: req.GetVolumes(),
		},
		Signatures: artifactSignatures(req.GetSignatures()),
		Time:       now,
	}
	j := s.policies.Preflight(ctx, ev)
	if !j.Allow && len(j.Reasons) == 0 {
		j.Reasons = []string{"denied by policy"}
	}
	// A secret the policy releases but the vault lacks would fail the
	// release after a whole boot: refuse now, naming it.
	missing, err := s.missingSecrets(ctx, j.Releases)
	if err != nil {
		return nil, s.storeStatus(ctx, "preflight: secrets", err)
	}
	for _, name := range missing {
		j.Allow = false
		j.Reasons = append(j.Reasons, fmt.Sprintf("secrets: policy %s releases secret %q, which is not in the vault: attestd ctl secret put %s --from-file FILE", j.Policy, name, name))
	}
	if len(missing) > 0 {
		s.log.WarnContext(ctx, "preflight: the policy releases secrets the vault lacks", "policy", j.Policy, "missing", missing)
	}
	admin := false
	if s.adminCA != nil {
		_, aerr := s.authorizeAdmin(ctx)
		admin = aerr == nil
	}
	s.log.DebugContext(ctx, "preflight", "node", n.ID, "policy", j.Policy, "allow", j.Allow, "reasons", len(j.Reasons), "admin", admin)
	reasons := j.Reasons
	if !admin {
		reasons = redactReasons(j, req.GetPolicy())
	}
	return &bulwarkv1.PreflightResponse{Allow: j.Allow, Reasons: reasons, Policy: j.Policy}, nil
}

// preflightFields are the parts of a launch Preflight judges, as the
// policy's reasons begin ("kernel: ...").
var preflightFields = []struct{ field, refused string }{
	{"validity", "the policy is not in force at this time"},
	{"kernel", "the kernel is not allowed by the policy (digest or signature)"},
	{"initrd", "the initrd is not allowed by the policy (digest or signature)"},
	{"cmdline", "the kernel command line is not allowed by the policy"},
	{"image", "the image is not allowed by the policy (digest or signature)"},
	{"args", "the command override is not allowed by the policy"},
	{"env", "the environment variables set over the image's are not allowed by the policy"},
	{"network", "the guest network is not allowed by the policy"},
	{"volumes", "a volume is not allowed by the policy"},
	{"templates", "the policy does not allow a clone of this VM template (launcher run --template none boots cold)"},
	{"secrets", "the policy releases a secret that is not in attestd's vault yet: an admin must add it (attestd ctl secret put NAME; attestd's log names it)"},
}

// missingSecrets returns the names, of those given, that the vault does
// not hold. It reads the secrets' metadata only: nothing is decrypted.
func (s *Server) missingSecrets(ctx context.Context, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	metas, err := s.vault.List(ctx)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(metas))
	for _, m := range metas {
		have[m.Name] = true
	}
	var missing []string
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

// redactReasons rewrites a preflight judgement's reasons for a caller who
// is not an admin: one line per refused part of the launch, naming it,
// and nothing of what the policy allows. A reason that names no known
// part becomes a generic refusal.
func redactReasons(j policy.Verdict, requested string) []string {
	if len(j.Reasons) == 0 {
		return nil
	}
	if j.Policy == "" { // no policy judged: the named one is not loaded
		return []string{fmt.Sprintf("policy: %q is not loaded on this attestation service: check the name with your administrator", trunc(requested))}
	}
	const detail = " (an admin client certificate sees what it allows)"
	var out []string
	seen := map[string]bool{}
	for _, r := range j.Reasons {
		line := "policy: the launch is refused" + detail
		for _, f := range preflightFields {
			if strings.HasPrefix(r, f.field+":") {
				line = f.field + ": " + f.refused + detail
				break
			}
		}
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	return out
}
