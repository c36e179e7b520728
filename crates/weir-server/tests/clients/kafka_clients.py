"""Real Kafka clients against a broker: kafka-python and confluent-kafka.

Usage: kafka_clients.py SCENARIO LIB BOOTSTRAP [ARGS...]

LIB is `kp` (kafka-python) or `ck` (confluent-kafka, librdkafka). Each
scenario checks what the client observes and exits non-zero with a message
on the first difference; it prints one JSON line of observations that the
Rust test compares between brokers (weir and tansu).
"""

import json
import sys
import threading
import time

SCENARIO, LIB, BOOTSTRAP = sys.argv[1], sys.argv[2], sys.argv[3]
ARGS = sys.argv[4:]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def fail(message):
    print(f"FAIL [{SCENARIO} {LIB}]: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


# ---------------------------------------------------------------- clients


class Kp:
    """kafka-python."""

    def __init__(self):
        import kafka
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.structs import TopicPartition

        self.kafka, self.NewTopic, self.TopicPartition = kafka, NewTopic, TopicPartition
        self.KafkaAdminClient = KafkaAdminClient

    def admin(self, **extra):
        return self.KafkaAdminClient(bootstrap_servers=BOOTSTRAP, **extra)

    def create_topic(self, name, partitions, configs=None):
        admin = self.admin()
        try:
            admin.create_topics([self.NewTopic(name, partitions, 1, topic_configs=configs or {})])
        finally:
            admin.close()

    def create_partitions(self, name, count, validate_only=False):
        """Grows a topic; None, or the error's Kafka name."""
        from kafka.errors import KafkaError
        admin = self.admin()
        try:
            admin.create_partitions({name: count}, validate_only=validate_only)
            return None
        except KafkaError as error:
            return getattr(error, "message", type(error).__name__)
        finally:
            admin.close()

    def alter_configs(self, topic, changes, incremental=True):
        """Sets configs (a value of None: deleted, back to the default);
        None, or the error's Kafka name."""
        import re
        from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType
        from kafka.errors import for_code
        configs = {name: (AlterConfigOp.DELETE, None) if value is None else value
                   for name, value in changes.items()}
        admin = self.admin()
        try:
            result = admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)],
                raise_on_unknown=False, incremental=incremental)
        finally:
            admin.close()
        outcome = result["topic"][topic]
        if outcome == "OK":
            return None
        code = re.search(r"\[Error (-?\d+)\]", outcome)
        check(code is not None, f"an error without its code: {outcome}")
        return for_code(int(code.group(1))).message

    def own_configs(self, topic):
        """The topic's configs that are not the broker's defaults."""
        from kafka.admin import ConfigResource, ConfigResourceType
        admin = self.admin()
        try:
            found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            admin.close()
        return {name: entry["value"] for name, entry in found["topic"][topic].items()}

    def produce_error(self, topic, value):
        """Produces one record; None, or the error's Kafka name."""
        from kafka.errors import KafkaError
        producer = self.kafka.KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
        try:
            producer.send(topic, value=value).get(timeout=30)
            return None
        except KafkaError as error:
            name = getattr(error, "message", type(error).__name__)
            # kafka-python's name for Kafka's MESSAGE_TOO_LARGE (code 10).
            return "MESSAGE_TOO_LARGE" if name == "MESSAGE_SIZE_TOO_LARGE" else name
        finally:
            producer.close()

    def partition_count(self, name):
        admin = self.admin()
        try:
            return len(admin.describe_topics([name])[0]["partitions"])
        finally:
            admin.close()

    def producer(self, codec="none", **extra):
        return self.kafka.KafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            compression_type=None if codec == "none" else codec,
            acks="all",
            **extra,
        )

    def send(self, producer, topic, key, value, headers=(), partition=None, timestamp_ms=None):
        future = producer.send(
            topic,
            key=key,
            value=value,
            headers=list(headers),
            partition=partition,
            timestamp_ms=timestamp_ms,
        )
        return lambda: (lambda m: (m.partition, m.offset))(future.get(timeout=60))

    def flush(self, producer):
        producer.flush(timeout=60)

    def read_all(self, topic, partitions, expected):
        consumer = self.kafka.KafkaConsumer(
            bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=20000
        )
        consumer.assign([self.TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        records = []
        for message in consumer:
            records.append(
                (message.partition, message.offset, message.key, message.value,
                 [(k, v) for k, v in message.headers], message.timestamp)
            )
            if len(records) >= expected:
                break
        consumer.close()
        return records

    def group_consumer(self, group, topic, on_assign, **extra):
        consumer = self.kafka.KafkaConsumer(
            bootstrap_servers=BOOTSTRAP,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=10000,
            heartbeat_interval_ms=500,
            max_poll_records=20,
            **extra,
        )

        class Listener(self.kafka.ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, assigned):
                on_assign(sorted(tp.partition for tp in assigned))

        consumer.subscribe([topic], listener=Listener())
        return consumer

    def poll(self, consumer):
        batches = consumer.poll(timeout_ms=200)
        return [(m.partition, m.offset, m.key) for ms in batches.values() for m in ms]

    def commit(self, consumer):
        consumer.commit()

    def offsets_for_times(self, topic, partition, timestamp):
        consumer = self.kafka.KafkaConsumer(bootstrap_servers=BOOTSTRAP)
        found = consumer.offsets_for_times({self.TopicPartition(topic, partition): timestamp})
        consumer.close()
        answer = found[self.TopicPartition(topic, partition)]
        return None if answer is None else (answer.offset, answer.timestamp)

    def committed(self, group, topic, partitions):
        admin = self.admin()
        try:
            offsets = admin.list_group_offsets(group)[group]
        finally:
            admin.close()
        return {
            tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic
        }


class Ck:
    """confluent-kafka (librdkafka)."""

    def __init__(self):
        import confluent_kafka
        from confluent_kafka.admin import AdminClient, NewTopic

        self.ck, self.AdminClient, self.NewTopic = confluent_kafka, AdminClient, NewTopic

    def admin(self, **extra):
        return self.AdminClient({"bootstrap.servers": BOOTSTRAP, **extra})

    def create_topic(self, name, partitions, configs=None):
        admin = self.admin()
        futures = admin.create_topics(
            [self.NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs or {})]
        )
        for future in futures.values():
            future.result(timeout=30)

    def create_partitions(self, name, count, validate_only=False):
        """Grows a topic; None, or the error's Kafka name."""
        from confluent_kafka.admin import NewPartitions
        admin = self.admin()
        try:
            # librdkafka sends it to the controller its metadata names, and
            # waits out a dead one's connection attempts until the request
            # times out; the caller tries again (with fresh metadata).
            futures = admin.create_partitions(
                [NewPartitions(name, count)], validate_only=validate_only, request_timeout=10
            )
            for future in futures.values():
                future.result(timeout=30)
            return None
        except self.ck.KafkaException as error:
            name = error.args[0].name()
            return "UNKNOWN_TOPIC_OR_PARTITION" if name == "UNKNOWN_TOPIC_OR_PART" else name

    def alter_configs(self, topic, changes, incremental=True):
        """Sets configs (a value of None: deleted, back to the default);
        None, or the error's Kafka name."""
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
        admin = self.admin()
        try:
            if incremental:
                entries = [
                    ConfigEntry(name, value, incremental_operation=(
                        AlterConfigOpType.DELETE if value is None else AlterConfigOpType.SET))
                    for name, value in changes.items()
                ]
                resource = ConfigResource("topic", topic, incremental_configs=entries)
                futures = admin.incremental_alter_configs([resource], request_timeout=10)
            else:
                resource = ConfigResource("topic", topic, set_config=changes)
                futures = admin.alter_configs([resource], request_timeout=10)
            for future in futures.values():
                future.result(timeout=30)
            return None
        except self.ck.KafkaException as error:
            name = error.args[0].name()
            return "UNKNOWN_TOPIC_OR_PARTITION" if name == "UNKNOWN_TOPIC_OR_PART" else name

    def own_configs(self, topic):
        """The topic's configs that are not the broker's defaults."""
        from confluent_kafka.admin import ConfigResource, ConfigSource
        admin = self.admin()
        for future in admin.describe_configs([ConfigResource("topic", topic)]).values():
            entries = future.result(timeout=30)
        return {name: entry.value for name, entry in entries.items()
                if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value}

    def produce_error(self, topic, value):
        """Produces one record; None, or the error's Kafka name."""
        producer = self.ck.Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": False})
        result = {}

        def delivered(error, message):
            result["error"] = error

        producer.produce(topic, value=value, on_delivery=delivered)
        producer.flush(30)
        check("error" in result, "no delivery report")
        if result["error"] is None:
            return None
        name = result["error"].name()
        return "MESSAGE_TOO_LARGE" if name == "MSG_SIZE_TOO_LARGE" else name

    def partition_count(self, name):
        return len(self.admin().list_topics(topic=name, timeout=10).topics[name].partitions)

    def producer(self, codec="none", **extra):
        config = {
            "bootstrap.servers": BOOTSTRAP,
            "compression.type": codec,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
        config.update(extra)
        return self.ck.Producer(config)

    def send(self, producer, topic, key, value, headers=(), partition=None, timestamp_ms=None):
        result = {}

        def delivered(error, message):
            result["error"] = error
            if error is None:
                result["at"] = (message.partition(), message.offset())

        kwargs = {"key": key, "value": value, "headers": list(headers), "on_delivery": delivered}
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

        def get():
            deadline = time.time() + 60
            while "error" not in result and time.time() < deadline:
                producer.poll(0.1)
            check("error" in result, f"no delivery report for {key!r}")
            check(result["error"] is None, f"delivery of {key!r} failed: {result['error']}")
            return result["at"]

        return get

    def flush(self, producer):
        check(producer.flush(60) == 0, "messages left undelivered")

    def read_all(self, topic, partitions, expected):
        consumer = self.ck.Consumer(
            {"bootstrap.servers": BOOTSTRAP, "group.id": "reader-unused", "enable.auto.commit": False}
        )
        consumer.assign([self.ck.TopicPartition(topic, p, self.ck.OFFSET_BEGINNING) for p in range(partitions)])
        records, deadline = [], time.time() + 30
        while len(records) < expected and time.time() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            check(message.error() is None, f"consume error {message.error()}")
            records.append(
                (message.partition(), message.offset(), message.key(), message.value(),
                 [(k, v) for k, v in (message.headers() or [])], message.timestamp()[1])
            )
        consumer.close()
        return records

    def group_consumer(self, group, topic, on_assign, **extra):
        config = {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
        config.update(extra)
        consumer = self.ck.Consumer(config)
        consumer.subscribe([topic], on_assign=lambda c, ps: on_assign(sorted(p.partition for p in ps)))
        return consumer

    def poll(self, consumer):
        out = []
        for message in consumer.consume(num_messages=20, timeout=0.2):
            if message.error():
                continue
            out.append((message.partition(), message.offset(), message.key()))
        return out

    def commit(self, consumer):
        try:
            consumer.commit(asynchronous=False)
        except self.ck.KafkaException as error:
            # Nothing to commit, or a rebalance in progress: at-least-once.
            if error.args[0].code() not in (self.ck.KafkaError._NO_OFFSET, self.ck.KafkaError.REBALANCE_IN_PROGRESS, self.ck.KafkaError.ILLEGAL_GENERATION):
                raise

    def offsets_for_times(self, topic, partition, timestamp):
        consumer = self.ck.Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "times-unused"})
        found = consumer.offsets_for_times([self.ck.TopicPartition(topic, partition, timestamp)], timeout=30)
        consumer.close()
        offset = found[0].offset
        return None if offset < 0 else (offset, None)

    def committed(self, group, topic, partitions):
        consumer = self.ck.Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
        found = consumer.committed([self.ck.TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        consumer.close()
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


client = Kp() if LIB == "kp" else Ck()

# --------------------------------------------------------------- scenarios


def scenario_codecs():
    """Records with keys, headers and timestamps through every codec, read
    back exactly."""
    topic = ARGS[0]
    client.create_topic(topic, 3)
    sent = {}
    for codec in CODECS:
        producer = client.producer(codec)
        waits = []
        for i in range(40):
            key = f"{codec}-{i}".encode()
            value = (f"value {i} " * (1 + i % 7)).encode()
            headers = [("codec", codec.encode()), ("i", str(i).encode())]
            waits.append((key, value, headers, client.send(producer, topic, key, value, headers, timestamp_ms=1_700_000_000_000 + i)))
        client.flush(producer)
        for key, value, headers, get in waits:
            sent[get()] = (key, value, headers)
    records = client.read_all(topic, 3, len(sent))
    check(len(records) == len(sent), f"read {len(records)} of {len(sent)} records")
    per_partition = {}
    for partition, offset, key, value, headers, timestamp in records:
        check((partition, offset) in sent, f"unexpected record at {partition}/{offset}")
        check(sent[(partition, offset)] == (key, value, headers), f"record {partition}/{offset} differs: {key!r}")
        check(timestamp >= 1_700_000_000_000, f"timestamp {timestamp} lost")
        check(per_partition.get(partition, -1) < offset, f"partition {partition} out of order at {offset}")
        per_partition[partition] = offset
    print(json.dumps({"records": len(records), "per_partition_end": sorted(per_partition.items())}))


def scenario_group():
    """Three members of a group join and leave; every record is consumed;
    after the consumers restart they resume from the committed offsets."""
    topic, group = ARGS[0], ARGS[1]
    partitions, total = 6, 600
    client.create_topic(topic, partitions)
    producer = client.producer()
    for i in range(total):
        client.send(producer, topic, f"r{i}".encode(), b"x")
    client.flush(producer)

    seen, lock, assignments = [], threading.Lock(), []
    stop = {}

    def member(name, stop_after):
        def on_assign(parts):
            with lock:
                assignments.append((name, parts))

        consumer = client.group_consumer(group, topic, on_assign)
        started = time.time()
        while not stop.get(name) and time.time() - started < stop_after:
            records = client.poll(consumer)
            with lock:
                seen.extend(key for _, _, key in records)
            if records:
                client.commit(consumer)
            time.sleep(0.05)
        client.commit(consumer)
        consumer.close()

    threads = {}
    def start(name, stop_after=120):
        threads[name] = threading.Thread(target=member, args=(name, stop_after))
        threads[name].start()

    start("a")
    time.sleep(3)
    start("b")
    time.sleep(3)
    start("c")
    time.sleep(4)
    stop["b"] = True  # b leaves: its partitions move to a and c
    threads["b"].join()
    deadline = time.time() + 90
    while time.time() < deadline:
        with lock:
            if len(set(seen)) >= total:
                break
        time.sleep(0.2)
    stop["a"] = stop["c"] = True
    for thread in threads.values():
        thread.join()
    keys = set(seen)
    check(len(keys) == total, f"consumed {len(keys)} distinct of {total} records")
    members_seen = {name for name, parts in assignments if parts}
    check(members_seen == {"a", "b", "c"}, f"members that got partitions: {members_seen}")
    check(len(assignments) >= 5, f"only {len(assignments)} assignments: no rebalance seen")

    # The consumers restart: committed offsets hold, only new records come.
    for i in range(total, total + 60):
        client.send(producer, topic, f"r{i}".encode(), b"x")
    client.flush(producer)
    seen.clear()
    stop.clear()
    start("d", 60)
    start("e", 60)
    deadline = time.time() + 60
    while time.time() < deadline and len(set(seen)) < 60:
        time.sleep(0.2)
    stop["d"] = stop["e"] = True
    for name in ("d", "e"):
        threads[name].join()
    again = set(seen)
    check(again == {f"r{i}".encode() for i in range(total, total + 60)},
          f"after the restart the group read {len(again)} records, {len(again - {f'r{i}'.encode() for i in range(total, total + 60)})} of them old")
    committed = client.committed(group, topic, partitions)
    check(sum(committed.values()) == total + 60, f"committed offsets {committed}")
    print(json.dumps({"consumed": total, "members": sorted(members_seen), "committed": sum(committed.values())}))


def scenario_produce_acked():
    """Produces COUNT records one at a time, writing each acknowledged
    (partition, offset, key) to OUTFILE at once; survives the broker's
    restart through the client's retries."""
    topic, outfile, count = ARGS[0], ARGS[1], int(ARGS[2])
    extra = {"retries": 1000000, "request_timeout_ms": 5000, "reconnect_backoff_ms": 100} if LIB == "kp" \
        else {"message.timeout.ms": 120000, "request.timeout.ms": 5000, "linger.ms": 0}
    if LIB == "kp" and "idempotent" in ARGS[3:]:
        extra["enable_idempotence"] = True
    # "plain": no idempotence (kafka-python 3 and librdkafka here turn it
    # on unasked), so no producer id is asked for.
    if "plain" in ARGS[3:]:
        extra["enable_idempotence" if LIB == "kp" else "enable.idempotence"] = False
    # "from=N" numbers the keys from N (a second run into the same file).
    first = next((int(arg[5:]) for arg in ARGS[3:] if arg.startswith("from=")), 0)
    producer = client.producer(**extra)
    with open(outfile, "a") as out:
        for i in range(first, first + count):
            partition, offset = client.send(producer, topic, f"{LIB}-{i}".encode(), f"v{i}".encode())()
            out.write(f"{partition} {offset} {LIB}-{i}\n")
            out.flush()
    print(json.dumps({"acked": count}))


def scenario_verify():
    """Every record acknowledged (as OUTFILE lists them) is in the log at
    its offset, and no key appears twice."""
    topic, outfile, partitions = ARGS[0], ARGS[1], int(ARGS[2])
    acked = {}
    for line in open(outfile):
        partition, offset, key = line.split()
        acked[(int(partition), int(offset))] = key.encode()
    records = client.read_all(topic, partitions, len(acked))
    found = {(p, o): k for p, o, k, _, _, _ in records}
    for at, key in acked.items():
        check(found.get(at) == key, f"acknowledged {key!r} at {at} is missing (found {found.get(at)!r})")
    keys = [k for _, _, k, _, _, _ in records]
    check(len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} duplicate records")
    print(json.dumps({"acked": len(acked), "records": len(records)}))


def scenario_commit():
    """Commits offsets with metadata for GROUP, or checks them."""
    topic, group, mode = ARGS[0], ARGS[1], ARGS[2]
    if mode == "write":
        client.create_topic(topic, 3)
        # A simple consumer commit (no group membership), as tools do.
        if LIB == "kp":
            from kafka.structs import OffsetAndMetadata, TopicPartition
            c = client.kafka.KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False)
            c.commit({TopicPartition(topic, 0): OffsetAndMetadata(7, "kept", -1)})
            c.close()
        else:
            c = client.ck.Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False})
            c.commit(offsets=[client.ck.TopicPartition(topic, 0, 7, metadata="kept")], asynchronous=False)
            c.close()
        print(json.dumps({"committed": 7}))
    else:
        # With "retry" (a cluster whose coordinator was just killed), the
        # read is tried again until another node coordinates the group, as
        # an application would.
        deadline = time.time() + (30 if "retry" in ARGS[3:] else 0)
        while True:
            try:
                committed = client.committed(group, topic, 1)
                break
            except Exception as error:  # noqa: BLE001 - retried, then reported
                if time.time() >= deadline:
                    raise
                print(f"retrying the read of committed offsets: {error!r}", file=sys.stderr)
                time.sleep(0.5)
        check(committed.get(0) == 7, f"committed offsets after the restart: {committed}")
        print(json.dumps({"committed": committed.get(0)}))


