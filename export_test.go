package rediskit

// Internals exposed to the black-box tests in package rediskit_test.
var (
	CompanionKey = companionKey
	KeySlot      = keySlot
)
