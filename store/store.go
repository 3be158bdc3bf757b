// Package store keeps overlay.State on disk: the runtime entries (quarantines, unblocks)
// and their history, so they outlive a restart of the daemon. It is one bbolt file; every
// change is one fsync'd transaction, and a damaged file is reported as damaged, never
// read as an empty store. docs/store.md describes the file and what to do when it is
// damaged.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/portcullis/portcullis/overlay"
)

// HistoryLimit is how many events the history keeps; a commit that takes it past the
// limit drops the oldest in the same transaction. At the limit the file is about 50 MB
// and Open reads and checks it in about 1.5 s (2 vCPUs).
const HistoryLimit = 100000

// formatVersion is the layout this package writes and reads (docs/store.md).
const formatVersion = 1

// Test hooks: the history bound and how long Open waits for another process's lock.
var (
	historyLimit = HistoryLimit
	lockTimeout  = 2 * time.Second
)

// Sentinel errors, all of the package's.
var (
	// ErrMissing: Open without create found no file at the path.
	ErrMissing = errors.New("no store at this path")
	// ErrCorrupt: the file is damaged (bbolt cannot open it, it is truncated, a page or
	// a value does not check out). Nothing of it was loaded.
	ErrCorrupt = errors.New("store damaged")
	// ErrLocked: another process holds the file open.
	ErrLocked = errors.New("store in use by another process")
	// ErrVersion: the file is in a format version this build does not read.
	ErrVersion = errors.New("store in another format version")
)

// Store is an open store. Its methods may be called from several goroutines.
type Store struct {
	path string
	db   *bolt.DB
	file *os.File   // the file db holds, read by checkPages before Load's cursors
	mu   sync.Mutex // serialises Commit, so the generation counts commits in order
	gen  atomic.Uint64
	// opened is the state Open read while checking the file, handed to the first Load
	// if no commit came in between (so a start decodes the file once, not twice).
	opened *overlay.State
}

// Open opens the store at path. With create, a missing file is made (a first start),
// and its directory too (0700); the file is 0600. Without create, a missing file is
// ErrMissing. An existing file is never recreated: a damaged one is ErrCorrupt whatever
// create says. Before the store is handed out the whole file is read on a read-only
// handle: bbolt's consistency check, every value's checksum, every record decoded. It
// waits at most 2 s for another process's lock (ErrLocked).
func Open(path string, create bool) (*Store, error) {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := createFile(path); err != nil {
			return nil, err
		}
		if info, err = os.Stat(path); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s does not exist (a first start creates it; after that its loss means the runtime entries it held are lost unless restored from the audit log or a backup)", ErrMissing, path)
	case err != nil:
		return nil, fmt.Errorf("open store: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("open store: %s is a %s, not a file: give the store a path of its own", path, modeName(info.Mode()))
	}
	if info.Size() == 0 {
		return nil, corrupt(path, "the file is empty (truncated to nothing)")
	}
	checked, err := verify(path)
	if err != nil {
		return nil, err
	}

	db, f, err := openBolt(path, false)
	if err != nil {
		return nil, err
	}
	// The lock is let go between the check and this open: the file must be the one
	// checked, unchanged.
	changed := fmt.Errorf("open store: %s was replaced or written to while it was being opened (by another portcullis?): open it again", path)
	fi, err := f.Stat()
	if err != nil || !os.SameFile(fi, checked.info) {
		db.Close()
		return nil, changed
	}
	s := &Store{path: path, db: db, file: f, opened: &checked.state}
	// Unlocked in between, so it could have changed: its pages are checked again
	// before readMeta's cursors follow them.
	if _, err := checkPages(f, fi.Size()); err != nil {
		db.Close()
		return nil, s.wrap(err)
	}
	var m meta
	err = guarded(path, func() error {
		return db.View(func(tx *bolt.Tx) (err error) { m, err = readMeta(tx); return err })
	})
	if err != nil {
		db.Close()
		return nil, s.wrap(err)
	}
	if m.generation != checked.generation {
		db.Close()
		return nil, changed
	}
	s.gen.Store(m.generation)
	return s, nil
}

