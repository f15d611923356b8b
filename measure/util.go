package measure

import (
	"bytes"
	"io"
	"path/filepath"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// baseName is the memfd label for a path.
func baseName(path string) string { return filepath.Base(path) }