def scenario_timestamps():
    """ListOffsets by timestamp finds the first record at or after it."""
    topic = ARGS[0]
    client.create_topic(topic, 1)
    producer = client.producer()
    waits = [client.send(producer, topic, b"k", f"{i}".encode(), partition=0, timestamp_ms=1_000_000 + 1000 * i) for i in range(10)]
    client.flush(producer)
    offsets = [get()[1] for get in waits]
    found = client.offsets_for_times(topic, 0, 1_000_000 + 2500)
    check(found is not None and found[0] == offsets[3], f"timestamp 2500 found {found}, wanted offset {offsets[3]}")
    exact = client.offsets_for_times(topic, 0, 1_000_000 + 4000)
    check(exact is not None and exact[0] == offsets[4], f"timestamp 4000 found {exact}")
    none = client.offsets_for_times(topic, 0, 9_000_000)
    check(none is None, f"a timestamp after every record found {none}")
    print(json.dumps({"t2500": found[0], "t4000": exact[0], "after": None}))


def scenario_config_sources():
    """A topic created with retention.ms set: DescribeConfigs names that
    config's source as the topic's own and the others' as the default,
    so kafka-python 3 (which lists only modified configs unless asked
    for all) lists retention.ms alone."""
    topic = ARGS[0]
    client.create_topic(topic, 1, {"retention.ms": "3600000"})
    if LIB == "kp":
        from kafka.admin import ConfigResource, ConfigResourceType
        admin = client.admin()
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        modified = admin.describe_configs([resource])["topic"][topic]
        every = admin.describe_configs([resource], config_filter="all")["topic"][topic]
        admin.close()
        sources = {name: entry["config_source"] for name, entry in every.items()}
        check(sorted(modified) == ["retention.ms"], f"modified configs: {sorted(modified)}")
    else:
        from confluent_kafka.admin import ConfigResource
        admin = client.admin()
        for future in admin.describe_configs([ConfigResource("topic", topic)]).values():
            every = future.result(timeout=30)
        sources = {name: entry.source for name, entry in every.items()}
        sources = {name: client.ck.admin.ConfigSource(source).name for name, source in sources.items()}
    check(sources.get("retention.ms") == "DYNAMIC_TOPIC_CONFIG", f"sources: {sources}")
    check(sources.get("segment.bytes") == "DEFAULT_CONFIG", f"sources: {sources}")
    check(len(sources) == 7, f"{len(sources)} configs described: {sources}")
    print(json.dumps({"sources": sources}, sort_keys=True))


