// Package policy reads, validates and evaluates Bulwark's admin policy files:
// which kernels, initrds, command lines and images may run, what host boot
// state is required, which secrets a matching workload receives.
//
// Parsing is strict and reports every problem with file:line:column and a hint
// (Parse, LoadDir). A loaded Set judges verified evidence against the one
// policy the launch names (Set.Evaluate) and returns every reason for a deny.
// A Watcher keeps a directory's policies loaded and swaps the whole set
// atomically; a file that fails to load leaves the last good set in force.
// Reference policies are written from the artifacts themselves (Reference).
//
// The file format is documented in docs/policy.md and docs/policy.schema.json.
package policy
