package store

// checkPages walks the page graph of the bbolt file from its raw bytes, bounded, before
// any bbolt cursor reads it.
//
// Why it exists: bbolt follows the page ids it finds in its mapped file without checking
// them. An id past the end of the file faults (guarded turns that into an error), but a
// branch page that points back at itself or at an ancestor makes a cursor descend
// forever, and a loop is not a fault: Open hung on such a file. Here every page id is
// checked to be in range, every page to be what it claims and to be reached at most
// once, every element to lie inside its page; only a file that passes goes on to bbolt.
//
// The format read is bbolt v1.5.0's (go.etcd.io/bbolt/internal/common meta.go, page.go
// and bucket.go; how the page size is found and which meta page wins, db.go), in the
// machine's byte order as bbolt writes it. TestPageFormatMatchesBbolt checks it against
// what bbolt reports, so that a bbolt upgrade changing the format fails that test rather
// than this check quietly.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
)

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	// A page: a header of id u64, flags u16, count u16, overflow u32, then count
	// elements, then the keys and values they point at (pos counts from the element).
	pageHeaderSize = 16
	branchElemSize = 16 // pos u32, ksize u32, child pgid u64
	leafElemSize   = 16 // flags u32, pos u32, ksize u32, vsize u32

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01 // in a leaf element: the value is a bucket

	// A bucket value: root pgid u64, sequence u64; root 0 means an inline bucket, whose
	// leaf page follows in the value.
	bucketHeaderSize = 16

	// The meta, after page 0's and page 1's header: magic, version, page size, flags
	// (u32 each); root bucket (pgid, sequence), freelist pgid, high-water pgid, txid,
	// then an FNV-64a checksum of the 56 bytes before it (u64 each).
	metaSize   = 64
	metaSumLen = 56
	noFreelist = math.MaxUint64

	// maxDepth bounds the descent, pages and nested buckets together. A store's tree
	// is a few levels deep (50 MB of 4 KiB pages is 4); this only keeps a damaged file
	// from recursing without end.
	maxDepth = 64
)

// boltMeta is the meta page bbolt reads a file by.
type boltMeta struct {
	pageSize uint32 // as the meta says; the file is read at the page size found as bbolt finds it
	flags    uint32
	root     uint64 // the root bucket's root page
	rootSeq  uint64
	freelist uint64 // noFreelist if none is saved
	hwm      uint64 // high-water mark: pages [0, hwm) are in use or free
	txid     uint64
}

// pageInfo is a page of the tree, as its header says.
type pageInfo struct {
	id       uint64
	flags    uint16
	count    uint16
	overflow uint32
}

// pageGraph is what checkPages found: the meta it read by, the page size it read at,
// the tree pages in the order reached (not their overflow pages), and how many
// buckets were inline.
type pageGraph struct {
	meta     boltMeta
	pageSize uint64
	pages    []pageInfo
	inline   int
}

// checkPages reads the file (size bytes) as bbolt would and checks its page graph. What
// it returns is a damage, to be named with the file, or an error of the system reading.
func checkPages(r io.ReaderAt, size int64) (pageGraph, error) {
	var g pageGraph
	m, pageSize, err := pickMeta(r, size)
	if err != nil {
		return g, err
	}
	g.meta, g.pageSize = m, pageSize
	if m.hwm > uint64(size)/pageSize {
		says := fmt.Sprintf("%d pages of %d bytes", m.hwm, pageSize)
		if m.hwm <= math.MaxInt64/pageSize {
			says = fmt.Sprint(m.hwm * pageSize)
		}
		return g, damage(fmt.Sprintf("truncated: the file is %d bytes, its meta page says %s", size, says))
	}
	if err := checkFreelist(r, m, pageSize); err != nil {
		return g, err
	}
	w := walker{r: r, pageSize: pageSize, hwm: m.hwm, seen: make([]bool, m.hwm), g: &g}
	if err := w.page(m.root, "the meta page", 0); err != nil {
		return g, err
	}
	return g, nil
}

// bad is a damage found in the page graph: a page that cannot be read as what it should be.
func bad(format string, args ...any) error {
	return damage("reading it failed: " + fmt.Sprintf(format, args...))
}

