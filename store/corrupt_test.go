package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/overlay"
)

// goodStore writes a store with enough entries that the entries bucket has pages of its
// own (bbolt keeps a small bucket inline in its parent's page), closes it and returns
// its path and page size.
func goodStore(t *testing.T) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "overlay.db")
	s, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for batch := range 3 {
		var es []overlay.Entry
		var evs []overlay.Event
		for i := 1 + batch*20; i <= 20+batch*20; i++ {
			e := quarantine(fmt.Sprintf("192.0.2.%d/32", i), i)
			es = append(es, e)
			evs = append(evs, event(overlay.Added, e, "report"))
		}
		if err := s.Commit(es, nil, evs); err != nil {
			t.Fatal(err)
		}
	}
	u := unblock("2001:db8::1/128", 1)
	u.Reason = "flipme-reason"
	if err := s.Commit([]overlay.Entry{u}, nil, []overlay.Event{event(overlay.Added, u, "")}); err != nil {
		t.Fatal(err)
	}
	return path, s.db.Info().PageSize
}

// replaceAll replaces every occurrence of old in the file (the live copy of a page and
// any stale copies bbolt left in free pages) and fails if there is none.
func replaceAll(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%q is not in the file: the damage would not be done", old)
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(b, []byte(old), []byte(new)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// zeroPages zeroes the pages (past the two meta pages) that hold marker.
func zeroPages(t *testing.T, path string, pageSize int, marker string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 2 * pageSize; off+pageSize <= len(b); off += pageSize {
		if page := b[off : off+pageSize]; bytes.Contains(page, []byte(marker)) {
			clear(page)
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no page holds %q", marker)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// redirectBranches points the first child of every branch page at pgid (bbolt's page
// layout: a 16-byte header of id u64, flags u16, count u16, overflow u32; then branch
// elements of pos u32, ksize u32, pgid u64). Stale copies of branch pages in free pages
// are changed too, to be sure the live one is.
func redirectBranches(t *testing.T, path string, pageSize int, pgid func(pages int) uint64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for id := 2; (id+1)*pageSize <= len(b); id++ {
		page := b[id*pageSize : (id+1)*pageSize]
		if binary.LittleEndian.Uint64(page) == uint64(id) && binary.LittleEndian.Uint16(page[8:]) == 0x01 {
			binary.LittleEndian.PutUint64(page[16+8:], pgid(len(b)/pageSize))
			n++
		}
	}
	if n == 0 {
		t.Fatal("no branch page in the file")
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// edit changes the file through bbolt itself: well-formed bbolt, damaged contents.
func edit(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// sealed is a value with a correct checksum around any payload.
func sealed(key []byte, payload string) []byte {
	out := binary.BigEndian.AppendUint32(nil, checksum(checksum(0, key), []byte(payload)))
	return append(out, payload...)
}

func put(bucket []byte, key []byte, value []byte) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, value) }
}

func entryJSON(t *testing.T, e overlay.Entry) string {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDamageIsReported(t *testing.T) {
	k1 := []byte("quarantine/192.0.2.1/32")
	for _, c := range []struct {
		name   string
		damage func(t *testing.T, path string, pageSize int)
		want   error
		says   string // in the message, so the test knows which check caught it
	}{
		{"not a bbolt file", func(t *testing.T, path string, _ int) {
			b := make([]byte, 64<<10)
			r := rand.NewChaCha8([32]byte{1})
			r.Read(b)
			os.WriteFile(path, b, 0o600)
		}, ErrCorrupt, "bbolt cannot open it"},
		{"a few bytes of text", func(t *testing.T, path string, _ int) {
			os.WriteFile(path, []byte("hello\n"), 0o600)
		}, ErrCorrupt, "bbolt cannot open it"},
		{"truncated to nothing", func(t *testing.T, path string, _ int) {
			os.Truncate(path, 0)
		}, ErrCorrupt, "empty"},
		{"truncated inside the first pages", func(t *testing.T, path string, _ int) {
			os.Truncate(path, 1000)
		}, ErrCorrupt, "bbolt cannot open it"},
		{"truncated after three pages", func(t *testing.T, path string, pageSize int) {
			os.Truncate(path, int64(3*pageSize))
		}, ErrCorrupt, "truncated"},
		{"both meta pages zeroed", func(t *testing.T, path string, pageSize int) {
			b, _ := os.ReadFile(path)
			clear(b[:2*pageSize])
			os.WriteFile(path, b, 0o600)
		}, ErrCorrupt, "bbolt cannot open it"},
		{"a data page zeroed", func(t *testing.T, path string, pageSize int) {
			zeroPages(t, path, pageSize, "quarantine/192.0.2.7/32")
		}, ErrCorrupt, ""},
		// bbolt follows page numbers into its mmap unchecked: a fault there must be an
		// error, not a crash of the process.
		{"a page number past the end of the file", func(t *testing.T, path string, pageSize int) {
			redirectBranches(t, path, pageSize, func(pages int) uint64 { return uint64(pages + 2) })
		}, ErrCorrupt, "reading it failed"},
		{"a page number far outside the file", func(t *testing.T, path string, pageSize int) {
			redirectBranches(t, path, pageSize, func(int) uint64 { return 1 << 32 })
		}, ErrCorrupt, "reading it failed"},
		{"keys out of order (only bbolt's check sees it)", func(t *testing.T, path string, _ int) {
			replaceAll(t, path, "quarantine/192.0.2.30/32", "quarantine/192.0.2.00/32")
		}, ErrCorrupt, "consistency check"},
		{"a flipped byte in a value", func(t *testing.T, path string, _ int) {
			replaceAll(t, path, "flipme-reason", "flipmE-reason")
		}, ErrCorrupt, "checksum mismatch"},
		{"a value too short for its checksum", func(t *testing.T, path string, _ int) {
			edit(t, path, put(bucketEntries, k1, []byte{1, 2, 3}))
		}, ErrCorrupt, "too short"},
		{"an entry that is not JSON", func(t *testing.T, path string, _ int) {
			edit(t, path, put(bucketEntries, k1, sealed(k1, `{"kind":"quarantine",`)))
		}, ErrCorrupt, "does not decode"},
		{"an event that is not JSON", func(t *testing.T, path string, _ int) {
			k := seqKey(2)
			edit(t, path, put(bucketHistory, k, sealed(k, `[]`)))
		}, ErrCorrupt, "does not decode"},
		{"an entry under another entry's key", func(t *testing.T, path string, _ int) {
			e := quarantine("192.0.2.2/32", 2)
			edit(t, path, put(bucketEntries, k1, sealed(k1, entryJSON(t, e))))
		}, ErrCorrupt, "holds the entry quarantine 192.0.2.2/32"},
		{"an entry of an unknown kind", func(t *testing.T, path string, _ int) {
			e := quarantine("192.0.2.1/32", 1)
			e.Kind = "bogus"
			k := []byte("bogus/192.0.2.1/32")
			edit(t, path, put(bucketEntries, k, sealed(k, entryJSON(t, e))))
		}, ErrCorrupt, "unknown kind"},
		{"an event past the history's sequence", func(t *testing.T, path string, _ int) {
			edit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketHistory).SetSequence(3) })
		}, ErrCorrupt, "past the bucket's sequence 3"},
		{"no history bucket", func(t *testing.T, path string, _ int) {
			edit(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketHistory) })
		}, ErrCorrupt, "no history bucket"},
		{"no generation", func(t *testing.T, path string, _ int) {
			edit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaGeneration) })
		}, ErrCorrupt, "no generation"},
		{"another format version", func(t *testing.T, path string, _ int) {
			edit(t, path, put(bucketMeta, metaFormat, sealed(metaFormat, "2")))
		}, ErrVersion, "format version 2, this portcullis reads version 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, pageSize := goodStore(t)
			c.damage(t, path, pageSize)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, create := range []bool{false, true} {
				s, err := Open(path, create)
				if err == nil {
					st, lerr := s.Load()
					s.Close()
					t.Fatalf("Open(create=%v) of a damaged file succeeded (Load: %d entries, %d events, error %v)", create, len(st.Entries), len(st.History), lerr)
				}
				if !errors.Is(err, c.want) {
					t.Fatalf("Open(create=%v) = %v, want %v", create, err, c.want)
				}
				if c.want != ErrCorrupt && errors.Is(err, ErrCorrupt) {
					t.Errorf("the error is also ErrCorrupt: %v", err)
				}
				msg := err.Error()
				if !create {
					t.Log(msg)
				}
				if !strings.Contains(msg, path) {
					t.Errorf("the error does not name the file %s: %s", path, msg)
				}
				// The path holds the test's name: look for the rest without it.
				for _, s := range []string{c.says, "move it aside"} {
					if !strings.Contains(strings.ReplaceAll(msg, path, "FILE"), s) {
						t.Errorf("the error does not say %q: %s", s, msg)
					}
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Error("Open changed the damaged file: it must be left as it was found")
			}
		})
	}
}

// TestDamageAfterOpen: a Load after the first (which hands over what Open read) reads the
// file again and reports damage done while it was open, instead of what it read before.
func TestDamageAfterOpen(t *testing.T) {
	path, _ := goodStore(t)
	s, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	// Write in place: bbolt maps this very file.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 0; ; n++ {
		i := bytes.Index(b[off:], []byte("flipme-reason"))
		if i < 0 {
			break
		}
		if _, err := f.WriteAt([]byte("E"), int64(off+i+5)); err != nil {
			t.Fatal(err)
		}
		off += i + 1
	}
	f.Close()
	if n == 0 {
		t.Fatal("the marker is not in the file")
	}
	st, err := s.Load()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("Load after damage = %d entries, %d events, error %v; want ErrCorrupt naming %s and the checksum", len(st.Entries), len(st.History), err, path)
	}
	if len(st.Entries) != 0 || len(st.History) != 0 {
		t.Fatalf("Load returned a partial state with its error: %d entries", len(st.Entries))
	}
}
