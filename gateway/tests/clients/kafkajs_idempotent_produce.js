// Produces records through the gateway with kafkajs as an idempotent producer (idempotent: true,
// maxInFlightRequests: 1, acks -1) in one send() per batch, and prints one JSON line:
// {"delivered": n, "errors": [...], "offsets": [[partition, baseOffset], ...]}.
//
// Argument: a JSON object with bootstrap, mechanism ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512",
// any case), username, password, topic, records ([{"value": str, "key": str|null,
// "headers": {name: value}}]), optional "compression" ("none" or "gzip": the codecs kafkajs
// ships) and "batches" (how many send() calls the records are split into, default 1).
// kafkajs is resolved from the working directory (tests/node), where setup-test-env installs it.
const { Kafka, CompressionTypes, logLevel } = require(require.resolve('kafkajs', { paths: [process.cwd()] }))

const args = JSON.parse(process.argv[2])
const codecs = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP }

async function main () {
  const kafka = new Kafka({
    clientId: 'keen-matrix-kafkajs',
    brokers: [args.bootstrap],
    ssl: false,
    sasl: { mechanism: args.mechanism.toLowerCase(), username: args.username, password: args.password },
    logLevel: logLevel.NOTHING,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 2000 },
    requestTimeout: 20000
  })
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
  const compression = codecs[args.compression || 'none']
  if (compression === undefined) throw new Error(`unknown compression ${args.compression}`)
  const offsets = []
  const errors = []
  let delivered = 0
  await producer.connect()
  const batches = Math.max(1, args.batches || 1)
  const size = Math.ceil(args.records.length / batches)
  for (let start = 0; start < args.records.length; start += size) {
    const messages = args.records.slice(start, start + size).map(r => ({
      key: r.key === undefined ? null : r.key,
      value: r.value,
      headers: r.headers || {}
    }))
    try {
      const result = await producer.send({ topic: args.topic, acks: -1, compression, messages })
      for (const r of result) {
        if (r.errorCode !== 0) errors.push(`partition ${r.partition}: error ${r.errorCode}`)
        else offsets.push([r.partition, Number(r.baseOffset)])
      }
      delivered += messages.length
    } catch (error) {
      errors.push(`${error.name}: ${error.message}`)
    }
  }
  await producer.disconnect()
  console.log(JSON.stringify({ delivered, errors, offsets }))
}

main().catch(error => {
  console.log(JSON.stringify({ delivered: 0, errors: [`${error.name}: ${error.message}`], offsets: [] }))
  process.exitCode = 1
})
