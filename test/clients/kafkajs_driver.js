#!/usr/bin/env node
// kafkajs driver for the Sluice end-to-end tests.
//
// Subcommands (all take --bootstrap, and --sasl-mechanism/--user/--password,
// --ca-file for SASL and TLS):
//
//   produce  --topic T --count N [--prefix P]   values P-0 .. P-(N-1), keys k0..
//   consume  --topic T --count N [--group G --commit]
//            [--avro-registry URL]  also decode Confluent wire-format Avro
//            with @kafkajs/confluent-schema-registry
//            prints one JSON object per record on stdout
//   metadata [--topic T]  prints {"brokers": [...], "topics": [...]} as JSON:
//            every topic, or only T (a topic answered with an error, e.g.
//            TOPIC_AUTHORIZATION_FAILED, is reported as a failure)
//
// Errors go to stderr as one JSON object {"error", "name", "code"} (name is
// the Kafka error name, e.g. TOPIC_AUTHORIZATION_FAILED) and the exit status
// is 1; bad usage exits 2.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const { Kafka, logLevel, CompressionTypes, CompressionCodecs } = require('kafkajs');

// kafkajs has gzip built in; the other codecs are plug-ins, all pure JS (no
// native build, nothing fetched at install): snappy (raw and xerial-framed)
// with kafkajs-snappy, LZ4 frames with lz4js, zstd frames with fzstd. fzstd
// only decompresses, which is all a consumer needs; this driver produces
// uncompressed.
CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');
CompressionCodecs[CompressionTypes.LZ4] = () => {
  const lz4 = require('lz4js');
  return {
    async compress(encoder) { return Buffer.from(lz4.compress(encoder.buffer)); },
    async decompress(buffer) { return Buffer.from(lz4.decompress(buffer)); },
  };
};
CompressionCodecs[CompressionTypes.ZSTD] = () => {
  const fzstd = require('fzstd');
  return {
    async compress() { throw new Error('zstd compression is not needed by this driver'); },
    async decompress(buffer) { return Buffer.from(fzstd.decompress(buffer)); },
  };
};

class UsageError extends Error {}

