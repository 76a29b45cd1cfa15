package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// userapi -h prints its usage and exits 0, without logging an error.
func TestHelpExitsCleanly(t *testing.T) {
	if os.Getenv("USERAPI_RUN_MAIN") == "1" {
		os.Args = []string{"userapi", "-h"}
		main()
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelpExitsCleanly$")
	cmd.Env = append(os.Environ(), "USERAPI_RUN_MAIN=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "-lock-wait", "the usage")
	assert.False(t, strings.Contains(string(out), "level=ERROR"), "%s", out)
}
