// Package signing makes and checks cosign-compatible signatures for what the
// launcher boots: kernels, initrds and policy files (any blob) and OCI images
// (signed by manifest digest through cosign's simple-signing payload).
//
// Keys use cosign's formats both ways: private keys are PKCS#8 encrypted with
// scrypt + NaCl secretbox in an "ENCRYPTED SIGSTORE PRIVATE KEY" PEM block
// (cosign also reads and this package also reads "ENCRYPTED COSIGN PRIVATE
// KEY"), public keys are PEM "PUBLIC KEY" (DER SubjectPublicKeyInfo).
// Signatures are ASN.1 DER (ECDSA P-256, the cosign default) or PKCS#1 v1.5
// (RSA ≥ 2048 bits) over the SHA-256 digest of the artifact, written base64
// as `cosign sign-blob` writes them, so `cosign verify-blob --key cosign.pub
// --signature F.sig --insecure-ignore-tlog=true F` accepts what SignBlob
// makes and VerifyBlob accepts what cosign makes. Sigstore bundles (v0.3,
// key-only, no transparency log) are made and verified offline with
// sigstore-go.
//
// A signing key may also live in a device such as a TPM: the caller opens
// the device and NewSigner wraps its crypto.Signer into sigstore's
// signature.SignerVerifier, so this package links no TPM client (the
// launcher resolves "tpm:SPEC" key references).
//
// Where signatures live next to artifacts (F.sig, F.bundle.json, and for
// images D.sig + D.payload.json) is described in docs/signing.md and
// implemented by SignaturePath, BundlePath and ImagePaths.
package signing
