//go:build !linux

package tpm

import (
	"errors"
	"os/exec"
	"time"
)

var errNotLinux = errors.New("the managed swtpm is supported on Linux only")

func detach(*exec.Cmd)                   {}
func processAlive(int) bool              { return false }
func terminate(int, time.Duration) error { return errNotLinux }
