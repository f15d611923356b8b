//go:build !unix

package measure

import "errors"

func lockFile(string) (func(), error) {
	return nil, errors.New("launch event log locking needs a Unix system")
}
