// Produces records through the gateway with kafkajs (idempotent, one request in flight) and prints
// one JSON line: {"delivered": n, "errors": [...], "offsets": [[partition, baseOffset], ...]}.
//
// Argument: a JSON object with bootstrap, mechanism ("plain", "scram-sha-256", "scram-sha-512"),
// username, password, topic, records ([{"value": str, "partition": int|null}]) and "batches": how
// many send() calls the records are split into (each one Produce request).
// kafkajs is resolved from the working directory (tests/node), where setup-test-env installs it.
const { Kafka, logLevel } = require(require.resolve('kafkajs', { paths: [process.cwd()] }))

const args = JSON.parse(process.argv[2])

async function main () {
  const kafka = new Kafka({
    clientId: 'keen-resilience-kafkajs',
    brokers: [args.bootstrap],
    ssl: false,
    sasl: { mechanism: args.mechanism, username: args.username, password: args.password },
    logLevel: logLevel.NOTHING,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
    requestTimeout: 15000
  })
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
  const offsets = []
  const errors = []
  await producer.connect()
  const batches = Math.max(1, args.batches || 1)
  const size = Math.ceil(args.records.length / batches)
  for (let start = 0; start < args.records.length; start += size) {
    const messages = args.records.slice(start, start + size).map(r => {
      const message = { value: r.value }
      if (r.partition !== undefined && r.partition !== null) message.partition = r.partition
      return message
    })
    try {
      const result = await producer.send({ topic: args.topic, acks: -1, messages })
      for (const r of result) {
        if (r.errorCode !== 0) errors.push(`partition ${r.partition}: error ${r.errorCode}`)
        else offsets.push([r.partition, Number(r.baseOffset)])
      }
    } catch (error) {
      errors.push(`${error.name}: ${error.message}`)
    }
  }
  await producer.disconnect()
  // Every message of a successful send() was acknowledged.
  const delivered = errors.length === 0 ? args.records.length : null
  console.log(JSON.stringify({ delivered, errors, offsets }))
}

main().catch(error => {
  console.log(JSON.stringify({ delivered: 0, errors: [`${error.name}: ${error.message}`], offsets: [] }))
  process.exitCode = 1
})
