// Publish an actionhub command from Node.js and wait for its reply (wire format v1).
//
//   npm install redis@4
//   node examples/publish_from_node.js            # with a hub serving "orders.charge" on that Redis
//
// A command is one JSON envelope in the "message" field of an entry of the stream
// "<prefix><topic>" (prefix "actionhub:" unless the hub's URL sets ?prefix=). To get an answer, put a
// fresh list key in "reply_to": the action's job.reply() LPUSHes the reply envelope there.
const crypto = require("node:crypto");
const { createClient } = require("redis");

async function main() {
  const client = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379/0" });
  await client.connect();

  const replyTo = `actionhub:reply:${crypto.randomBytes(12).toString("hex")}`;
  const envelope = {
    payload: { id: 7, amount: 12.5 },
    id: crypto.randomUUID(),
    headers: { source: "node" },
    reply_to: replyTo,
    created_at: Date.now() / 1000,
  };
  const entryId = await client.xAdd("actionhub:orders.charge", "*", { message: JSON.stringify(envelope) });
  console.log("published", entryId);

  const reply = await client.blPop(replyTo, 10); // seconds; null on timeout
  if (reply === null) {
    console.log("no reply within 10 s");
  } else {
    const answer = JSON.parse(reply.element);
    console.log("reply", answer.payload, "to", answer.headers.in_reply_to);
  }
  await client.del(replyTo);
  await client.quit();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
