//go:build cgo

package enclave

import egoenclave "github.com/edgelesssys/ego/enclave"

// ego is the real enclave runtime (github.com/edgelesssys/ego/enclave). Its
// calls are system calls that only ego's enclave loader implements; in an
// ordinary process they fail (reports) or return zeros (seal keys).
type ego struct{}

var egoPlatform sgxPlatform = ego{}

func (ego) remoteReport(data []byte) ([]byte, error) { return egoenclave.GetRemoteReport(data) }

func (ego) debug() (bool, error) {
	r, err := egoenclave.GetSelfReport()
	if err != nil {
		return false, err
	}
	return r.Debug, nil
}

func (ego) newSealKey() (key, keyInfo []byte, err error) {
	return egoenclave.GetRandomProductSealKey()
}

func (ego) sealKey(keyInfo []byte) ([]byte, error) { return egoenclave.GetSealKey(keyInfo) }
