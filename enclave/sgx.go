package enclave

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// SGXKeyName is the file holding the enclave-sealed master key.
const SGXKeyName = "vault-master.sgxseal"

// sgxPlatform is what the sgx backend needs from the enclave runtime (ego);
// the real one is in sgx_cgo.go.
type sgxPlatform interface {
	// remoteReport returns a remote attestation report over data: it only
	// succeeds inside a real (non-simulated) SGX enclave.
	remoteReport(data []byte) ([]byte, error)
	// debug reports whether the enclave is a debug enclave.
	debug() (bool, error)
	// newSealKey returns a fresh product (MRSIGNER) seal key and the key
	// request that derives it again.
	newSealKey() (key, keyInfo []byte, err error)
	// sealKey derives the key again from keyInfo.
	sealKey(keyInfo []byte) ([]byte, error)
}

// SGXBackend keeps the master key sealed with the SGX enclave's product
// seal key (bound to the enclave signer and product id, so a new enclave
// version from the same signer still opens it; nothing outside the enclave
// can). It refuses to run unless it can produce a remote report — proof that
// it runs inside a real enclave — because outside one ego hands out an
// all-zero seal key without an error.
type SGXBackend struct {
	Dir string
	// AllowDebugEnclave accepts a debug enclave (whose memory the host can
	// read). For testing on SGX hardware only.
	AllowDebugEnclave bool

	platform sgxPlatform
}

// NewSGXBackend returns the SGX backend storing its sealed blob in dir. In
// a build without cgo every call fails with ErrUnavailable.
func NewSGXBackend(dir string) *SGXBackend {
	return &SGXBackend{Dir: dir, platform: egoPlatform}
}

// Name implements Backend.
func (b *SGXBackend) Name() string { return "sgx" }

var sgxProbe = sha256.Sum256([]byte("bulwark vault: am I in an SGX enclave?"))

// check proves the process runs inside a real SGX enclave.
func (b *SGXBackend) check() error {
	if b.platform == nil {
		return fmt.Errorf("%w: sgx backend: this attestd was built without cgo, so without ego's enclave support; see docs/vault.md", ErrUnavailable)
	}
	rep, err := b.platform.remoteReport(sgxProbe[:])
	if err != nil || len(rep) == 0 {
		return fmt.Errorf("%w: not running inside an SGX enclave: no remote report (%v); build and run attestd with ego, see docs/vault.md", ErrUnavailable, err)
	}
	dbg, err := b.platform.debug()
	if err != nil {
		return fmt.Errorf("%w: sgx backend: reading the enclave's own report: %v", ErrUnavailable, err)
	}
	if dbg && !b.AllowDebugEnclave {
		return fmt.Errorf("%w: sgx backend: this is a debug enclave, whose memory the host can read; sign attestd for production (ego sign with Debug=false)", ErrUnavailable)
	}
	if b.Dir == "" {
		return fmt.Errorf("sgx backend: no data directory: %w", ErrInvalid)
	}
	return nil
}

func allZero(b []byte) bool {
	var x byte
	for _, c := range b {
		x |= c
	}
	return x == 0
}

// sealAEAD checks a seal key (defense in depth: never all zeros) and
// returns AES-GCM over its SHA-256.
func sealAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) < 16 || allZero(key) {
		return nil, fmt.Errorf("%w: sgx backend: the enclave seal key is missing or all zeros (not a real enclave?)", ErrUnavailable)
	}
	k := sha256.Sum256(append([]byte("bulwark vault sgx v1\x00"), key...))
	defer clear(k[:])
	blk, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

var sgxAAD = []byte("bulwark vault master key v1")

// Init implements Backend. Blob: uint32 len(keyInfo) || keyInfo || nonce || ciphertext.
func (b *SGXBackend) Init(ctx context.Context) error {
	if err := b.check(); err != nil {
		return err
	}
	p := filepath.Join(b.Dir, SGXKeyName)
	if _, err := os.Stat(p); err == nil {
		return fmt.Errorf("%s: %w", p, ErrMasterKeyExists)
	}
	sk, info, err := b.platform.newSealKey()
	if err != nil {
		return fmt.Errorf("sgx backend: seal key: %w", err)
	}
	aead, err := sealAEAD(sk)
	clear(sk)
	if err != nil {
		return err
	}
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return fmt.Errorf("sgx backend: random key: %w", err)
	}
	blob := binary.BigEndian.AppendUint32(nil, uint32(len(info)))
	blob = append(blob, info...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return err
	}
	blob = append(blob, nonce...)
	blob = aead.Seal(blob, nonce, key, sgxAAD)
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		return fmt.Errorf("sgx backend: %w", err)
	}
	return writeNewFile(p, blob)
}

// Open implements Backend.
func (b *SGXBackend) Open(ctx context.Context) ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	p := filepath.Join(b.Dir, SGXKeyName)
	blob, err := readSealedBlob("sgx", p)
	if err != nil {
		return nil, err
	}
	if len(blob) < 4 {
		return nil, fmt.Errorf("sgx backend: %s is truncated", p)
	}
	n := binary.BigEndian.Uint32(blob)
	if n == 0 || uint64(n) > uint64(len(blob)-4) {
		return nil, fmt.Errorf("sgx backend: %s is malformed", p)
	}
	info, rest := blob[4:4+n], blob[4+n:]
	sk, err := b.platform.sealKey(info)
	if err != nil {
		return nil, fmt.Errorf("sgx backend: deriving the seal key (another enclave signer or CPU?): %w", err)
	}
	aead, err := sealAEAD(sk)
	clear(sk)
	if err != nil {
		return nil, err
	}
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("sgx backend: %s is truncated", p)
	}
	key, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], sgxAAD)
	if err != nil {
		return nil, fmt.Errorf("sgx backend: %s does not open with this enclave's seal key (other signer, product or CPU, or tampered)", p)
	}
	if len(key) != KeySize {
		clear(key)
		return nil, fmt.Errorf("sgx backend: master key is %d bytes, want %d", len(key), KeySize)
	}
	return key, nil
}