function parseArgs(argv) {
  const [cmd, ...rest] = argv;
  if (!['produce', 'consume', 'metadata'].includes(cmd)) {
    throw new UsageError('usage: kafkajs_driver.js produce|consume|metadata --bootstrap B [options]');
  }
  const flags = { prefix: 'msg', timeout: 30, commit: false };
  const valued = ['bootstrap', 'topic', 'count', 'prefix', 'group', 'sasl-mechanism', 'user', 'password', 'ca-file', 'timeout', 'log-level',
    'avro-registry'];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument ${a}`);
    const name = a.slice(2);
    if (name === 'commit') { flags.commit = true; continue; }
    if (!valued.includes(name)) throw new UsageError(`unknown flag ${a}`);
    if (i + 1 >= rest.length) throw new UsageError(`${a} needs a value`);
    flags[name] = rest[++i];
  }
  if (!flags.bootstrap) throw new UsageError('--bootstrap is required');
  if (cmd !== 'metadata') {
    if (!flags.topic) throw new UsageError('--topic is required');
    const n = Number(flags.count);
    if (!Number.isInteger(n) || n < 0) throw new UsageError('--count must be a non-negative integer');
    flags.count = n;
  }
  if (flags.commit && !flags.group) throw new UsageError('--commit needs --group');
  flags.timeout = Number(flags.timeout);
  if (!(flags.timeout > 0)) throw new UsageError('--timeout must be positive seconds');
  return { cmd, flags };
}

// kafkajs drops the broker's error in some paths (a FindCoordinator refused
// with GROUP_AUTHORIZATION_FAILED surfaces as "Failed to find group
// coordinator"), but logs it at debug level. The log creator keeps the last
// authorization error it sees so the exit report can name it.
let lastAuthzError = null;

function logCreatorFor(printLevel) {
  return () => ({ namespace, level, label, log }) => {
    const e = log && log.error;
    if (e && typeof e === 'object' && typeof e.type === 'string' && e.type.endsWith('_AUTHORIZATION_FAILED')) {
      lastAuthzError = { type: e.type, code: typeof e.code === 'number' ? e.code : null };
    }
    if (printLevel !== undefined && level <= printLevel) {
      process.stderr.write(JSON.stringify({ level: label, namespace, ...log }) + '\n');
    }
  };
}

function kafkaFor(flags) {
  const printLevel = flags['log-level'] ? logLevel[flags['log-level'].toUpperCase()] : undefined;
  const cfg = {
    clientId: 'sluice-e2e-kafkajs',
    brokers: flags.bootstrap.split(','),
    connectionTimeout: 5000,
    requestTimeout: 15000,
    retry: { retries: 3, initialRetryTime: 200 },
    logLevel: logLevel.DEBUG,
    logCreator: logCreatorFor(printLevel),
  };
  if (flags['sasl-mechanism']) {
    const password = flags.password !== undefined ? flags.password : (process.env.SLUICE_TEST_PASSWORD || '');
    cfg.sasl = { mechanism: flags['sasl-mechanism'].toLowerCase(), username: flags.user || '', password };
  }
  if (flags['ca-file']) {
    cfg.ssl = { ca: [fs.readFileSync(flags['ca-file'], 'utf8')], rejectUnauthorized: true };
  }
  return new Kafka(cfg);
}

function withTimeout(promise, seconds, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error(`${what}: timed out after ${seconds}s`);
      e.type = '_TIMED_OUT';
      reject(e);
    }, seconds * 1000);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

async function produce(flags) {
  const producer = kafkaFor(flags).producer({ allowAutoTopicCreation: false });
  await producer.connect();
  try {
    const messages = [];
    for (let i = 0; i < flags.count; i++) messages.push({ key: `k${i}`, value: `${flags.prefix}-${i}` });
    let produced = 0;
    for (let i = 0; i < messages.length; i += 500) {
      const res = await producer.send({ topic: flags.topic, acks: -1, messages: messages.slice(i, i + 500) });
      for (const r of res) {
        if (r.errorCode) {
          const e = new Error(`produce: partition ${r.partition} error code ${r.errorCode}`);
          e.code = r.errorCode;
          throw e;
        }
      }
      produced += Math.min(500, messages.length - i);
    }
    out({ produced, topic: flags.topic });
  } finally {
    await producer.disconnect();
  }
}

// avroRegistry returns a decoder of Confluent wire-format Avro values using
// @kafkajs/confluent-schema-registry (avsc underneath), with decimals read as
// their decimal text. Other logical types stay as their underlying values
// (timestamp-millis: epoch milliseconds, date: days since the epoch, uuid:
// the string), the same JSON the python driver prints.
function avroRegistry(url) {
  const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');
  const avsc = require('avsc');
  class DecimalType extends avsc.types.LogicalType {
    constructor(attrs, opts) {
      super(attrs, opts);
      this.scale = attrs.scale || 0;
    }
    _fromValue(buf) {
      let n = 0n;
      for (const b of buf) n = (n << 8n) | BigInt(b);
      if (buf.length > 0 && buf[0] & 0x80) n -= 1n << BigInt(8 * buf.length);
      const neg = n < 0n;
      let digits = (neg ? -n : n).toString().padStart(this.scale + 1, '0');
      if (this.scale > 0) digits = `${digits.slice(0, -this.scale)}.${digits.slice(-this.scale)}`;
      return (neg ? '-' : '') + digits;
    }
    _toValue() {
      throw new Error('decimal encoding is not needed by this driver');
    }
    _resolve(type) {
      return avsc.Type.isType(type, 'bytes', 'fixed') ? (v) => v : undefined;
    }
  }
  const registry = new SchemaRegistry({ host: url }, { [SchemaType.AVRO]: { logicalTypes: { decimal: DecimalType } } });
  return async (value) => {
    if (value.length < 5 || value[0] !== 0) throw new Error(`not in confluent wire format: ${value.length} bytes`);
    return { schemaId: value.readUInt32BE(1), decoded: await registry.decode(value) };
  };
}

function plainJSON(v) {
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (Array.isArray(v)) return v.map(plainJSON);
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = plainJSON(x);
    return o;
  }
  return v;
}

async function consume(flags) {
  const kafka = kafkaFor(flags);
  const decode = flags['avro-registry'] ? avroRegistry(flags['avro-registry']) : null;
  const grouped = Boolean(flags.group);
  const groupId = flags.group || `sluice-e2e-assign-${crypto.randomUUID()}`;
  const consumer = kafka.consumer({
    groupId, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 250, retry: { retries: 3 },
  });
  let crashed = null;
  consumer.on(consumer.events.CRASH, (ev) => { crashed = ev.payload.error; });
  await consumer.connect();
  let got = 0;
  const positions = new Map();
  let finish;
  const done = new Promise((resolve, reject) => { finish = { resolve, reject }; });
  try {
    await consumer.subscribe({ topics: [flags.topic], fromBeginning: true });
    if (flags.count === 0) finish.resolve();
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic, partition, message }) => {
        if (got >= flags.count) return;
        const rec = {
          topic,
          partition,
          offset: Number(message.offset),
          key: message.key === null ? null : message.key.toString('utf8'),
          value: message.value === null ? null : message.value.toString('utf8'),
        };
        if (decode) {
          rec.value_b64 = message.value === null ? null : message.value.toString('base64');
          rec.headers = {};
          for (const [k, v] of Object.entries(message.headers || {})) {
            rec.headers[k] = v === null || v === undefined ? null : v.toString('utf8');
          }
          rec.avro = null;
          if (message.value !== null) {
            try {
              const { schemaId, decoded } = await decode(message.value);
              rec.schema_id = schemaId;
              rec.avro = plainJSON(decoded);
            } catch (e) {
              rec.avro_error = `${e.name}: ${e.message}`;
            }
          }
        }
        if (got >= flags.count) return;
        out(rec);
        positions.set(partition, BigInt(message.offset) + 1n);
        got++;
        if (got >= flags.count) finish.resolve();
      },
    });
    const poll = setInterval(() => { if (crashed) finish.reject(crashed); }, 100);
    try {
      await withTimeout(done, flags.timeout, `consume: got ${got} of ${flags.count} records`).catch((e) => {
        if (e.type === '_TIMED_OUT') e.message = `consume: got ${got} of ${flags.count} records within ${flags.timeout}s`;
        throw e;
      });
    } finally {
      clearInterval(poll);
    }
    if (grouped && flags.commit && positions.size > 0) {
      consumer.pause([{ topic: flags.topic }]);
      const partitions = [...positions.entries()].sort((a, b) => a[0] - b[0])
        .map(([partition, offset]) => ({ topic: flags.topic, partition, offset: offset.toString() }));
      await consumer.commitOffsets(partitions);
    }
  } finally {
    await consumer.disconnect();
  }
  if (!grouped) {
    // The throwaway group is the only way kafkajs consumes; delete it so
    // it does not linger.
    const admin = kafka.admin();
    try {
      await admin.connect();
      await admin.deleteGroups([groupId]);
    } catch (_) {
      // best effort
    } finally {
      await admin.disconnect();
    }
  }
}

async function metadata(flags) {
  const admin = kafkaFor(flags).admin();
  await admin.connect();
  try {
    const cluster = await admin.describeCluster();
    const md = await admin.fetchTopicMetadata(flags.topic ? { topics: [flags.topic] } : undefined);
    out({
      cluster_id: cluster.clusterId,
      controller_id: cluster.controller,
      brokers: cluster.brokers.map((b) => ({ id: b.nodeId, host: b.host, port: b.port })).sort((a, b) => a.id - b.id),
      topics: md.topics.map((t) => ({
        name: t.name,
        partitions: t.partitions.map((p) => ({ id: p.partitionId, leader: p.leader, replicas: p.replicas }))
          .sort((a, b) => a.id - b.id),
      })).sort((a, b) => (a.name < b.name ? -1 : 1)),
    });
  } finally {
    await admin.disconnect();
  }
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function describeError(e) {
  // kafkajs wraps broker refusals in KafkaJSProtocolError (type = Kafka
  // error name, code = Kafka error code), sometimes inside a retry or
  // aggregate error.
  if (e && e.name === 'KafkaJSSASLAuthenticationError') {
    return { error: e.message, name: 'SASL_AUTHENTICATION_FAILED', code: 58 };
  }
  let cur = e;
  for (let i = 0; i < 5 && cur; i++) {
    if (cur.type && typeof cur.type === 'string') {
      return { error: e.message, name: cur.type, code: typeof cur.code === 'number' ? cur.code : null };
    }
    if (Array.isArray(cur.errors) && cur.errors.length > 0) cur = cur.errors[0];
    else cur = cur.originalError || cur.cause;
  }
  if (lastAuthzError) {
    return { error: e && e.message ? e.message : String(e), name: lastAuthzError.type, code: lastAuthzError.code };
  }
  return { error: e && e.message ? e.message : String(e), name: e && e.name ? e.name : '', code: null };
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(JSON.stringify({ error: e.message, name: 'USAGE', code: null }) + '\n');
    return 2;
  }
  const { cmd, flags } = parsed;
  try {
    const run = { produce, consume, metadata }[cmd](flags);
    await withTimeout(run, flags.timeout + 10, cmd);
    return 0;
  } catch (e) {
    process.stderr.write(JSON.stringify(describeError(e)) + '\n');
    return 1;
  }
}

main().then((code) => process.exit(code));
