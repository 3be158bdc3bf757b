package buildinfo

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
)

// The hash is of the object the binary carries, which is the committed file.
func TestBPFObjectHash(t *testing.T) {
	obj, err := os.ReadFile("../bpf/portcullis_bpfel.o")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(obj)
	if got := Read("x").BPFObject; got != hex.EncodeToString(sum[:]) {
		t.Errorf("BPFObject %s, want the SHA-256 of bpf/portcullis_bpfel.o, %x", got, sum)
	}
}

// Without a toolchain stamp, the commit the Makefile passed is used.
func TestMakefileCommit(t *testing.T) {
	defer func(c string) { commit = c }(commit)
	commit = "0123abcd+dirty"
	if in := Read("x"); in.Revision != "0123abcd" || !in.Modified {
		t.Errorf("Read with a Makefile commit: %+v", in)
	}
}
