package shim

import (
	"io"

	apitypes "github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"
)

// WriteInfo answers containerd 2.x's 'SHIM -info' query (the v1.7 shim
// library does not know the flag): the runtime's name, as protobuf.
func WriteInfo(w io.Writer) error {
	b, err := proto.Marshal(&apitypes.RuntimeInfo{Name: RuntimeName})
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