def scenario_grow():
    """CreatePartitions: validate_only changes nothing, a topic grows from 2
    to 5 partitions and each new one takes records; a count not above the
    topic's gets INVALID_PARTITIONS, an unknown topic
    UNKNOWN_TOPIC_OR_PARTITION."""
    topic = ARGS[0]
    client.create_topic(topic, 2)
    observed = {"validate": client.create_partitions(topic, 8, validate_only=True)}
    check(client.partition_count(topic) == 2, "validate_only grew the topic")
    observed["grow"] = client.create_partitions(topic, 5)
    observed["same"] = client.create_partitions(topic, 5)
    observed["fewer"] = client.create_partitions(topic, 3)
    observed["absent"] = client.create_partitions(topic + "-absent", 3)
    eventually(lambda: client.partition_count(topic) == 5, "the topic never showed 5 partitions")
    producer = client.producer()
    acks = [client.send(producer, topic, b"k", b"v%d" % p, partition=p) for p in range(5)]
    client.flush(producer)
    observed["acked"] = sorted(ack()[0] for ack in acks)
    records = client.read_all(topic, 5, 5)
    observed["read"] = sorted(record[0] for record in records)
    check(observed["read"] == list(range(5)), f"read from partitions {observed['read']}")
    print(json.dumps(observed, sort_keys=True))


