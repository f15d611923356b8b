// Package measure computes the measurements of a launch and records them.
//
// It hashes guest kernels, initrds, kernel command lines and OCI images
// (every image blob is checked against its digest while it is read), pins
// artifacts into sealed memfds so that the bytes measured are the bytes QEMU
// boots, and encodes the launch event log: TCG Canonical Event Log (CEL)
// records carrying one canonical [LaunchEvent] each, whose digests are
// extended into the launch PCR and replayed by attestd (see docs/eventlog.md).
//
// Digests cross package boundaries as strings "sha256:<hex>" (or
// "sha384:<hex>"), the form OCI uses.
package measure
