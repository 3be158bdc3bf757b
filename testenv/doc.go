// Package testenv builds the network-namespace topologies that back the end-to-end
// tests, the benchmarks and `portcullis demo` (see ../shared/DESIGN.md, "Test
// environment"). It is filled in by the test-topology work.
package testenv