// Load returns the entries (in key order: kind, then prefix) and the history (oldest
// first) as saved, or ErrCorrupt if anything in the file does not check out. The first
// Load after Open returns what Open read, if nothing was committed since; every other
// Load reads the file again (its page graph first), with commits held off meanwhile.
func (s *Store) Load() (overlay.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	opened := s.opened
	s.opened = nil
	if opened != nil {
		return *opened, nil
	}
	// No commit runs (s.mu) and no other process writes (the lock): the pages read
	// here are the ones the transaction below reads.
	fi, err := s.file.Stat()
	if err != nil {
		return overlay.State{}, s.wrap(err)
	}
	if _, err := checkPages(s.file, fi.Size()); err != nil {
		return overlay.State{}, s.wrap(err)
	}
	var st overlay.State
	err = guarded(s.path, func() error {
		return s.db.View(func(tx *bolt.Tx) (err error) { st, _, err = readState(tx); return err })
	})
	if err != nil {
		return overlay.State{}, s.wrap(err)
	}
	return st, nil
}

// Commit makes one change durable in one bbolt transaction, fsync'd before it returns:
// it deletes the remove keys (a key that is not there is no error), then writes the
// upsert entries (so an entry in both ends up saved), appends the events to the history
// and drops the oldest events past HistoryLimit. On an error nothing of the change is
// saved and the generation does not move.
func (s *Store) Commit(upsert []overlay.Entry, remove []overlay.Key, events []overlay.Event) error {
	puts := make([][2][]byte, 0, len(upsert))
	for _, e := range upsert {
		k, err := entryKey(e.Key())
		if err != nil {
			return fmt.Errorf("store %s: commit: %w", s.path, err)
		}
		v, err := encode(k, e)
		if err != nil {
			return fmt.Errorf("store %s: commit: entry %s: %w", s.path, e.Key(), err)
		}
		puts = append(puts, [2][]byte{k, v})
	}
	dels := make([][]byte, 0, len(remove))
	for _, key := range remove {
		k, err := entryKey(key)
		if err != nil {
			return fmt.Errorf("store %s: commit: %w", s.path, err)
		}
		dels = append(dels, k)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened = nil
	gen := s.gen.Load() + 1
	err := guarded(s.path, func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			bs, err := buckets(tx)
			if err != nil {
				return err
			}
			for _, k := range dels {
				if err := bs.entries.Delete(k); err != nil {
					return err
				}
			}
			for _, kv := range puts {
				if err := bs.entries.Put(kv[0], kv[1]); err != nil {
					return err
				}
			}
			if err := appendHistory(bs.history, events); err != nil {
				return err
			}
			v, err := encode(metaGeneration, gen)
			if err != nil {
				return err
			}
			return bs.meta.Put(metaGeneration, v)
		})
	})
	if err != nil {
		return s.wrap(fmt.Errorf("commit (nothing of this change was saved): %w", err))
	}
	s.gen.Store(gen)
	return nil
}

// appendHistory adds events under the next sequence numbers and drops the events more
// than historyLimit sequence numbers behind the newest.
func appendHistory(h *bolt.Bucket, events []overlay.Event) error {
	if len(events) == 0 {
		return nil
	}
	h.FillPercent = 1 // appended in key order: fill pages, do not split them in half
	var last uint64
	for _, ev := range events {
		seq, err := h.NextSequence()
		if err != nil {
			return err
		}
		k := seqKey(seq)
		v, err := encode(k, ev)
		if err != nil {
			return fmt.Errorf("event %s %s: %w", ev.Action, ev.Entry.Key(), err)
		}
		if err := h.Put(k, v); err != nil {
			return err
		}
		last = seq
	}
	if last <= uint64(historyLimit) {
		return nil
	}
	keep := seqKey(last - uint64(historyLimit) + 1) // the oldest event kept
	var drop [][]byte
	c := h.Cursor()
	for k, _ := c.First(); k != nil && string(k) < string(keep); k, _ = c.Next() {
		drop = append(drop, append([]byte(nil), k...))
	}
	for _, k := range drop {
		if err := h.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Generation is the number of commits ever made to this store (saved in it): 0 for a
// store never used, so a controller can tell a first start from a store that was lost.
func (s *Store) Generation() uint64 { return s.gen.Load() }

// Path is the file the store is in.
func (s *Store) Path() string { return s.path }

// Close closes the file and releases its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store %s: close: %w", s.path, err)
	}
	return nil
}

