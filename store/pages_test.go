package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/overlay"
)

// bigStore writes a store whose history is three levels deep (a branch above branches
// above leaves), closes it and returns its path.
func bigStore(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "overlay.db")
	s, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for batch := range 4 {
		var evs []overlay.Event
		for i := range 1500 {
			evs = append(evs, event(overlay.Added, quarantine("192.0.2.1/32", batch*1500+i), "bulk"))
		}
		if err := s.Commit(nil, nil, evs); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func graphOf(t *testing.T, path string) pageGraph {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	g, err := checkPages(f, fi.Size())
	if err != nil {
		t.Fatalf("checkPages of an undamaged store: %v", err)
	}
	return g
}

// TestPageFormatMatchesBbolt: what checkPages reads from the raw bytes (the meta bbolt
// picks, the page size, every page's header, the inline buckets) is what bbolt itself
// says of the same file. If a bbolt upgrade changes its file format, this fails.
func TestPageFormatMatchesBbolt(t *testing.T) {
	for _, c := range []struct {
		name  string
		store func(t *testing.T) string
	}{
		{"fresh (every bucket inline)", func(t *testing.T) string {
			path, s := newStore(t)
			s.Close()
			return path
		}},
		{"entries on pages of their own", func(t *testing.T) string {
			path, _ := goodStore(t)
			return path
		}},
		{"history three levels deep", bigStore},
		{"the newer meta page damaged (bbolt falls back to the older)", func(t *testing.T) string {
			path, _ := goodStore(t)
			g := graphOf(t, path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[g.meta.txid%2*g.pageSize+pageHeaderSize+metaSumLen] ^= 1 // its checksum
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if g2 := graphOf(t, path); g2.meta.txid != g.meta.txid-1 {
				t.Fatalf("after damaging meta txid %d, checkPages reads by txid %d, want %d", g.meta.txid, g2.meta.txid, g.meta.txid-1)
			}
			return path
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := c.store(t)
			g := graphOf(t, path)
			db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := db.Info().PageSize; got != int(g.pageSize) || uint64(g.meta.pageSize) != g.pageSize {
				t.Errorf("page size: bbolt %d, checkPages %d (meta says %d)", got, g.pageSize, g.meta.pageSize)
			}
			err = db.View(func(tx *bolt.Tx) error {
				if tx.ID() != int(g.meta.txid) {
					t.Errorf("txid: bbolt reads by %d, checkPages by %d", tx.ID(), g.meta.txid)
				}
				if tx.Size() != int64(g.meta.hwm*g.pageSize) {
					t.Errorf("size: bbolt %d, checkPages %d pages of %d", tx.Size(), g.meta.hwm, g.pageSize)
				}
				if fl, err := tx.Page(int(g.meta.freelist)); err != nil || fl == nil || fl.Type != "freelist" {
					t.Errorf("page %d, the freelist for checkPages, is to bbolt %+v (%v)", g.meta.freelist, fl, err)
				}
				for _, p := range g.pages {
					info, err := tx.Page(int(p.id))
					if err != nil || info == nil {
						t.Fatalf("bbolt has no page %d: %v", p.id, err)
					}
					want := map[uint16]string{branchPageFlag: "branch", leafPageFlag: "leaf"}[p.flags]
					if info.Type != want || info.Count != int(p.count) || info.OverflowCount != int(p.overflow) {
						t.Errorf("page %d: bbolt says %s, %d elements, %d overflow; checkPages %s, %d, %d",
							p.id, info.Type, info.Count, info.OverflowCount, want, p.count, p.overflow)
					}
				}
				// The root bucket is one leaf page (three buckets); every other page
				// checkPages reached is a page of one of them, as their stats count.
				if root, _ := tx.Page(int(g.meta.root)); root == nil || root.Type != "leaf" || root.OverflowCount != 0 {
					t.Fatalf("the root bucket's root page %d is %+v, not one leaf", g.meta.root, root)
				}
				pages, overflow, inline := 1, 0, 0
				for _, name := range [][]byte{bucketEntries, bucketHistory, bucketMeta} {
					st := tx.Bucket(name).Stats()
					pages += st.BranchPageN + st.LeafPageN
					overflow += st.BranchOverflowN + st.LeafOverflowN
					inline += st.InlineBucketN
				}
				gotOverflow := 0
				for _, p := range g.pages {
					gotOverflow += int(p.overflow)
				}
				if len(g.pages) != pages || gotOverflow != overflow || g.inline != inline {
					t.Errorf("checkPages reached %d pages (%d overflow) and %d inline buckets; bbolt counts %d (%d) and %d",
						len(g.pages), gotOverflow, g.inline, pages, overflow, inline)
				}
				return nil
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			// And the store opens: checkPages passed, then bbolt read by the same meta.
			if s, err := Open(path, false); err != nil {
				t.Errorf("Open: %v", err)
			} else {
				s.Close()
			}
		})
	}
}

// openWithin runs Open in a goroutine and fails the test if it has not returned within
// d: a hang is the bug this guards against.
func openWithin(t *testing.T, path string, d time.Duration) (*Store, error) {
	t.Helper()
	type result struct {
		s   *Store
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Open(path, true)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(d):
		t.Fatalf("Open has not returned after %s: it hangs", d)
		return nil, nil
	}
}

// TestOpenDamagedDoesNotHang is the file that made Open hang: a cursor descended
// forever through a damaged branch page.
func TestOpenDamagedDoesNotHang(t *testing.T) {
	p := t.TempDir() + "/r.db"
	s, err := Open(p, true)
	if err != nil {
		t.Fatal(err)
	}
	e := overlay.Entry{Kind: overlay.Quarantine, Prefix: netip.MustParsePrefix("100.64.1.2/32"), Expires: time.Now().Add(time.Hour), Reason: "x"}
	if err := s.Commit([]overlay.Entry{e}, nil, []overlay.Event{{Time: time.Now(), Action: overlay.Added, Entry: e}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(data); i += 61 {
		data[i] ^= 0xa5
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s, err = openWithin(t, p, 30*time.Second)
	if err == nil {
		s.Close()
		t.Fatal("Open of the damaged file succeeded")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
	t.Logf("%s after %s", err, time.Since(start))
}

// TestPageCycles: page ids that lead back to a page already on the way down are
// reported as a cycle, not followed.
func TestPageCycles(t *testing.T) {
	le := binary.NativeEndian
	// child is where the first element of branch page id points.
	child := func(b []byte, g pageGraph, id uint64) []byte {
		return b[id*g.pageSize+pageHeaderSize+8:][:8]
	}
	branches := func(g pageGraph) []uint64 {
		var ids []uint64
		for _, p := range g.pages {
			if p.flags == branchPageFlag {
				ids = append(ids, p.id)
			}
		}
		return ids
	}
	for _, c := range []struct {
		name   string
		store  func(t *testing.T) string
		damage func(t *testing.T, b []byte, g pageGraph)
	}{
		{"a branch page pointing at itself", bigStore, func(t *testing.T, b []byte, g pageGraph) {
			id := branches(g)[0]
			le.PutUint64(child(b, g, id), id)
		}},
		{"a branch page pointing at its parent", bigStore, func(t *testing.T, b []byte, g pageGraph) {
			for _, parent := range branches(g) {
				c := le.Uint64(child(b, g, parent))
				if le.Uint16(b[c*g.pageSize+8:]) == branchPageFlag {
					le.PutUint64(child(b, g, c), parent)
					return
				}
			}
			t.Fatal("no branch page under a branch page: the tree is not three levels deep")
		}},
		{"a bucket whose root is the page holding it", func(t *testing.T) string {
			path, _ := goodStore(t)
			return path
		}, func(t *testing.T, b []byte, g pageGraph) {
			// The root leaf holds the buckets: entries is its first element, a bucket
			// with a root page of its own.
			e := g.meta.root*g.pageSize + pageHeaderSize
			v := e + uint64(le.Uint32(b[e+4:])) + uint64(le.Uint32(b[e+8:]))
			if le.Uint32(b[e:])&bucketLeafFlag == 0 || le.Uint64(b[v:]) == 0 {
				t.Fatal("the root leaf's first element is not a bucket on pages of its own")
			}
			le.PutUint64(b[v:], g.meta.root)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := c.store(t)
			g := graphOf(t, path)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c.damage(t, b, g)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := openWithin(t, path, 30*time.Second)
			if err == nil {
				s.Close()
				t.Fatal("Open of the damaged file succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "reached twice (a cycle)") {
				t.Fatalf("Open = %v, want ErrCorrupt saying it found a cycle", err)
			}
			t.Log(strings.ReplaceAll(err.Error(), path, "FILE"))
		})
	}
}

// TestDamagePatternsNeverHang damages a small store in many ways (bytes xored at every
// step-th offset past page 0; every single byte flipped in turn) and opens each: Open
// must return, with the state intact or with ErrCorrupt (ErrVersion), never hang.
// Damage to the newer meta page opens the file as it was one commit earlier
// (docs/store.md): that state is intact too.
func TestDamagePatternsNeverHang(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "overlay.db")
	s, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	states := map[uint64]overlay.State{} // by generation
	for n := 1; n <= 3; n++ {
		e := quarantine(fmt.Sprintf("192.0.2.%d/32", n), n)
		if err := s.Commit([]overlay.Entry{e}, nil, []overlay.Event{event(overlay.Added, e, "report")}); err != nil {
			t.Fatal(err)
		}
		states[s.Generation()] = mustLoad(t, s)
	}
	s.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g := graphOf(t, path)
	pageSize, used := int(g.pageSize), int(g.meta.hwm*g.pageSize)
	t.Logf("%d bytes, %d of them in pages below the high-water mark", len(good), used)

	type pattern struct {
		name  string
		bytes []byte
	}
	var patterns []pattern
	for step := 7; step <= 200; step++ {
		b := append([]byte(nil), good...)
		for i := pageSize; i < len(b); i += step {
			b[i] ^= 0xa5
		}
		patterns = append(patterns, pattern{fmt.Sprintf("xor 0xa5 every %d bytes from page 1", step), b})
	}
	// Past the high-water mark is room bbolt grew the file by: no one reads it.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range used {
		b := append([]byte(nil), good...)
		x := byte(1 + r.IntN(255))
		b[i] ^= x
		patterns = append(patterns, pattern{fmt.Sprintf("byte %d xor %#02x", i, x), b})
	}

	var current atomic.Value // the pattern being opened, for the watchdog
	var opened, intact, damaged int
	// Written in place, not truncated and rewritten: ext4 flushes a file rewritten
	// that way on close, which made this test take minutes.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, p := range patterns {
			current.Store(p.name)
			if _, err := f.WriteAt(p.bytes, 0); err != nil {
				t.Error(err)
				return
			}
			s, err := Open(path, true)
			opened++
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
					t.Errorf("%s: Open = %v, want ErrCorrupt or ErrVersion", p.name, err)
				}
				damaged++
				continue
			}
			st, err := s.Load()
			gen := s.Generation()
			s.Close()
			want, ok := states[gen]
			switch {
			case err != nil:
				t.Errorf("%s: Open succeeded, then Load = %v", p.name, err)
			case !ok || gen+1 < uint64(len(states)):
				t.Errorf("%s: Open succeeded at generation %d, want %d (or %d: the older meta page)", p.name, gen, len(states), len(states)-1)
			case !reflect.DeepEqual(st, want):
				t.Errorf("%s: Open succeeded and Load returned another state than generation %d's: %d entries, %d events", p.name, gen, len(st.Entries), len(st.History))
			default:
				intact++
			}
		}
	}()
	const limit = 3 * time.Minute // it takes seconds; this only stops a hang
	start := time.Now()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("still opening after %s: Open hangs on %q", limit, current.Load())
	}
	t.Logf("%d damaged files opened in %s: %d intact, %d reported damaged", opened, time.Since(start), intact, damaged)
}
