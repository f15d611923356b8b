//go:build !cgo

package enclave

// Without cgo there is no ego enclave support: the sgx backend says so.
var egoPlatform sgxPlatform