def scenario_alter_configs():
    """A topic's configs changed: IncrementalAlterConfigs sets and deletes
    (back to the default) those it names, DescribeConfigs shows them, the
    log takes them (a record above max.message.bytes is refused, then
    taken once the limit is deleted); bad values, a config weir cannot
    take and an unknown topic are refused and change nothing; AlterConfigs
    sets the configs it names (and resets the rest: kafka-python names the
    topic's other modified configs again itself)."""
    topic = ARGS[0]
    client.create_topic(topic, 1)
    large = b"x" * 5000
    observed = {"set": client.alter_configs(topic, {"retention.ms": "60000", "max.message.bytes": "2000"})}
    changed = {"max.message.bytes": "2000", "retention.ms": "60000"}
    eventually(lambda: client.own_configs(topic) == changed, "the changed configs are not described")

    def produced(expected):
        outcome = client.produce_error(topic, large)
        if outcome != expected:
            print(f"a record of {len(large)} bytes: {outcome}, not {expected}", file=sys.stderr)
        return outcome == expected

    eventually(lambda: produced("MESSAGE_TOO_LARGE"), "a record above max.message.bytes was taken",
               seconds=30)
    observed["bad_value"] = client.alter_configs(topic, {"retention.ms": "soon"})
    observed["unsupported"] = client.alter_configs(topic, {"cleanup.policy": "compact"})
    observed["absent"] = client.alter_configs(topic + "-absent", {"retention.ms": "1"})
    check(client.own_configs(topic) == changed, "a refused change changed the configs")
    observed["delete"] = client.alter_configs(topic, {"max.message.bytes": None})
    eventually(lambda: client.own_configs(topic) == {"retention.ms": "60000"},
               "a deleted config is still described")
    eventually(lambda: produced(None), "the default max.message.bytes is not back", seconds=30)
    observed["replace"] = client.alter_configs(topic, {"segment.ms": "3600000"}, incremental=False)
    replaced = {"segment.ms": "3600000"}
    if LIB == "kp":
        replaced["retention.ms"] = "60000"
    eventually(lambda: client.own_configs(topic) == replaced, "AlterConfigs' configs are not described")
    observed["final"] = client.own_configs(topic)
    print(json.dumps(observed, sort_keys=True))