// wrap names the store in an error that does not name it yet.
func (s *Store) wrap(err error) error {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrVersion) {
		return err
	}
	if err := named(s.path, err); err != nil {
		return err
	}
	return fmt.Errorf("store %s: %w", s.path, err)
}

// named is the damage or the version error in err named with the file, or nil if err
// is neither.
func named(path string, err error) error {
	if d, ok := errors.AsType[damage](err); ok {
		return corrupt(path, string(d))
	}
	if v, ok := errors.AsType[versionError](err); ok {
		return v.at(path)
	}
	return nil
}

// createFile makes a new, empty store at path: it is built under a temporary name in the
// same directory and linked into place, so path is either absent or a complete store
// (a crash in the middle leaves a stray temporary file, never a half-made store).
func createFile(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*") // mode 0600
	if err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	tmp := f.Name()
	f.Close()
	defer os.Remove(tmp)

	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketHistory, bucketMeta} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		for _, kv := range []struct {
			k []byte
			v any
		}{{metaFormat, formatVersion}, {metaGeneration, uint64(0)}, {metaCreated, time.Now().UTC()}} {
			v, err := encode(kv.k, kv.v)
			if err != nil {
				return err
			}
			if err := m.Put(kv.k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	// Link, not rename: if another process made path meanwhile, its store stays.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create store: %w", err)
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openBolt opens path with bbolt, never creating it (a store moved aside between the
// check and the open must not come back empty), and returns the file bbolt holds.
func openBolt(path string, readOnly bool) (*bolt.DB, *os.File, error) {
	var f *os.File
	opts := &bolt.Options{
		Timeout:  lockTimeout,
		ReadOnly: readOnly,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			var err error
			f, err = os.OpenFile(name, flag&^os.O_CREATE, perm)
			return f, err
		},
	}
	var db *bolt.DB
	err := guarded(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, opts)
		return err
	})
	switch {
	case err == nil:
		return db, f, nil
	case errors.Is(err, ErrCorrupt):
		return nil, nil, err
	case errors.Is(err, berrors.ErrTimeout):
		return nil, nil, fmt.Errorf("%w: %s is locked (waited %s): another portcullis is running with this store? Stop it, or give each daemon a store of its own", ErrLocked, path, lockTimeout)
	case errors.Is(err, berrors.ErrVersionMismatch):
		return nil, nil, corrupt(path, "bbolt cannot open it: its meta pages carry another bbolt file-format version")
	}
	var pe *fs.PathError
	var errno syscall.Errno
	if errors.As(err, &pe) || errors.As(err, &errno) {
		return nil, nil, fmt.Errorf("open store %s: %w", path, err) // the system refused, the file may be fine
	}
	// ErrInvalid, ErrChecksum, "file size too small": what bbolt says of a file that is
	// not (or no longer) one of its own.
	return nil, nil, corrupt(path, "bbolt cannot open it ("+err.Error()+")")
}

