"""Holds and releases locks with redis-py's Lock, on command, for
BenchmarkForeignRelease: a program that publishes nothing when it releases.

    python3 redispy_lock.py redis://127.0.0.1:6379/0

reads lines from stdin and answers each with one line on stdout:

    acquire KEY TTL_MS  ->  ok | busy    (Lock(KEY, timeout=TTL).acquire(blocking=False))
    release KEY         ->  ok NS SENT   (Lock.release(): its compare-and-delete script;
                                          NS: time.time_ns() when the release started,
                                          SENT: when redis-py began to send its last
                                          command, the script)

Any failure is answered with "error ..." on one line.
"""
import sys
import time

import redis

client = redis.Redis.from_url(sys.argv[1])

# When each command starts to leave: how long redis-py itself takes before
# it sends a release is part of that release's gap, and the benchmark
# reports it.
sent = [0]
_send = redis.connection.Connection.send_packed_command


def send_packed_command(self, *args, **kwargs):
    sent[0] = time.time_ns()
    return _send(self, *args, **kwargs)


redis.connection.Connection.send_packed_command = send_packed_command
held = {}
for line in sys.stdin:
    try:
        op, key, *rest = line.split()
        if op == "acquire":
            lock = client.lock(key, timeout=int(rest[0]) / 1000)
            if lock.acquire(blocking=False):
                held[key] = lock
                print("ok", flush=True)
            else:
                print("busy", flush=True)
        elif op == "release":
            lock = held.pop(key)
            start = time.time_ns()
            lock.release()
            print("ok %d %d" % (start, sent[0]), flush=True)
        else:
            print("error unknown command " + op, flush=True)
    except Exception as e:  # the benchmark reports it
        print("error " + repr(e).replace("\n", " "), flush=True)
