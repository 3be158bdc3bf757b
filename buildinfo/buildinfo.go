// Package buildinfo says which build of Portcullis is running: the module version, the
// commit it was built from (the Go toolchain's VCS stamp), and the SHA-256 of the BPF
// object compiled into it, so that a binary in the field can be matched to its source
// and its data plane.
package buildinfo

import (
	"crypto/sha256"
	"encoding/hex"
	"runtime/debug"
	"strings"
	_ "unsafe" // go:linkname

	_ "github.com/portcullis/portcullis/bpf" // links the object in
)

// bpfObject is the BPF object bpf2go embeds in package bpf (bpf/portcullis_bpfel.o).
// bpf2go keeps it unexported and bpf/ is generated, so it is reached by its link
// name; if a future bpf2go renames it, the build fails rather than the hash lying.
//
//go:linkname bpfObject github.com/portcullis/portcullis/bpf._PortcullisBytes
var bpfObject []byte

// Info describes a build.
type Info struct {
	Version   string // the module version; the caller's default for a build from a checkout
	Revision  string // the commit (vcs.revision); "" when built without VCS information
	Modified  bool   // built from a tree with uncommitted changes (vcs.modified)
	Time      string // the commit's time (vcs.time), RFC 3339
	Go        string // the Go version that built it
	BPFObject string // the SHA-256 of the embedded BPF object, in hex
}

// commit is the commit the Makefile passes (-ldflags -X, "+dirty" appended for a tree
// with changes), for builds the Go toolchain does not stamp: a linked git worktree
// (golang/go#58218) or GOFLAGS=-buildvcs=false. The toolchain's stamp wins if present.
var commit string

// Read returns the running binary's Info. defaultVersion stands in for the module
// version when the build has none (a build from a checkout reports "(devel)").
func Read(defaultVersion string) Info {
	bi, ok := debug.ReadBuildInfo()
	in := From(bi, ok, bpfObject, defaultVersion)
	if in.Revision == "" && commit != "" {
		in.Revision, in.Modified = strings.CutSuffix(commit, "+dirty")
	}
	return in
}

// From builds an Info from build information (ok as debug.ReadBuildInfo returns it)
// and the bytes of a BPF object.
func From(bi *debug.BuildInfo, ok bool, obj []byte, defaultVersion string) Info {
	sum := sha256.Sum256(obj)
	in := Info{Version: defaultVersion, BPFObject: hex.EncodeToString(sum[:])}
	if !ok || bi == nil {
		return in
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		in.Version = v
	}
	in.Go = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		case "vcs.time":
			in.Time = s.Value
		}
	}
	return in
}
