//go:build !linux

package tpm

import (
	"context"
	"errors"
	"os/exec"
	"time"
)

var errNotLinux = errors.New("the managed swtpm is supported on Linux only")

func lockFile(context.Context, string) (func(), error) { return nil, errNotLinux }
func detach(*exec.Cmd)                                 {}
func processAlive(int) bool                            { return false }
func terminate(int, time.Duration) error               { return errNotLinux }
