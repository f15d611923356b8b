package enclave

import (
	"context"
	"crypto/cipher"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
)

// The key-check value: checkPlaintext sealed (AES-256-GCM, random nonce,
// checkAAD) under the master key, stored once in the store for every
// replica to check its key against at start. It reveals nothing about the
// key; a key that opens it is the key every secret was sealed under.
var (
	checkPlaintext = []byte("bulwark vault master key check v1")
	checkAAD       = []byte("bulwark-vault-check-v1")
)

// sealCheck makes a key-check value under aead.
func sealCheck(aead cipher.AEAD, r io.Reader) ([]byte, error) {
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(r, nonce); err != nil {
		return nil, fmt.Errorf("enclave: random nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, checkPlaintext, checkAAD), nil
}

// checkOpens reports whether check is a key-check value made under aead.
func checkOpens(aead cipher.AEAD, check []byte) bool {
	ns := aead.NonceSize()
	if len(check) < ns+aead.Overhead() {
		return false
	}
	pt, err := aead.Open(nil, check[:ns], check[ns:], checkAAD)
	return err == nil && subtle.ConstantTimeCompare(pt, checkPlaintext) == 1
}

// keyOpensCheck reports whether key opens the key-check value check.
func keyOpensCheck(key, check []byte) bool {
	aead, err := newAEAD(key)
	return err == nil && checkOpens(aead, check)
}

// checkStore checks the vault's key against the store's key-check value,
// storing one made under this key when the store has none — after checking
// that the key opens a secret the store already holds (a store written
// before key-check values existed). Two replicas storing their first value
// at once: one wins, and the other compares against it.
func (v *Vault) checkStore(ctx context.Context) error {
	v.mu.RLock()
	aead := v.aead
	v.mu.RUnlock()
	for attempt := 0; ; attempt++ {
		check, err := v.st.VaultCheck(ctx)
		if err == nil {
			if !checkOpens(aead, check) {
				return fmt.Errorf("%w (its key-check value does not open)", ErrWrongMasterKey)
			}
			return nil
		}
		if !errors.Is(err, vaultstore.ErrNotFound) || attempt > 0 {
			return fmt.Errorf("enclave: reading the vault check value: %w", err)
		}
		metas, err := v.st.ListSecrets(ctx)
		if err != nil {
			return fmt.Errorf("enclave: checking the key against the stored secrets: %w", err)
		}
		if len(metas) > 0 {
			s, err := v.st.GetSecret(ctx, metas[0].Name)
			if err != nil {
				return fmt.Errorf("enclave: checking the key against the stored secrets: %w", err)
			}
			pt, err := v.open(s)
			clear(pt)
			if errors.Is(err, ErrDecrypt) {
				return fmt.Errorf("%w (secret %q does not open)", ErrWrongMasterKey, s.Name)
			}
			if err != nil {
				return err
			}
		}
		check, err = sealCheck(aead, v.rand)
		if err != nil {
			return err
		}
		err = v.st.PutVaultCheck(ctx, check)
		if err == nil {
			v.log.Info("vault key-check value stored")
			return nil
		}
		if !errors.Is(err, vaultstore.ErrConflict) {
			return fmt.Errorf("enclave: storing the vault check value: %w", err)
		}
		// Another replica stored its value first: compare against it.
	}
}
