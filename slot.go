package rediskit

import (
	"strconv"
	"strings"
	"sync"
)

// Redis Cluster puts a key in one of 16384 hash slots: CRC16 of the key's
// hash tag (the text between its first "{" and the next "}", when that text
// is not empty), or of the whole key. A script may only touch keys of one
// slot, so a companion key (a lock's fencing counter) must hash like the key
// it serves, whatever braces the user's key contains. go-redis computes
// slots in an internal package, which cannot be imported; the CRC is small
// enough to carry here, and the integration tests check it against
// CLUSTER KEYSLOT on a real cluster.

const numSlots = 16384

// hashTag returns the part of key that Redis Cluster hashes.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			return key[open+1 : open+1+n]
		}
	}
	return key
}

// keySlot returns the Redis Cluster hash slot of key.
func keySlot(key string) int {
	return int(crc16(hashTag(key)) % numSlots)
}

// companionKey returns a key that Redis Cluster places in the same slot as
// key, distinct from key and from the companions of other keys with the
// same suffix: "{" + tag + "}" + key + suffix, where tag hashes like key.
// The tag is the text key is hashed by, unless that text contains "}" (a key
// such as "a}b{c" or "{}" hashed whole), in which case it is a short
// brace-free string picked from a table to fall in the same slot.
func companionKey(key, suffix string) string {
	tag := hashTag(key)
	if strings.IndexByte(tag, '}') >= 0 {
		tag = slotTags()[keySlot(key)]
	}
	return "{" + tag + "}" + key + suffix
}

// slotTags returns, for each slot, a short string without braces that
// hashes to it. It is built once, on first need: about 170,000 CRCs of
// four-byte strings, a few milliseconds.
var slotTags = sync.OnceValue(func() *[numSlots]string {
	var tags [numSlots]string
	for n, left := 0, numSlots; left > 0; n++ {
		s := strconv.FormatInt(int64(n), 36)
		if slot := crc16(s) % numSlots; tags[slot] == "" {
			tags[slot] = s
			left--
		}
	}
	return &tags
})

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the variant
// Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^s[i]]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()