// pickMeta finds the page size as bbolt's getPageSize does (page 0's meta; failing that,
// the first valid meta at 1 KiB, 2 KiB, ... 16 MiB), then picks the meta as DB.meta
// does: of the two, the one with the higher txid (page 0 on a tie) if it is valid, else
// the other if that is.
func pickMeta(r io.ReaderAt, size int64) (boltMeta, uint64, error) {
	var pageSize uint32
	if m, err := readBoltMeta(r, 0); err == nil && size >= 4096 {
		pageSize = m.pageSize
	} else {
		for i := range 15 {
			pos := int64(1024) << i
			if pos >= size-1024 {
				break
			}
			if m, err := readBoltMeta(r, pos); err == nil {
				pageSize = m.pageSize
				break
			}
		}
	}
	if pageSize == 0 {
		return boltMeta{}, 0, bad("neither meta page checks out")
	}
	if pageSize < 1024 || pageSize > 16<<20 {
		return boltMeta{}, 0, bad("its meta page says a page size of %d bytes (bbolt's are 1 KiB to 16 MiB)", pageSize)
	}
	a, erra := readBoltMeta(r, 0)
	b, errb := readBoltMeta(r, int64(pageSize))
	if b.txid > a.txid {
		a, b, erra, errb = b, a, errb, erra
	}
	switch {
	case erra == nil:
		return a, uint64(pageSize), nil
	case errb == nil:
		return b, uint64(pageSize), nil
	}
	return boltMeta{}, 0, bad("neither meta page checks out (%v; %v)", erra, errb)
}

