package rediskit

import "encoding/json"

// Codec turns a Cache's values into the bytes stored in Redis and back.
// Implementations must be safe for concurrent use. Plug in msgpack,
// protobuf or any other encoding by implementing it; the package itself
// needs no dependency for that.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec is the default [Codec]: encoding/json, so that values are stored
// as plain JSON, readable by any language. It reads what Python's
// json.dumps writes, and Python's json.loads reads what it writes.
type JSONCodec struct{}

// Marshal returns the JSON encoding of v.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes the JSON data into v.
func (JSONCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