def scenario_admin():
    """Create, describe, list and delete topics and groups."""
    topic = ARGS[0]
    observed = {}
    if LIB == "kp":
        from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
        from kafka.admin import ConfigResource, ConfigResourceType
        admin = client.admin()
        admin.create_topics([client.NewTopic(topic, 4, 1, topic_configs={"retention.ms": "3600000"})])
        try:
            admin.create_topics([client.NewTopic(topic, 4, 1)])
            fail("creating an existing topic succeeded")
        except TopicAlreadyExistsError:
            observed["exists"] = "TopicAlreadyExists"
        described = admin.describe_topics([topic])
        observed["partitions"] = len(described[0]["partitions"])
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        observed["retention.ms"] = configs["topic"][topic]["retention.ms"]["value"]
        check(topic in admin.list_topics(), "created topic not listed")
        admin.delete_topics([topic])
        check(topic not in admin.list_topics(), "deleted topic still listed")
        try:
            result = admin.delete_topics([topic])
            errors = [e for _, e, *rest in getattr(result, "topic_error_codes", [])]
            check(any(errors), "deleting a deleted topic did not fail")
            observed["delete-again"] = "UnknownTopicOrPartition"
        except UnknownTopicOrPartitionError:
            observed["delete-again"] = "UnknownTopicOrPartition"
        admin.close()
    else:
        from confluent_kafka.admin import ConfigResource
        from confluent_kafka import KafkaException
        admin = client.admin()
        client.create_topic(topic, 4, {"retention.ms": "3600000"})
        time.sleep(0.5)
        try:
            client.create_topic(topic, 4)
            fail("creating an existing topic succeeded")
        except KafkaException as error:
            observed["exists"] = error.args[0].name()
        metadata = admin.list_topics(timeout=10)
        observed["partitions"] = len(metadata.topics[topic].partitions)
        configs = admin.describe_configs([ConfigResource("topic", topic)])
        for future in configs.values():
            observed["retention.ms"] = future.result()["retention.ms"].value
        for future in admin.delete_topics([topic]).values():
            future.result()
        check(topic not in admin.list_topics(timeout=10).topics, "deleted topic still listed")
        try:
            for future in admin.delete_topics([topic]).values():
                future.result()
            fail("deleting a deleted topic succeeded")
        except KafkaException as error:
            observed["delete-again"] = error.args[0].name()
    check(observed["partitions"] == 4, f"described {observed['partitions']} partitions")
    print(json.dumps(observed, sort_keys=True))


def scenario_groups_admin():
    """List and describe groups after a member commits."""
    topic, group = ARGS[0], ARGS[1]
    client.create_topic(topic, 2)
    assigned = []
    consumer = client.group_consumer(group, topic, assigned.append)
    deadline = time.time() + 30
    while not assigned and time.time() < deadline:
        client.poll(consumer)
    check(assigned, "the member got no assignment")
    if LIB == "ck":
        admin = client.admin()
        listed = admin.list_consumer_groups().result(timeout=30)
        names = {g.group_id for g in listed.valid}
        check(group in names, f"{group} not listed: {names}")
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        state = str(described.state).rsplit(".", 1)[-1].title()
        members = len(described.members)
    else:
        admin = client.admin()
        names = {g["group_id"] for g in admin.list_groups()}
        check(group in names, f"{group} not listed: {names}")
        described = admin.describe_groups([group])[group]
        state, members = described["group_state"], len(described["members"])
        admin.close()
    consumer.close()
    check(members == 1, f"described {members} members")
    print(json.dumps({"listed": True, "state": state, "members": members}))


