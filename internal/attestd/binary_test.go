package attestd

import "os"

var binDir string

func cleanupBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
