package rediskit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestParseHandOver reads the rest of a hand-over's message as
// releaseScript formats it ("FENCE TIME PX"), and takes anything else for
// a plain wake-up.
func TestParseHandOver(t *testing.T) {
	g, ok := parseHandOver("1764521234567891 1764521234567890 2000")
	if assert.True(t, ok) {
		assert.Equal(t, grant{held: true, handed: true, fence: 1764521234567891, at: 1764521234567890, holderTTL: 2 * time.Second}, *g)
	}
	for _, rest := range []string{"", "1", "1 2", "1 2 ", "1 2 3 ", "1 2 3 4", "1  2 3", "x 2 3", "1 2 3.5", " 1 2 3", "1 2 99999999999999999999"} {
		g, ok := parseHandOver(rest)
		assert.False(t, ok, "%q", rest)
		assert.Nil(t, g, "%q", rest)
	}
}