// verify reads the whole file on a read-only handle before the store opens it for
// writing, so a damaged file is reported and left as it was found.
//
// bbolt reads its file through mmap and follows the page numbers it finds there
// unchecked. The order below keeps a damaged page number from hanging or crashing the
// process: checkPages first walks the page graph from the raw bytes (every id in range,
// no page reached twice, so no cursor can loop), then every page is read under guarded
// (a fault is a panic there), and only then does tx.Check, whose goroutine has no such
// guard, read the same pages again.
//
// What it read comes back, so that Open can tell that the file it opens for writing is
// the one it checked, and the first Load need not read it again.
func verify(path string) (checked, error) {
	var c checked
	db, f, err := openBolt(path, true)
	if err != nil {
		return c, err
	}
	defer db.Close()
	if c.info, err = f.Stat(); err != nil {
		return c, fmt.Errorf("open store: %w", err)
	}
	// Under the read lock: no one writes while the pages are checked and then read.
	g, err := checkPages(f, c.info.Size())
	if err != nil {
		if n := named(path, err); n != nil {
			return c, n
		}
		return c, fmt.Errorf("open store %s: %w", path, err)
	}
	err = guarded(path, func() error {
		err := db.View(func(tx *bolt.Tx) error {
			// The tree checked must be the one bbolt reads.
			if tx.ID() != int(g.meta.txid) || tx.Size() != int64(g.meta.hwm*g.pageSize) || db.Info().PageSize != int(g.pageSize) {
				return damage(fmt.Sprintf("bbolt reads it by another meta page than the page check did (txid %d, %d bytes, pages of %d; the check: txid %d, %d bytes, pages of %d)",
					tx.ID(), tx.Size(), db.Info().PageSize, g.meta.txid, g.meta.hwm*g.pageSize, g.pageSize))
			}
			walk(tx)
			var problems []string
			for err := range tx.Check() {
				problems = append(problems, err.Error())
			}
			if len(problems) > 0 {
				more := ""
				if len(problems) > 3 {
					more = fmt.Sprintf(" (and %d more)", len(problems)-3)
					problems = problems[:3]
				}
				return damage(fmt.Sprintf("bbolt's consistency check failed: %s%s", strings.Join(problems, "; "), more))
			}
			st, m, rerr := readState(tx)
			c.state, c.generation = st, m.generation
			return rerr
		})
		if n := named(path, err); n != nil {
			return n
		}
		return err
	})
	return c, err
}

type checked struct {
	info       fs.FileInfo
	state      overlay.State
	generation uint64
}

// walk reads every key and value of every bucket, so that each page is touched once
// under guarded before tx.Check touches it.
func walk(tx *bolt.Tx) uint32 {
	var sum uint32
	var bucket func(c *bolt.Cursor, b func(k []byte) *bolt.Bucket)
	bucket = func(c *bolt.Cursor, sub func(k []byte) *bolt.Bucket) {
		for k, v := c.First(); k != nil; k, v = c.Next() {
			sum = checksum(checksum(sum, k), v)
			if v == nil {
				if b := sub(k); b != nil {
					bucket(b.Cursor(), b.Bucket)
				}
			}
		}
	}
	bucket(tx.Cursor(), tx.Bucket)
	return sum
}

// guarded runs fn with faults on the mapped file turned into panics, and a panic into
// ErrCorrupt: bbolt trusts the bytes it maps, and a damaged page makes it panic (or read
// past the end of the file) instead of returning an error.
func guarded(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corrupt(path, fmt.Sprintf("reading it failed: %v", r))
		}
	}()
	return fn()
}

// damage is what is wrong in a file, before it is named: readState does not know the path.
type damage string

func (d damage) Error() string { return string(d) }

func corrupt(path, what string) error {
	return fmt.Errorf("%w: %s: %s; move it aside and restart: the entries the data plane still enforces are then recovered from it (an unblock for a day), the others and the history only from the audit log or a backup", ErrCorrupt, path, what)
}

// versionError is a format version other than ours, before the path is known.
type versionError struct{ found int }

func (v versionError) Error() string { return fmt.Sprintf("format version %d", v.found) }

func (v versionError) at(path string) error {
	return fmt.Errorf("%w: %s is format version %d, this portcullis reads version %d: run the portcullis that wrote it, or move it aside (the runtime entries it held are then lost unless restored from the audit log or a backup)", ErrVersion, path, v.found, formatVersion)
}

func modeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
