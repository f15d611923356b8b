package policy

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// hintCheckPath is readVerified's hint for a file that does not exist
// (callers that know where the path came from say more).
const hintCheckPath = "check the path"

// maxSigSize bounds a .sig file (base64 of a DER signature; RSA-4096 is ~700 bytes).
const maxSigSize = 16 << 10

// readVerified reads path (at most limit bytes) and, when opts asks for it,
// checks the detached signature path+".sig": base64 of an ASN.1 signature
// over the file bytes, as 'cosign sign-blob --key' writes. It reports
// whether a signature verified.
func readVerified(path string, limit int64, opts LoadOptions) ([]byte, bool, *Error) {
	data, err := fsutil.ReadFileLimit(path, limit)
	if err != nil {
		hint := ""
		if errors.Is(err, fs.ErrNotExist) {
			hint = hintCheckPath
		}
		return nil, false, &Error{File: path, Msg: "cannot read: " + trimPathPrefix(err.Error(), path), Hint: hint}
	}
	if len(opts.AdminKeys) == 0 {
		if opts.RequireSigned {
			return nil, false, &Error{File: path, Msg: "signed policies are required but no admin public key is configured", Hint: "pass the admins' public keys (--policy-key)"}
		}
		return data, false, nil
	}
	sigPath := path + ".sig"
	sigText, err := fsutil.ReadFileLimit(sigPath, maxSigSize)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if opts.RequireSigned {
				return nil, false, &Error{File: path, Msg: "no signature file " + sigPath + " and signed policies are required",
					Hint: "sign it: cosign sign-blob --key admin.key --output-signature " + sigPath + " " + path}
			}
			return data, false, nil
		}
		return nil, false, &Error{File: path, Msg: "cannot read signature: " + err.Error()}
	}
	sig, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sigText)))
	if err != nil {
		return nil, false, &Error{File: sigPath, Msg: "signature is not base64", Hint: "the .sig file holds base64 of a DER signature, as 'cosign sign-blob --key' writes it"}
	}
	for _, k := range opts.AdminKeys {
		if k.verifyMessage(data, sig) {
			return data, true, nil
		}
	}
	fps := make([]string, len(opts.AdminKeys))
	for i, k := range opts.AdminKeys {
		fps[i] = short(k.Fingerprint)
	}
	return nil, false, &Error{File: path, Msg: fmt.Sprintf("signature %s does not verify with any admin key (%s)", sigPath, strings.Join(fps, ", ")),
		Hint: "the file changed after signing, or it was signed with another key: re-sign it with an admin key"}
}

func trimPathPrefix(msg, path string) string {
	msg = strings.TrimPrefix(msg, "open "+path+": ")
	return strings.TrimPrefix(msg, path+" ")
}