// readBoltMeta reads the meta of the page at off. The fields come back even when it does not
// check out: bbolt compares txids before it checks.
func readBoltMeta(r io.ReaderAt, off int64) (boltMeta, error) {
	var buf [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(buf[:], off); err != nil {
		return boltMeta{}, fmt.Errorf("meta at %d: %w", off, err)
	}
	b := buf[pageHeaderSize:]
	le := binary.NativeEndian
	m := boltMeta{
		pageSize: le.Uint32(b[8:]), flags: le.Uint32(b[12:]),
		root: le.Uint64(b[16:]), rootSeq: le.Uint64(b[24:]),
		freelist: le.Uint64(b[32:]), hwm: le.Uint64(b[40:]), txid: le.Uint64(b[48:]),
	}
	h := fnv.New64a()
	h.Write(b[:metaSumLen])
	switch {
	case le.Uint32(b[0:]) != boltMagic:
		return m, fmt.Errorf("meta at %d: not bbolt's magic", off)
	case le.Uint32(b[4:]) != boltVersion:
		return m, fmt.Errorf("meta at %d: bbolt format version %d", off, le.Uint32(b[4:]))
	case le.Uint64(b[metaSumLen:]) != h.Sum64():
		return m, fmt.Errorf("meta at %d: checksum mismatch", off)
	}
	return m, nil
}

// checkFreelist checks that the freelist page is one and that its ids fit in it: bbolt
// reads it (in tx.Check, on a goroutine no fault guard covers) trusting its count.
func checkFreelist(r io.ReaderAt, m boltMeta, pageSize uint64) error {
	if m.freelist == noFreelist {
		return nil
	}
	if m.freelist < 2 || m.freelist >= m.hwm {
		return bad("the freelist is page %d, outside pages 2 to %d", m.freelist, m.hwm-1)
	}
	p, buf, err := readPage(r, m.freelist, pageSize, m.hwm)
	if err != nil {
		return err
	}
	if p.id != m.freelist || p.flags != freelistPageFlag {
		return bad("page %d is not the freelist the meta page says it is (header: page %d, flags %#x)", m.freelist, p.id, p.flags)
	}
	n, skip := uint64(p.count), uint64(0)
	if p.count == 0xFFFF { // more than fits in count: the first id is the count
		if len(buf) < pageHeaderSize+8 {
			return bad("freelist page %d is too short for its count", m.freelist)
		}
		n, skip = binary.NativeEndian.Uint64(buf[pageHeaderSize:]), 1
	}
	if n > uint64(len(buf)-pageHeaderSize)/8-skip {
		return bad("freelist page %d says %d free pages, more than fit in it", m.freelist, n)
	}
	return nil
}

// readPage reads page id with its overflow pages, all of which must be below hwm.
func readPage(r io.ReaderAt, id, pageSize, hwm uint64) (pageInfo, []byte, error) {
	var p pageInfo
	head := make([]byte, pageSize)
	if err := readAt(r, head, id*pageSize); err != nil {
		return p, nil, err
	}
	le := binary.NativeEndian
	p = pageInfo{id: le.Uint64(head), flags: le.Uint16(head[8:]), count: le.Uint16(head[10:]), overflow: le.Uint32(head[12:])}
	if uint64(p.overflow) >= hwm-id {
		return p, nil, bad("page %d: %d overflow pages run past the last page in use (%d)", id, p.overflow, hwm-1)
	}
	if p.overflow == 0 {
		return p, head, nil
	}
	buf := make([]byte, (1+uint64(p.overflow))*pageSize)
	copy(buf, head)
	return p, buf, readAt(r, buf[pageSize:], (id+1)*pageSize)
}

func readAt(r io.ReaderAt, buf []byte, off uint64) error {
	_, err := r.ReadAt(buf, int64(off))
	if errors.Is(err, io.EOF) {
		return bad("the file ends inside page data at byte %d", off)
	}
	return err
}

type walker struct {
	r        io.ReaderAt
	pageSize uint64
	hwm      uint64
	seen     []bool // by page id, overflow pages included
	g        *pageGraph
}

// page checks the page id, reached from (for the messages), and everything below it.
func (w *walker) page(id uint64, from string, depth int) error {
	switch {
	case depth > maxDepth:
		return bad("page %d (from %s): more than %d levels deep", id, from, maxDepth)
	case id < 2:
		return bad("page %d (from %s): a meta page where a branch or leaf belongs", id, from)
	case id >= w.hwm:
		return bad("page %d (from %s): past the last page in use (%d)", id, from, w.hwm-1)
	case w.seen[id]:
		return bad("page %d is reached twice (a cycle)", id)
	}
	p, buf, err := readPage(w.r, id, w.pageSize, w.hwm)
	if err != nil {
		return err
	}
	if p.id != id {
		return bad("page %d (from %s): its header says it is page %d", id, from, p.id)
	}
	for i := id; i <= id+uint64(p.overflow); i++ {
		if w.seen[i] {
			return bad("page %d is reached twice (a cycle)", i)
		}
		w.seen[i] = true
	}
	w.g.pages = append(w.g.pages, p)
	here := fmt.Sprintf("page %d", id)
	switch p.flags {
	case branchPageFlag:
		if p.count == 0 {
			return bad("branch page %d has no elements", id)
		}
		if err := fits(buf, p.count, branchElemSize, here); err != nil {
			return err
		}
		le := binary.NativeEndian
		for i := range int(p.count) {
			e := pageHeaderSize + i*branchElemSize
			if err := inside(buf, e, le.Uint32(buf[e:]), le.Uint32(buf[e+4:]), 0, here, i); err != nil {
				return err
			}
			if err := w.page(le.Uint64(buf[e+8:]), here, depth+1); err != nil {
				return err
			}
		}
		return nil
	case leafPageFlag:
		return w.leaf(buf, p.count, here, depth)
	}
	return bad("page %d (from %s): flags %#x, neither a branch nor a leaf", id, from, p.flags)
}

// leaf checks the elements of a leaf page (buf starts at its header, mapped or inline)
// and descends into the buckets it holds.
func (w *walker) leaf(buf []byte, count uint16, here string, depth int) error {
	if err := fits(buf, count, leafElemSize, here); err != nil {
		return err
	}
	le := binary.NativeEndian
	for i := range int(count) {
		e := pageHeaderSize + i*leafElemSize
		flags, pos, ksize, vsize := le.Uint32(buf[e:]), le.Uint32(buf[e+4:]), le.Uint32(buf[e+8:]), le.Uint32(buf[e+12:])
		if err := inside(buf, e, pos, ksize, vsize, here, i); err != nil {
			return err
		}
		if flags&bucketLeafFlag == 0 {
			continue
		}
		v := buf[e+int(pos)+int(ksize):][:vsize]
		if err := w.bucket(v, fmt.Sprintf("%s, element %d", here, i), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// bucket checks a bucket value: a root page, or an inline leaf page in the value itself.
func (w *walker) bucket(v []byte, from string, depth int) error {
	if len(v) < bucketHeaderSize {
		return bad("%s: a bucket value of %d bytes, shorter than a bucket header", from, len(v))
	}
	if root := binary.NativeEndian.Uint64(v); root != 0 {
		return w.page(root, from, depth)
	}
	w.g.inline++
	p := v[bucketHeaderSize:]
	if len(p) < pageHeaderSize {
		return bad("%s: an inline bucket of %d bytes, shorter than a page header", from, len(v))
	}
	if depth > maxDepth {
		return bad("%s: more than %d levels deep", from, maxDepth)
	}
	if flags := binary.NativeEndian.Uint16(p[8:]); flags != leafPageFlag {
		return bad("%s: an inline bucket whose page has flags %#x, not a leaf", from, flags)
	}
	return w.leaf(p, binary.NativeEndian.Uint16(p[10:]), from+" (inline)", depth)
}

// fits checks that count elements of size fit in the page (buf) after its header.
func fits(buf []byte, count uint16, size int, where string) error {
	if pageHeaderSize+int(count)*size > len(buf) {
		return bad("%s: %d elements do not fit in its %d bytes", where, count, len(buf))
	}
	return nil
}

// inside checks that the key and value of element i, at offset e (pos counts from the
// element), lie inside the page.
func inside(buf []byte, e int, pos, ksize, vsize uint32, where string, i int) error {
	if end := uint64(e) + uint64(pos) + uint64(ksize) + uint64(vsize); end > uint64(len(buf)) {
		return bad("%s, element %d: its key and value run %d bytes past the end of the page", where, i, end-uint64(len(buf)))
	}
	return nil
}
