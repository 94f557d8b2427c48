package ratelimit

// crcTable is CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for
// slots.
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// slotOf is the Redis Cluster hash slot of a hash tag. The batcher sends
// requests of one slot per script call, because a Cluster script may only
// touch keys of one slot.
func slotOf(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^tag[i]]
	}
	return int(crc % 16384)
}
