"""Drives a server with redis-py, the way applications use it.

Usage: redis_py.py PORT PROTOCOL [AUTH_PORT PASSWORD]

Runs against weir and against a real redis-server alike (the Rust test
runs it against both), so every assertion here is Redis's behaviour.
Exits non-zero with the failing step on the first difference.
"""

import socket
import sys
import threading
import time

import redis

PORT = int(sys.argv[1])
PROTOCOL = int(sys.argv[2])
AUTH_PORT = int(sys.argv[3]) if len(sys.argv) > 3 else None
PASSWORD = sys.argv[4] if len(sys.argv) > 4 else None


def connect(**options):
    return redis.Redis(
        port=PORT, protocol=PROTOCOL, decode_responses=True, socket_timeout=10, **options
    )


def check(label, got, expected):
    if got != expected:
        raise AssertionError(f"{label}: got {got!r}, expected {expected!r}")


def handshake():
    r = connect(client_name="weir-test")
    check("ping", r.ping(), True)
    check("echo", r.echo("hello"), "hello")
    check("client name", r.client_getname(), "weir-test")
    client_id = r.client_id()
    check("client id type", isinstance(client_id, int), True)
    listed = [c for c in r.client_list() if int(c["id"]) == client_id]
    check("client list has us", len(listed), 1)
    check("client list name", listed[0]["name"], "weir-test")
    check("client list protocol", listed[0]["resp"], str(PROTOCOL))
    hello = r.execute_command("HELLO", PROTOCOL)
    if isinstance(hello, list):
        hello = dict(zip(hello[::2], hello[1::2]))
    check("hello proto", hello["proto"], PROTOCOL)
    check("hello has server", "server" in hello, True)
    info = r.info()
    check("info has connected_clients", info["connected_clients"] >= 1, True)
    check("select 0", r.select(0), True)
    check("flushall", r.flushall(), True)
    check("dbsize", r.dbsize(), 0)
    r.close()


def streams():
    r = connect()
    first = r.xadd("s", {"f": "v", "n": "1"}, id="1-1")
    check("xadd id", first, "1-1")
    for n in range(2, 6):
        r.xadd("s", {"n": str(n)}, id=f"{n}-0")
    check("xlen", r.xlen("s"), 5)
    check("xrange count", r.xrange("s", count=2), [("1-1", {"f": "v", "n": "1"}), ("2-0", {"n": "2"})])
    check("xrevrange", r.xrevrange("s", max="+", min="4", count=1), [("5-0", {"n": "5"})])
    check(
        "xread",
        r.xread({"s": "3-0"}, count=1),
        [["s", [("4-0", {"n": "4"})]]] if PROTOCOL == 2 else {"s": [[("4-0", {"n": "4"})]]},
    )
    check("xdel", r.xdel("s", "5-0"), 1)
    check("xtrim", r.xtrim("s", maxlen=3, approximate=False), 1)
    check("xlen after trim", r.xlen("s"), 3)
    auto = r.xadd("s", {"k": "v"}, maxlen=10)
    check("auto id increases", tuple(map(int, auto.split("-"))) > (4, 0), True)
    check("xsetid", r.execute_command("XSETID", "s", "9999999999999-0") in (True, "OK"), True)
    info = r.xinfo_stream("s")
    check("xinfo length", info["length"], 4)
    check("xinfo last id", info["last-generated-id"], "9999999999999-0")
    full = r.xinfo_stream("s", full=True)
    check("xinfo full entries", len(full["entries"]), 4)
    check("type", r.type("s"), "stream")
    check("exists", r.exists("s"), 1)
    try:
        r.xadd("s", {"f": "v"}, id="1-0")
        raise AssertionError("xadd with a smaller id succeeded")
    except redis.ResponseError as error:
        check("xadd smaller id", str(error).startswith("The ID specified in XADD is equal or smaller"), True)
    check("del", r.delete("s"), 1)
    check("exists after del", r.exists("s"), 0)
    r.close()


