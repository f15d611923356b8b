package kvm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// Linux kernels are compressed with "xz --x86 --lzma2 --check=crc32": an XZ
// stream whose block runs the x86 BCJ filter before LZMA2. The xz module
// decodes LZMA2 but not BCJ, so this file reads the XZ container itself
// (format: tukaani.org/xz/xz-file-format.txt), decodes LZMA2 with
// ulikunitz/xz/lzma and undoes the BCJ filter, then verifies the stream's
// integrity check over the result.

const (
	xzFilterBCJX86 = 0x04
	xzFilterLZMA2  = 0x21
)

var errXZ = errors.New("xz: malformed stream")

// decompressXZ decodes a single XZ stream (any number of blocks) that uses
// LZMA2, optionally preceded by the x86 BCJ filter. limit bounds the output.
func decompressXZ(in []byte, limit int64) ([]byte, error) {
	if len(in) < 12 || !bytes.HasPrefix(in, compressionMagics[0].magic) {
		return nil, fmt.Errorf("%w: no stream header", errXZ)
	}
	flags := in[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(in[8:12]) || flags[0] != 0 || flags[1]&0xf0 != 0 {
		return nil, fmt.Errorf("%w: bad stream flags", errXZ)
	}
	var newCheck func() hash.Hash
	checkSize := 0
	switch flags[1] & 0x0f {
	case 0x00:
	case 0x01:
		newCheck, checkSize = func() hash.Hash { return crc32.NewIEEE() }, 4
	case 0x04:
		tab := crc64.MakeTable(crc64.ECMA)
		newCheck, checkSize = func() hash.Hash { return crc64.New(tab) }, 8
	case 0x0a:
		newCheck, checkSize = sha256.New, 32
	default:
		return nil, fmt.Errorf("%w: unsupported check type %d", errXZ, flags[1]&0x0f)
	}
	r := bytes.NewReader(in)
	r.Seek(12, io.SeekStart)
	var out bytes.Buffer
	for {
		pos := len(in) - r.Len()
		sizeByte, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: truncated before index", errXZ)
		}
		if sizeByte == 0 {
			break // index indicator: all blocks read (the index is not needed)
		}
		hdrLen := (int(sizeByte) + 1) * 4
		if pos+hdrLen > len(in) {
			return nil, fmt.Errorf("%w: truncated block header", errXZ)
		}
		hdr := in[pos : pos+hdrLen]
		if crc32.ChecksumIEEE(hdr[:hdrLen-4]) != binary.LittleEndian.Uint32(hdr[hdrLen-4:]) {
			return nil, fmt.Errorf("%w: block header checksum", errXZ)
		}
		bcj, dictCap, err := parseBlockHeader(hdr[1 : hdrLen-4])
		if err != nil {
			return nil, err
		}
		r.Seek(int64(pos+hdrLen), io.SeekStart)
		blockStart := out.Len()
		lr, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(r)
		if err != nil {
			return nil, fmt.Errorf("xz: lzma2: %w", err)
		}
		n, err := io.Copy(&out, io.LimitReader(lr, limit-int64(out.Len())+1))
		if err != nil {
			return nil, fmt.Errorf("xz: lzma2: %w", err)
		}
		if int64(out.Len()) > limit {
			return nil, fmt.Errorf("xz: output exceeds %d bytes", limit)
		}
		_ = n
		block := out.Bytes()[blockStart:]
		if bcj {
			bcjX86Decode(block)
		}
		// Block padding to a multiple of 4, then the check.
		consumed := len(in) - r.Len() - (pos + hdrLen)
		for (consumed)%4 != 0 {
			b, err := r.ReadByte()
			if err != nil || b != 0 {
				return nil, fmt.Errorf("%w: block padding", errXZ)
			}
			consumed++
		}
		if checkSize > 0 {
			want := make([]byte, checkSize)
			if _, err := io.ReadFull(r, want); err != nil {
				return nil, fmt.Errorf("%w: truncated check", errXZ)
			}
			h := newCheck()
			h.Write(block)
			got := h.Sum(nil)
			if checkSize != 32 { // CRC32 and CRC64 are stored little-endian
				for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
					got[i], got[j] = got[j], got[i]
				}
			}
			if !bytes.Equal(got, want) {
				return nil, fmt.Errorf("%w: integrity check failed", errXZ)
			}
		}
	}
	return out.Bytes(), nil
}

// parseBlockHeader reads block flags and filter flags (between the size byte
// and the CRC32) and accepts [BCJ x86 (no start offset)] + LZMA2.
func parseBlockHeader(h []byte) (bcj bool, dictCap int, err error) {
	r := bytes.NewReader(h)
	flags, _ := r.ReadByte()
	if flags&0x3c != 0 {
		return false, 0, fmt.Errorf("%w: reserved block flags", errXZ)
	}
	nFilters := int(flags&3) + 1
	if flags&0x40 != 0 {
		if _, err := readVarint(r); err != nil {
			return false, 0, err
		}
	}
	if flags&0x80 != 0 {
		if _, err := readVarint(r); err != nil {
			return false, 0, err
		}
	}
	for i := 0; i < nFilters; i++ {
		id, err := readVarint(r)
		if err != nil {
			return false, 0, err
		}
		psize, err := readVarint(r)
		if err != nil || psize > uint64(r.Len()) {
			return false, 0, fmt.Errorf("%w: filter properties", errXZ)
		}
		props := make([]byte, psize)
		r.Read(props)
		last := i == nFilters-1
		switch {
		case id == xzFilterBCJX86 && !last:
			if len(props) == 4 && binary.LittleEndian.Uint32(props) != 0 || len(props) != 0 && len(props) != 4 {
				return false, 0, fmt.Errorf("xz: BCJ start offset is not supported")
			}
			bcj = true
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return false, 0, fmt.Errorf("%w: LZMA2 properties", errXZ)
			}
			p := props[0]
			if p == 40 {
				return false, 0, fmt.Errorf("xz: 4 GiB LZMA2 dictionary is not supported")
			}
			dictCap = (2 | int(p&1)) << (p/2 + 11)
		default:
			return false, 0, fmt.Errorf("xz: unsupported filter %#x (only x86 BCJ + LZMA2)", id)
		}
	}
	for r.Len() > 0 {
		if b, _ := r.ReadByte(); b != 0 {
			return false, 0, fmt.Errorf("%w: block header padding", errXZ)
		}
	}
	if dictCap == 0 {
		return false, 0, fmt.Errorf("%w: no LZMA2 filter", errXZ)
	}
	if dictCap < lzma.MinDictCap {
		dictCap = lzma.MinDictCap
	}
	return bcj, dictCap, nil
}

func readVarint(r *bytes.Reader) (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: truncated integer", errXZ)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: non-minimal integer", errXZ)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: integer too long", errXZ)
}

// bcjX86Decode undoes the x86 branch-call-jump filter in place: CALL (E8)
// and JMP (E9) targets were converted from relative to absolute addresses
// by the encoder; this converts them back. It processes the whole buffer as
// one stream starting at offset 0, leaving the last 4 bytes as they are,
// as the reference decoder does at the end of a stream.
func bcjX86Decode(buf []byte) {
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msb := func(b byte) bool { return b == 0x00 || b == 0xff }
	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(d-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msb(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msb(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - uint32(i+5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msb(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		dest &= 0x01ffffff
		dest |= -(dest & 0x01000000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