def scenario_sasl():
    """SASL/PLAIN: the right password works, a wrong one is refused."""
    topic, user, password = ARGS[0], ARGS[1], ARGS[2]
    if LIB == "kp":
        import kafka
        common = dict(bootstrap_servers=BOOTSTRAP, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
        producer = kafka.KafkaProducer(sasl_plain_username=user, sasl_plain_password=password, acks="all", **common)
        producer.send(topic, b"secret").get(timeout=30)
        producer.close()
        try:
            bad = kafka.KafkaProducer(sasl_plain_username=user, sasl_plain_password="wrong", max_block_ms=5000, **common)
            bad.send(topic, b"nope").get(timeout=10)
            fail("a wrong password was accepted")
        except Exception as error:
            refused = type(error).__name__
    else:
        import confluent_kafka
        common = {"bootstrap.servers": BOOTSTRAP, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}
        producer = confluent_kafka.Producer({**common, "sasl.username": user, "sasl.password": password})
        client.send(producer, topic, None, b"secret")()
        bad = confluent_kafka.Producer({**common, "sasl.username": user, "sasl.password": "wrong", "message.timeout.ms": 5000})
        errors = []
        bad.produce(topic, b"nope", on_delivery=lambda e, m: errors.append(e))
        bad.flush(15)
        check(errors and errors[0] is not None, "a wrong password was accepted")
        refused = "delivery failed"
    print(json.dumps({"authenticated": True, "wrong password": refused}))


def scenario_retries():
    """An idempotent producer whose responses are lost (by a proxy) retries;
    every record is in the log once, in order."""
    topic, count = ARGS[0], int(ARGS[1])
    extra = {"retries": 1000, "request_timeout_ms": 3000, "max_in_flight_requests_per_connection": 5, "enable_idempotence": True, "linger_ms": 5} \
        if LIB == "kp" else {"linger.ms": 5, "request.timeout.ms": 3000}
    producer = client.producer(**extra)
    waits = []
    for i in range(count):
        waits.append(client.send(producer, topic, f"k{i}".encode(), f"{i}".encode(), partition=0))
        if i % 10 == 9:
            client.flush(producer)
    client.flush(producer)
    offsets = [get()[1] for get in waits]
    check(offsets == sorted(offsets), "acknowledged offsets out of order")
    records = client.read_all(topic, 1, count + 10)
    values = [int(value) for _, _, _, value, _, _ in records]
    check(values == list(range(count)), f"read {len(values)} records for {count} sent; first wrong at "
          f"{next((i for i, v in enumerate(values) if i >= count or v != i), None)}")
    print(json.dumps({"records": len(values)}))


def scenario_cluster_create():
    """Creates TOPIC with PARTITIONS partitions of FACTOR replicas, and
    waits until every partition has a leader."""
    topic, partitions, factor = ARGS[0], int(ARGS[1]), int(ARGS[2])
    if LIB == "kp":
        admin = client.admin()
        admin.create_topics([client.NewTopic(topic, partitions, factor)])
        admin.close()
    else:
        admin = client.admin()
        for future in admin.create_topics([client.NewTopic(topic, num_partitions=partitions, replication_factor=factor)]).values():
            future.result(timeout=30)
    deadline = time.time() + 30
    while True:
        leaders = partition_leaders(topic)
        if len(leaders) == partitions and all(leader >= 0 for leader in leaders.values()):
            break
        check(time.time() < deadline, f"partitions without a leader after 30 s: {leaders}")
        time.sleep(0.2)
    print(json.dumps({"leaders": leaders}))


def partition_leaders(topic):
    """Each partition's leader as the client's metadata shows it."""
    if LIB == "kp":
        admin = client.admin()
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
        return {p["partition_index"]: p["leader_id"] for t in described for p in t["partitions"]}
    metadata = client.admin().list_topics(topic, timeout=10)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return {}
    return {p.id: p.leader for p in found.partitions.values()}


def listed_topics():
    """The topics the client's metadata lists."""
    if LIB == "kp":
        admin = client.admin()
        try:
            return set(admin.list_topics())
        finally:
            admin.close()
    return set(client.admin().list_topics(timeout=10).topics)


def eventually(condition, message, seconds=15):
    """Waits until `condition()` holds; a condition that raises (a node
    named in stale metadata is down) counts as not holding yet."""
    deadline = time.time() + seconds
    while True:
        try:
            if condition():
                return
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            message = f"{message} (last error: {error!r})"
        check(time.time() < deadline, message)
        time.sleep(0.2)


def scenario_cluster_admin():
    """In a cluster: a topic created with the admin client and another
    auto-created by a producer are listed; an existing topic is refused;
    the internal offsets topic is refused to producers and to deletion;
    a deleted topic goes away."""
    topic, auto = ARGS[0], ARGS[1]
    observed = {}
    if LIB == "kp":
        from kafka.errors import TopicAlreadyExistsError
        admin = client.admin()
        admin.create_topics([client.NewTopic(topic, 2, 3)])
        try:
            admin.create_topics([client.NewTopic(topic, 2, 3)])
            fail("creating an existing topic succeeded")
        except TopicAlreadyExistsError:
            observed["exists"] = "TopicAlreadyExists"
        producer = client.kafka.KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
        observed["auto"] = producer.send(auto, b"first").get(timeout=30).offset
        try:
            producer.send("__consumer_offsets", b"x", partition=0).get(timeout=30)
            fail("a produce to the internal topic succeeded")
        except Exception as error:  # noqa: BLE001 - the kind is checked
            observed["internal-produce"] = type(error).__name__
        producer.close()
        try:
            result = admin.delete_topics(["__consumer_offsets"])
            codes = [code for _, code, *rest in getattr(result, "topic_error_codes", [])]
            check(any(codes), "deleting the internal topic succeeded")
            observed["internal-delete"] = f"error {max(codes)}"
        except Exception as error:  # noqa: BLE001 - the kind is recorded
            observed["internal-delete"] = type(error).__name__
        eventually(lambda: {topic, auto} <= listed_topics(), "created topics not listed")
        admin.delete_topics([topic])
        admin.close()
    else:
        from confluent_kafka import KafkaException
        admin = client.admin()
        for future in admin.create_topics([client.NewTopic(topic, num_partitions=2, replication_factor=3)]).values():
            future.result(timeout=30)
        try:
            for future in admin.create_topics([client.NewTopic(topic, num_partitions=2, replication_factor=3)]).values():
                future.result(timeout=30)
            fail("creating an existing topic succeeded")
        except KafkaException as error:
            observed["exists"] = error.args[0].name()
        producer = client.producer(**{"acks": "all"})
        observed["auto"] = client.send(producer, auto, b"k", b"first")()[1]
        result = {}
        producer.produce("__consumer_offsets", b"x", partition=0,
                         on_delivery=lambda error, message: result.update(error=error))
        producer.flush(30)
        check(result.get("error") is not None, "a produce to the internal topic succeeded")
        observed["internal-produce"] = result["error"].name()
        try:
            for future in admin.delete_topics(["__consumer_offsets"]).values():
                future.result(timeout=30)
            fail("deleting the internal topic succeeded")
        except KafkaException as error:
            observed["internal-delete"] = error.args[0].name()
        eventually(lambda: {topic, auto} <= listed_topics(), "created topics not listed")
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)
    eventually(lambda: topic not in listed_topics(), "the deleted topic is still listed")
    print(json.dumps(observed))