def groups():
    r = connect()
    check("xgroup create", r.xgroup_create("g:s", "grp", id="0", mkstream=True), True)
    for n in range(1, 4):
        r.xadd("g:s", {"n": str(n)}, id=f"{n}-0")
    got = r.xreadgroup("grp", "alice", {"g:s": ">"}, count=2)
    expected_entries = [("1-0", {"n": "1"}), ("2-0", {"n": "2"})]
    check(
        "xreadgroup",
        got,
        [["g:s", expected_entries]] if PROTOCOL == 2 else {"g:s": [expected_entries]},
    )
    pending = r.xpending("g:s", "grp")
    check("xpending count", pending["pending"], 2)
    check("xpending consumers", pending["consumers"], [{"name": "alice", "pending": 2}])
    detail = r.xpending_range("g:s", "grp", min="-", max="+", count=10)
    check("xpending range ids", [p["message_id"] for p in detail], ["1-0", "2-0"])
    check("xpending range times", [p["times_delivered"] for p in detail], [1, 1])
    check("xack", r.xack("g:s", "grp", "1-0"), 1)
    claimed = r.xclaim("g:s", "grp", "bob", min_idle_time=0, message_ids=["2-0"])
    check("xclaim", claimed, [("2-0", {"n": "2"})])
    auto = r.xautoclaim("g:s", "grp", "carol", min_idle_time=0, start_id="0-0")
    check("xautoclaim cursor", auto[0], "0-0")
    check("xautoclaim entries", auto[1], [("2-0", {"n": "2"})])
    consumers = sorted(c["name"] for c in r.xinfo_consumers("g:s", "grp"))
    check("xinfo consumers", consumers, ["alice", "bob", "carol"])
    groups = r.xinfo_groups("g:s")
    check("xinfo groups", [(g["name"], g["pending"]) for g in groups], [("grp", 1)])
    check("createconsumer", r.xgroup_createconsumer("g:s", "grp", "dave"), 1)
    check("delconsumer", r.xgroup_delconsumer("g:s", "grp", "dave"), 0)
    check("setid", r.xgroup_setid("g:s", "grp", id="0"), True)
    history = r.xreadgroup("grp", "carol", {"g:s": "0"})
    history_entries = [("2-0", {"n": "2"})]
    check(
        "history read",
        history,
        [["g:s", history_entries]] if PROTOCOL == 2 else {"g:s": [history_entries]},
    )
    check("destroy", r.xgroup_destroy("g:s", "grp"), 1)
    try:
        r.xreadgroup("grp", "alice", {"g:s": ">"})
        raise AssertionError("read from a destroyed group succeeded")
    except redis.ResponseError as error:
        check("nogroup " + str(error), "No such key 'g:s' or consumer group 'grp'" in str(error), True)
    r.delete("g:s")
    r.close()


def blocking_reads():
    reader = connect()
    writer = connect()
    reader.xgroup_create("b:s", "grp", id="$", mkstream=True)
    results = {}

    def block(name, call):
        started = time.monotonic()
        results[name] = (call(), time.monotonic() - started)

    threads = [
        threading.Thread(target=block, args=("xread", lambda: connect().xread({"b:s": "$"}, block=5000))),
        threading.Thread(
            target=block,
            args=("group", lambda: reader.xreadgroup("grp", "c", {"b:s": ">"}, block=5000)),
        ),
    ]
    for thread in threads:
        thread.start()
    # Give both readers time to block, then wake them with one write.
    deadline = time.monotonic() + 5
    while writer.info("clients")["blocked_clients"] < 2:
        if time.monotonic() > deadline:
            raise AssertionError("the readers never blocked")
        time.sleep(0.01)
    new_id = writer.xadd("b:s", {"wake": "up"})
    for thread in threads:
        thread.join(10)
    for name in ("xread", "group"):
        got, waited = results[name]
        entries = [(new_id, {"wake": "up"})]
        check(
            f"blocked {name}",
            got,
            [["b:s", entries]] if PROTOCOL == 2 else {"b:s": [entries]},
        )
        check(f"{name} woke before its timeout", waited < 4, True)
    timed_out = writer.xread({"b:s": "$"}, block=100)
    check("timeout", timed_out, [] if PROTOCOL == 2 else {})
    writer.delete("b:s")
    reader.close()
    writer.close()


def pubsub():
    r = connect()
    p = r.pubsub()
    p.subscribe("news")
    p.psubscribe("weather.*")
    confirmations = [p.get_message(timeout=2) for _ in range(2)]
    check("subscribe confirmations", [m["type"] for m in confirmations], ["subscribe", "psubscribe"])
    check("numsub", r.pubsub_numsub("news"), [("news", 1)])
    check("numpat", r.pubsub_numpat(), 1)
    check("publish channel", r.publish("news", "hello"), 1)
    check("publish pattern", r.publish("weather.rome", "sun"), 1)
    check("publish nobody", r.publish("nobody", "x"), 0)
    got = [p.get_message(timeout=2) for _ in range(2)]
    check("message", (got[0]["type"], got[0]["channel"], got[0]["data"]), ("message", "news", "hello"))
    check(
        "pmessage",
        (got[1]["type"], got[1]["pattern"], got[1]["channel"], got[1]["data"]),
        ("pmessage", "weather.*", "weather.rome", "sun"),
    )
    p.unsubscribe("news")
    p.punsubscribe()
    p.close()
    r.close()


