package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/portcullis/portcullis/overlay"
)

// The layout (docs/store.md). Every value is a 4-byte big-endian CRC-32C of the key and
// the payload, then the payload, JSON.
var (
	bucketEntries = []byte("entries") // kind "/" prefix -> overlay.Entry
	bucketHistory = []byte("history") // 8-byte big-endian sequence -> overlay.Event
	bucketMeta    = []byte("meta")    // the keys below

	metaFormat     = []byte("format")     // int: formatVersion
	metaGeneration = []byte("generation") // uint64: commits made
	metaCreated    = []byte("created")    // time the file was made
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(sum uint32, b []byte) uint32 { return crc32.Update(sum, castagnoli, b) }

// encode seals v under key: the checksum covers the key too, so a value that turns up
// under another key does not check out either.
func encode(key []byte, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint32(out, checksum(checksum(0, key), payload))
	return append(out, payload...), nil
}

// decode checks the value under key and decodes its payload into v; what it returns
// is a damage, to be named with the file.
func decode(bucket string, key, value []byte, v any) error {
	if len(value) < 4 {
		return damage(fmt.Sprintf("bucket %s, key %s: a value of %d bytes, too short to carry its checksum", bucket, showKey(key), len(value)))
	}
	payload := value[4:]
	if want, got := binary.BigEndian.Uint32(value), checksum(checksum(0, key), payload); want != got {
		return damage(fmt.Sprintf("bucket %s, key %s: checksum mismatch (saved %08x, computed %08x): the value was changed after it was written", bucket, showKey(key), want, got))
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return damage(fmt.Sprintf("bucket %s, key %s: the value does not decode: %v", bucket, showKey(key), err))
	}
	return nil
}

func showKey(k []byte) string {
	if len(k) == 8 {
		return fmt.Sprintf("#%d", binary.BigEndian.Uint64(k))
	}
	return fmt.Sprintf("%q", k)
}

// entryKey is the key of an entry in the entries bucket.
func entryKey(k overlay.Key) ([]byte, error) {
	if !k.Kind.Valid() {
		return nil, fmt.Errorf("%w %q: quarantine or unblock", overlay.ErrKind, k.Kind)
	}
	if !k.Prefix.IsValid() {
		return nil, fmt.Errorf("%w: an entry without a prefix", overlay.ErrInvalid)
	}
	return []byte(string(k.Kind) + "/" + k.Prefix.String()), nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

type bucketSet struct{ entries, history, meta *bolt.Bucket }

func buckets(tx *bolt.Tx) (bucketSet, error) {
	bs := bucketSet{tx.Bucket(bucketEntries), tx.Bucket(bucketHistory), tx.Bucket(bucketMeta)}
	for i, b := range []*bolt.Bucket{bs.entries, bs.history, bs.meta} {
		if b == nil {
			name := [][]byte{bucketEntries, bucketHistory, bucketMeta}[i]
			return bs, damage(fmt.Sprintf("no %s bucket: not a portcullis store, or its root page is damaged", name))
		}
	}
	return bs, nil
}

type meta struct {
	generation uint64
	created    time.Time
}

func readMeta(tx *bolt.Tx) (meta, error) {
	var m meta
	bs, err := buckets(tx)
	if err != nil {
		return m, err
	}
	get := func(key []byte, v any) error {
		raw := bs.meta.Get(key)
		if raw == nil {
			return damage(fmt.Sprintf("bucket meta has no %s", key))
		}
		return decode("meta", key, raw, v)
	}
	var format int
	if err := get(metaFormat, &format); err != nil {
		return m, err
	}
	if format != formatVersion {
		return m, versionError{format}
	}
	if err := get(metaGeneration, &m.generation); err != nil {
		return m, err
	}
	if err := get(metaCreated, &m.created); err != nil {
		return m, err
	}
	return m, nil
}

// readState decodes and checks everything: the meta, each entry (checksum, JSON, a kind
// and a prefix, stored under its own key) and each event (checksum, JSON, a sequence
// number the bucket has handed out).
func readState(tx *bolt.Tx) (overlay.State, meta, error) {
	var st overlay.State
	m, err := readMeta(tx)
	if err != nil {
		return st, m, err
	}
	bs, _ := buckets(tx)
	err = bs.entries.ForEach(func(k, v []byte) error {
		if v == nil {
			return damage(fmt.Sprintf("bucket entries, key %s: a bucket where an entry belongs", showKey(k)))
		}
		var e overlay.Entry
		if err := decode("entries", k, v, &e); err != nil {
			return err
		}
		want, err := entryKey(e.Key())
		if err != nil {
			return damage(fmt.Sprintf("bucket entries, key %s: %v", showKey(k), err))
		}
		if !bytes.Equal(k, want) {
			return damage(fmt.Sprintf("bucket entries, key %s holds the entry %s", showKey(k), e.Key()))
		}
		st.Entries = append(st.Entries, e)
		return nil
	})
	if err != nil {
		return overlay.State{}, m, err
	}
	seq := bs.history.Sequence()
	err = bs.history.ForEach(func(k, v []byte) error {
		if v == nil || len(k) != 8 {
			return damage(fmt.Sprintf("bucket history, key %s: not an event's 8-byte sequence number", showKey(k)))
		}
		if n := binary.BigEndian.Uint64(k); n > seq {
			return damage(fmt.Sprintf("bucket history, key %s: past the bucket's sequence %d", showKey(k), seq))
		}
		var ev overlay.Event
		if err := decode("history", k, v, &ev); err != nil {
			return err
		}
		st.History = append(st.History, ev)
		return nil
	})
	if err != nil {
		return overlay.State{}, m, err
	}
	return st, m, nil
}