def scenario_cluster_configs():
    """In a cluster: TOPIC, created with configs, is described with them;
    a topic with a config weir cannot take is refused."""
    topic = ARGS[0]
    configs = {"retention.ms": "3600000", "segment.bytes": "1048576"}
    observed = {}
    if LIB == "kp":
        from kafka.admin import ConfigResource, ConfigResourceType
        from kafka.errors import InvalidConfigurationError
        admin = client.admin()
        admin.create_topics([client.NewTopic(topic, 2, 3, topic_configs=configs)])
        try:
            admin.create_topics([client.NewTopic(topic + "-bad", 1, 3, topic_configs={"retention.ms": "soon"})])
            fail("a topic with retention.ms=soon was created")
        except InvalidConfigurationError:
            observed["bad"] = "InvalidConfiguration"

        def described():
            found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            entries = found["topic"][topic]
            observed.update({name: entries[name]["value"] for name in configs})
            return all(observed[name] == value for name, value in configs.items())
    else:
        from confluent_kafka.admin import ConfigResource
        from confluent_kafka import KafkaException
        admin = client.admin()
        new = client.NewTopic(topic, num_partitions=2, replication_factor=3, config=configs)
        for future in admin.create_topics([new]).values():
            future.result(timeout=30)
        bad = client.NewTopic(topic + "-bad", num_partitions=1, replication_factor=3, config={"retention.ms": "soon"})
        try:
            for future in admin.create_topics([bad]).values():
                future.result(timeout=30)
            fail("a topic with retention.ms=soon was created")
        except KafkaException as error:
            observed["bad"] = error.args[0].name()

        def described():
            for future in admin.describe_configs([ConfigResource("topic", topic)]).values():
                entries = future.result(timeout=30)
                observed.update({name: entries[name].value for name in configs})
            return all(observed[name] == value for name, value in configs.items())
    eventually(described, f"the configs of {topic} are not described")
    check(topic + "-bad" not in listed_topics(), "the refused topic is listed")
    print(json.dumps(observed, sort_keys=True))


def scenario_cluster_alter():
    """In a cluster: TOPIC's configs set (ARGS: TOPIC NAME=VALUE...) through
    IncrementalAlterConfigs, and described so."""
    topic = ARGS[0]
    changes = dict(arg.split("=", 1) for arg in ARGS[1:])
    # librdkafka sends the request to the controller its metadata names
    # (the node that answered: it forwards to the real one); a try that
    # times out while the controller changes is made again, as growth's.
    deadline = time.time() + 60
    while True:
        outcome = client.alter_configs(topic, changes)
        if outcome is None or time.time() > deadline:
            break
        print(f"altering {topic}: {outcome}; again", file=sys.stderr)
        time.sleep(0.5)
    check(outcome is None, f"the configs of {topic} were not changed: {outcome}")
    eventually(lambda: all(client.own_configs(topic).get(name) == value for name, value in changes.items()),
               f"the configs of {topic} are not described")
    print(json.dumps(client.own_configs(topic), sort_keys=True))


def scenario_cluster_grow():
    """Grows TOPIC to COUNT partitions (tried again while the controller
    cannot answer; a try that timed out may have grown it) and waits until
    every partition has a leader."""
    topic, count = ARGS[0], int(ARGS[1])
    deadline = time.time() + 60
    while True:
        error = client.create_partitions(topic, count)
        if error is None or (error == "INVALID_PARTITIONS" and client.partition_count(topic) >= count):
            break
        check(time.time() < deadline, f"the topic did not grow: {error}")
        print(f"retrying the growth: {error}", file=sys.stderr)
        time.sleep(0.5)

    def led():
        leaders = partition_leaders(topic)
        return len(leaders) == count and all(leader >= 0 for leader in leaders.values())

    eventually(led, f"{topic} has no leader for each of {count} partitions", seconds=30)
    print(json.dumps({"partitions": partition_leaders(topic)}))


def scenario_cluster_listed():
    """Prints the topics every node lists (each asked alone)."""
    topics = set()
    for address in BOOTSTRAP.split(","):
        if LIB == "kp":
            admin = client.KafkaAdminClient(bootstrap_servers=address)
            try:
                topics |= set(admin.list_topics())
            finally:
                admin.close()
        else:
            topics |= set(client.AdminClient({"bootstrap.servers": address}).list_topics(timeout=10).topics)
    print(json.dumps(sorted(topics)))


def scenario_cluster_recreate():
    """Deletes TOPIC and creates it again with PARTITIONS partitions of
    FACTOR replicas; waits until it has leaders. Each call is tried again
    (a killed controller makes the client's first try fail, as it would an
    application's)."""
    topic = ARGS[0]

    def retried(what, call):
        deadline = time.time() + 30
        while True:
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - retried, then reported
                if time.time() >= deadline:
                    raise
                print(f"retrying {what}: {error!r}", file=sys.stderr)
                time.sleep(0.5)

    def delete():
        if topic not in listed_topics():
            return
        admin = client.admin()
        try:
            if LIB == "kp":
                admin.delete_topics([topic])
            else:
                for future in admin.delete_topics([topic]).values():
                    future.result(timeout=30)
        finally:
            if LIB == "kp":
                admin.close()

    def create():
        try:
            scenario_cluster_create()
        except Exception as error:  # noqa: BLE001 - an earlier try may have created it
            if "TopicAlreadyExists" not in type(error).__name__ and "TOPIC_ALREADY_EXISTS" not in str(error):
                raise

    retried("the deletion", delete)
    eventually(lambda: topic not in listed_topics(), "the deleted topic is still listed")
    retried("the creation", create)
    partitions = int(ARGS[1])

    def led():
        try:
            leaders = partition_leaders(topic)
        except Exception:  # noqa: BLE001 - a dead node named in stale metadata
            return False
        return len(leaders) == partitions and all(leader >= 0 for leader in leaders.values())

    eventually(led, "the recreated topic has no leaders", seconds=30)


