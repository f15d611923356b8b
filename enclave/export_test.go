package enclave

// NewFakeSGXBackend returns an sgx backend over a simulated enclave whose
// "CPU" secret is root (fakeEnclave), for the conformance run in package
// enclave_test. Tests only.
func NewFakeSGXBackend(dir string, root []byte) Backend {
	return &SGXBackend{Dir: dir, platform: &fakeEnclave{inEnclave: true, root: root}}
}
