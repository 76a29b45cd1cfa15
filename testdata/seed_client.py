"""What the Python seed's RedisClient does, for the interop test.

usage: seed_client.py REDIS_URL set KEY JSON EX   -> r.set(key, json.dumps(value), ex=EX)
       seed_client.py REDIS_URL get KEY           -> prints json.dumps(json.loads(r.get(key)), sort_keys=True)
       seed_client.py REDIS_URL lock KEY EX       -> prints whether SET key "1" NX EX took the lock
"""
import json
import sys

import redis

r = redis.Redis.from_url(sys.argv[1], decode_responses=True)
cmd, key = sys.argv[2], sys.argv[3]
if cmd == "set":
    r.set(key, json.dumps(json.loads(sys.argv[4])), ex=int(sys.argv[5]))
elif cmd == "get":
    value = r.get(key)
    print("MISSING" if value is None else json.dumps(json.loads(value), sort_keys=True))
elif cmd == "lock":
    print("locked" if r.set(key, "1", ex=int(sys.argv[4]), nx=True) else "busy")
else:
    sys.exit("unknown command " + cmd)