def scenario_cluster_replace():
    """Moves every replica on node OLD to node NEW (which joined the
    cluster) with AlterPartitionReassignments: the partitions of TOPICS and
    of the offsets topic, and the metadata log (partition 0 of
    `__cluster_metadata`, whose voters are METADATA_VOTERS); waits until
    ListPartitionReassignments shows none under way and every partition has
    its new replicas."""
    from kafka import TopicPartition
    check(LIB == "kp", "reassignments are driven with kafka-python's admin client")
    old, new = int(ARGS[0]), int(ARGS[1])
    metadata_voters = [int(voter) for voter in ARGS[2].split(",")]
    topics = ARGS[3:] + ["__consumer_offsets"]

    def brokers():
        admin = client.admin()
        try:
            return {broker["broker_id"] for broker in admin.describe_cluster()["brokers"]}
        finally:
            admin.close()

    def swap(replicas):
        return [new if replica == old else replica for replica in replicas]

    def described():
        admin = client.admin()
        try:
            return {(t["name"], p["partition_index"]): p
                    for t in admin.describe_topics(topics) for p in t["partitions"]}
        finally:
            admin.close()

    eventually(lambda: new in brokers(), f"node {new} is not listed", seconds=30)
    # The node that answers may be the new one, still learning the topics:
    # the plan is made from an answer that describes them all.
    seen = {}

    def describes_all():
        seen["partitions"] = described()
        return {topic for topic, _ in seen["partitions"]} == set(topics)

    eventually(describes_all, "the topics are not described")
    plan = {TopicPartition(topic, partition): swap(found["replica_nodes"])
            for (topic, partition), found in seen["partitions"].items() if old in found["replica_nodes"]}
    plan[TopicPartition("__cluster_metadata", 0)] = swap(metadata_voters)
    answers = {}

    def alter():
        # Tried again while the client picks the dead node to ask, and
        # while the new node is not registered yet (refused as an invalid
        # assignment: a node the controller does not know).
        from kafka.errors import InvalidReplicationAssignmentError
        admin = client.admin()
        try:
            answers["results"] = admin.alter_partition_reassignments(plan)
            answers["under_way"] = admin.list_partition_reassignments()
        finally:
            admin.close()
        return InvalidReplicationAssignmentError not in answers["results"].values()

    eventually(alter, "AlterPartitionReassignments failed", seconds=30)
    results, under_way = answers["results"], answers["under_way"]
    check(all(error is None for error in results.values()), f"reassignments refused: {results}")
    check(set(results) == set(plan), f"answers for {sorted(results)}, asked {sorted(plan)}")
    for moving in under_way.values():
        check(new in moving["replicas"], f"a move under way without node {new}: {moving}")

    def settled():
        admin = client.admin()
        try:
            if admin.list_partition_reassignments():
                return False
        finally:
            admin.close()
        now = described()
        answers["last"] = {f"{topic}-{partition}": (found["replica_nodes"], found["isr_nodes"])
                           for (topic, partition), found in now.items()}
        return all(sorted(now[(tp.topic, tp.partition)]["replica_nodes"]) == sorted(target)
                   for tp, target in plan.items() if tp.topic != "__cluster_metadata")

    eventually(lambda: settled() or print(f"now (replicas, in sync): {answers.get('last')}", file=sys.stderr),
               "the reassignments did not finish", seconds=90)
    print(json.dumps({"moved": len(plan), "under_way_at_first": len(under_way)}))


def scenario_cluster_ready():
    """Waits until the metadata lists NODES brokers and a controller."""
    nodes = int(ARGS[0])
    deadline = time.time() + 30
    while True:
        if LIB == "kp":
            admin = client.admin()
            try:
                described = admin.describe_cluster()
            finally:
                admin.close()
            brokers, controller = len(described["brokers"]), described["controller_id"]
        else:
            metadata = client.admin().list_topics(timeout=10)
            brokers, controller = len(metadata.brokers), metadata.controller_id
        if brokers == nodes and controller >= 0:
            break
        check(time.time() < deadline, f"{brokers} brokers and controller {controller} after 30 s")
        time.sleep(0.2)
    print(json.dumps({"brokers": brokers}))


def scenario_cluster_controller():
    """Prints the controller: the metadata quorum's leader, as kafka-python's
    describe_metadata_quorum (DescribeQuorum) gives it. (Metadata names
    the node answering, as a KRaft broker names a live broker.)"""
    check(LIB == "kp", "only kafka-python describes the metadata quorum")
    deadline = time.time() + 30
    while True:
        admin = client.admin()
        try:
            quorum = admin.describe_metadata_quorum()
        finally:
            admin.close()
        [topic] = quorum["topics"]
        check(topic["topic_name"] == "__cluster_metadata", f"described {topic}")
        [partition] = topic["partitions"]
        check(partition["error"] is None, f"DescribeQuorum failed: {partition}")
        voters = sorted(voter["replica_id"] for voter in partition["current_voters"])
        check(len(voters) >= 1, f"no voters: {partition}")
        controller = partition["leader_id"]
        if controller >= 0:
            check(controller in voters, f"leader {controller} not a voter: {partition}")
            break
        check(time.time() < deadline, "no controller after 30 s")
        time.sleep(0.2)
    print(controller)


def scenario_cluster_leader():
    """Prints the leader of TOPIC's PARTITION."""
    topic, partition = ARGS[0], int(ARGS[1])
    print(partition_leaders(topic).get(partition, -1))


def scenario_group_verify():
    """A consumer group reads TOPIC until it has every record acknowledged
    (as OUTFILE lists them): each at its offset, each key once."""
    topic, outfile, group = ARGS[0], ARGS[1], ARGS[2]
    acked = {}
    for line in open(outfile):
        partition, offset, key = line.split()
        acked[(int(partition), int(offset))] = key.encode()
    consumer = client.group_consumer(group, topic, lambda assigned: None)
    seen, keys, deadline = {}, [], time.time() + 90
    while not all(at in seen for at in acked) and time.time() < deadline:
        try:
            polled = client.poll(consumer)
        except Exception as error:  # noqa: BLE001 - see below
            # kafka-python 3 raises out of poll when the coordinator it was
            # told of cannot be reached (a node just killed, named until
            # the others notice): an application polls again.
            check("KafkaConnectionError" in type(error).__name__, f"poll failed: {error!r}")
            print(f"polling again after {error!r}", file=sys.stderr)
            time.sleep(0.5)
            continue
        for partition, offset, key in polled:
            check((partition, offset) not in seen, f"offset {(partition, offset)} delivered twice")
            seen[(partition, offset)] = key
            keys.append(key)
    consumer.close()
    for at, key in acked.items():
        check(seen.get(at) == key, f"acknowledged {key!r} at {at} not consumed (found {seen.get(at)!r})")
    check(len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} records written twice")
    print(json.dumps({"acked": len(acked), "consumed": len(keys)}))


SCENARIOS = {name[len("scenario_"):]: f for name, f in globals().items() if name.startswith("scenario_")}
if SCENARIO not in SCENARIOS:
    fail(f"unknown scenario; known: {sorted(SCENARIOS)}")
SCENARIOS[SCENARIO]()