def transactions():
    r = connect()
    pipe = r.pipeline(transaction=True)
    pipe.xadd("t:s", {"f": "1"}, id="1-0")
    pipe.xadd("t:s", {"f": "2"}, id="2-0")
    pipe.xlen("t:s")
    check("multi/exec", pipe.execute(), ["1-0", "2-0", 2])
    # A command that fails at run time does not stop the others.
    pipe = r.pipeline(transaction=True)
    pipe.xadd("t:s", {"f": "x"}, id="1-0")
    pipe.xlen("t:s")
    results = pipe.execute(raise_on_error=False)
    check("run-time error is a reply", isinstance(results[0], redis.ResponseError), True)
    check("later commands ran", results[1], 2)
    # WATCH: a write by another client aborts the transaction.
    other = connect()
    with r.pipeline() as pipe:
        pipe.watch("t:s")
        other.xadd("t:s", {"f": "3"}, id="3-0")
        pipe.multi()
        pipe.xadd("t:s", {"f": "4"}, id="4-0")
        try:
            pipe.execute()
            raise AssertionError("EXEC ran although a watched key changed")
        except redis.WatchError:
            pass
    check("aborted transaction wrote nothing", r.xlen("t:s"), 3)
    r.delete("t:s")
    other.close()
    r.close()


def oversized_requests():
    r = connect()
    bystander = connect()
    bystander.xadd("o:s", {"f": "v"})
    # An unknown command and a wrong arity are errors, not disconnections.
    try:
        r.execute_command("NOSUCHCOMMAND", "x")
        raise AssertionError("an unknown command succeeded")
    except redis.ResponseError as error:
        check("unknown command", str(error).startswith("unknown command 'NOSUCHCOMMAND'"), True)
    try:
        r.execute_command("XLEN")
        raise AssertionError("a wrong arity succeeded")
    except redis.ResponseError as error:
        check("arity", str(error), "wrong number of arguments for 'xlen' command")
    check("still connected", r.ping(), True)
    # Garbage on a raw socket: the server answers with a protocol error and
    # closes that connection only.
    raw = socket.create_connection(("127.0.0.1", PORT), timeout=5)
    raw.sendall(b"*1\r\n$99999999999\r\n")
    reply = raw.recv(1000)
    check("protocol error", reply.startswith(b"-ERR Protocol error"), True)
    check("connection closed", raw.recv(1000), b"")
    raw.close()
    check("bystander unaffected", bystander.xlen("o:s"), 1)
    bystander.delete("o:s")
    r.close()
    bystander.close()


def authentication():
    if AUTH_PORT is None:
        return
    anonymous = redis.Redis(port=AUTH_PORT, protocol=2, decode_responses=True, socket_timeout=5)
    try:
        anonymous.xlen("s")
        raise AssertionError("a command ran without AUTH")
    except redis.AuthenticationError:
        pass
    except redis.ResponseError as error:
        check("noauth", str(error).startswith("Authentication required"), True)
    wrong = redis.Redis(
        port=AUTH_PORT, protocol=PROTOCOL, password="wrong", decode_responses=True, socket_timeout=5
    )
    try:
        wrong.ping()
        raise AssertionError("a wrong password was accepted")
    except (redis.AuthenticationError, redis.ResponseError) as error:
        check("wrongpass", "WRONGPASS" in str(error) or "invalid" in str(error), True)
    right = redis.Redis(
        port=AUTH_PORT, protocol=PROTOCOL, password=PASSWORD, decode_responses=True, socket_timeout=5
    )
    check("authenticated", right.ping(), True)
    right.close()


STEPS = [handshake, streams, groups, blocking_reads, pubsub, transactions, oversized_requests, authentication]

for step in STEPS:
    try:
        step()
    except Exception as error:  # noqa: BLE001 - report any failure with its step
        print(f"FAILED in {step.__name__} (RESP{PROTOCOL}): {type(error).__name__}: {error}")
        sys.exit(1)
print(f"redis-py {redis.__version__} RESP{PROTOCOL}: {len(STEPS)} steps passed")
