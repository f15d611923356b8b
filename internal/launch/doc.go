// Package launch is the launcher's measured, attested launch, step by step
// (see the shared design): verify signatures, pin and measure the artifacts,
// boot the sandbox, take the guest's key, record the launch event in the host
// log and the TPM's launch PCR, attest to attestd, forward the released
// secrets, run the workload and return its exit code. It also enrolls the host
// (EK/AK) with attestd. cmd/launcher reaches it through internal/launchercmd.
package launch
